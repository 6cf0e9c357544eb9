"""Crafted config files never reach the allocator: a run's config.json or a Hugging Face
config.json with a size that cannot be right, or a value of the wrong type, fails in one line
naming the file, the key and the value, before any layer is built. The parameter counts the
size checks rest on are checked against the built models."""

import json
import os
import shutil

import pytest

from layerwise.cli.main import main
from layerwise.errors import BadFileError
from layerwise.interop import from_pretrained, load_hf_state_dict
from layerwise.limits import MAX_PARAMETERS
from layerwise.models.bert import BertConfig, BertModel
from layerwise.models.gpt import GPT, GPTConfig
from layerwise.models.lstm_lm import LSTMLanguageModel, num_parameters
from layerwise.nn.module import Module
from layerwise.train import make_config
from layerwise.train.recipes.language import load_trained

HF = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")
HUGE = 10**12


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Any Module constructed from here on fails the test: the checks must come first."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a {type(self).__name__} was built from a crafted config")

    monkeypatch.setattr(Module, "__init__", refuse)


def run_cli(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def crafted_run(tmp_path, recipe, edit):
    """A run directory whose config.json is a real config of ``recipe`` after ``edit``."""
    run = tmp_path / f"crafted-{recipe}"
    run.mkdir()
    config = make_config(recipe, seed=0)
    config = edit(config) or config
    (run / "config.json").write_text(json.dumps(config))
    return run


def set_hp(**values):
    def edit(config):
        config["hyperparameters"].update(values)

    return edit


# (recipe, edit of its config.json, fragments the one line must hold besides the file name)
CRAFTED_RUNS = [
    ("gpt-tiny", set_hp(n_layer=HUGE), ["n_layer", str(HUGE)]),
    ("gpt-tiny", set_hp(n_embd=HUGE), ["n_embd", str(HUGE)]),
    ("gpt-tiny", set_hp(block_size=HUGE), ["block_size", str(HUGE)]),
    ("gpt-tiny", set_hp(n_layer="2"), ["n_layer", '"2"']),
    ("gpt-tiny", set_hp(n_layer=2.0), ["n_layer", "2.0"]),
    ("gpt-tiny", set_hp(n_head=True), ["n_head", "true"]),
    ("gpt-tiny", set_hp(n_layer=1024, n_embd=65536, n_head=1), ["parameters", "n_layer=1024"]),
    ("gpt-tiny", set_hp(n_head=3), ["n_embd (64)", "n_head (3)"]),
    ("gpt-tiny", lambda c: c.update(seed=[1]), ["seed", "[1]"]),
    ("gpt-tiny", lambda c: c.update(seed=-4), ["seed", "-4"]),
    ("gpt-tiny", lambda c: c.update(checkpoint_every=0), ["checkpoint_every", "0"]),
    ("gpt-tiny", lambda c: c.update(hyperparameters=[4]), ["[4]"]),
    ("gpt-tiny", lambda c: c["hyperparameters"].clear(), ["is missing"]),
    ("gpt-tiny", lambda c: c.update(recipe=["gpt"]), ["recipe", '["gpt"]']),
    ("gpt-tiny", lambda c: [c], ["expected a JSON object"]),
    ("lstm-tiny", set_hp(hidden_size=10**9), ["hidden_size", str(10**9)]),
    ("lstm-tiny", set_hp(num_layers="1"), ["num_layers", '"1"']),
    ("lstm-tiny", set_hp(embed_dim=-1), ["embed_dim", "-1"]),
]


@pytest.mark.parametrize("recipe, edit, fragments", CRAFTED_RUNS,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(CRAFTED_RUNS)])
def test_generate_refuses_a_crafted_run_config_before_building(capsys, tmp_path,
                                                               nothing_is_built, recipe, edit,
                                                               fragments):
    run = crafted_run(tmp_path, recipe, edit)
    code, out, err = run_cli(capsys, ["generate", str(run), "--prompt", "The "])
    assert code == 1 and out == ""
    one_line(err, str(run / "config.json"), *fragments)


def test_load_trained_raises_bad_file_error_for_a_crafted_bert_config(tmp_path,
                                                                      nothing_is_built):
    run = crafted_run(tmp_path, "bert-tiny", set_hp(num_layers=HUGE))
    with pytest.raises(BadFileError, match=rf"config.json: num_layers must be <= 1,024, "
                                           rf"got {HUGE}"):
        load_trained(str(run), kinds=("mlm",))


def test_cost_refuses_a_crafted_run_config(capsys, tmp_path, nothing_is_built):
    run = crafted_run(tmp_path, "tiny", set_hp(hidden=[10**9]))
    code, _, err = run_cli(capsys, ["cost", str(run)])
    assert code == 1
    one_line(err, "config.json", "hidden=[1000000000]")


def test_resume_refuses_a_crafted_run_config_and_leaves_the_run_alone(capsys, tmp_path,
                                                                      nothing_is_built):
    run = crafted_run(tmp_path, "gpt-tiny", set_hp(n_layer=HUGE))
    before = sorted(os.listdir(run))
    code, _, err = run_cli(capsys, ["train", "--resume", str(run), "--no-progress"])
    assert code == 1
    one_line(err, str(run / "config.json"), "n_layer", str(HUGE))
    assert sorted(os.listdir(run)) == before


# --- Hugging Face checkpoints -----------------------------------------------------------------


def hf_copy(tmp_path, folder, **changes):
    """A copy of a fixture checkpoint with ``changes`` in its config.json (None deletes)."""
    path = tmp_path / folder
    shutil.copytree(os.path.join(HF, folder), path)
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    return path


CRAFTED_HF = [
    ("gpt2", {"n_layer": HUGE}, rf"n_layer must be <= 1,024, got {HUGE}"),
    ("gpt2", {"n_positions": HUGE}, rf"n_positions must be <= 65,536, got {HUGE}"),
    ("gpt2", {"vocab_size": HUGE}, rf"vocab_size must be <= 1,048,576, got {HUGE}"),
    ("gpt2", {"n_layer": "2"}, r'n_layer="2": expected an integer'),
    ("gpt2", {"n_embd": [32]}, r"n_embd=\[32\]: expected an integer"),
    ("gpt2", {"n_embd": None}, r"n_embd is missing"),
    ("gpt2", {"n_head": 3}, r"n_embd \(32\) must be divisible by n_head \(3\)"),
    ("gpt2", {"n_layer": 1024, "n_embd": 16384, "n_head": 1}, r"would have [\d,]+ parameters"),
    ("gpt2", {"layer_norm_epsilon": -1}, r"layer_norm_epsilon must be a finite number"),
    ("bert", {"num_hidden_layers": HUGE}, rf"num_hidden_layers must be <= 1,024, got {HUGE}"),
    ("bert", {"intermediate_size": HUGE}, rf"intermediate_size must be <= 65,536, got {HUGE}"),
    ("bert", {"hidden_size": "32"}, r'hidden_size="32": expected an integer'),
    ("bert", {"hidden_dropout_prob": 2}, r"hidden_dropout_prob must be a finite number in"),
    ("bert", {"pad_token_id": 500}, r"pad_token_id \(500\) must be a token of the vocabulary"),
    ("bert", {"num_hidden_layers": 1024, "hidden_size": 16384, "num_attention_heads": 1},
     r"would have [\d,]+ parameters"),
]


@pytest.mark.parametrize("folder, changes, message", CRAFTED_HF,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CRAFTED_HF)])
def test_from_pretrained_refuses_a_crafted_config_before_building(tmp_path, nothing_is_built,
                                                                  folder, changes, message):
    path = hf_copy(tmp_path, folder, **changes)
    with pytest.raises(BadFileError, match=message) as err:
        from_pretrained(path)
    assert str(err.value).startswith(f"{path / 'config.json'}: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"config.json: expected a JSON object, got \[1, 2\]"),
    ('{"model_type": "gpt2", ', r"config.json is not valid JSON"),
])
def test_a_config_json_that_is_not_an_object_is_a_bad_file(tmp_path, text, message):
    path = hf_copy(tmp_path, "gpt2")
    (path / "config.json").write_text(text)
    with pytest.raises(BadFileError, match=message):
        from_pretrained(path)


def test_an_index_cannot_name_a_shard_outside_the_checkpoint(tmp_path):
    path = hf_copy(tmp_path, "gpt2_sharded")
    index = path / "model.safetensors.index.json"
    shard = "model-00001-of-00003.safetensors"
    # the shard moved out of the checkpoint, where a crafted index points to it
    os.rename(path / shard, tmp_path / shard)
    data = json.loads(index.read_text())
    data["weight_map"] = {k: (f"../{shard}" if v == shard else v)
                          for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data))
    with pytest.raises(BadFileError, match=rf"names the shard '\.\./{shard}'; expected a file "
                                           rf"name inside"):
        load_hf_state_dict(path)
    index.write_text(json.dumps({"weight_map": ["model-00001-of-00003.safetensors"]}))
    with pytest.raises(BadFileError, match=r"weight_map \[.*\] is not an object"):
        load_hf_state_dict(path)


# --- the parameter counts the caps rest on, against the built models --------------------------


@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=8),
    dict(vocab_size=7, block_size=5, n_layer=3, n_head=3, n_embd=12, bias=False),
])
def test_gpt_config_counts_the_parameters_gpt_builds(kwargs):
    config = GPTConfig(**kwargs)
    assert config.num_parameters() == GPT(config).num_parameters()


def test_bert_config_counts_the_parameters_of_the_encoder():
    config = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=20, max_position_embeddings=16, type_vocab_size=3)
    assert config.num_parameters() == BertModel(config, add_pooling_layer=False).num_parameters()


@pytest.mark.parametrize("sizes", [(30, 8, 8, 3, True), (30, 5, 7, 2, False), (11, 4, 6, 1, False)])
def test_lstm_parameter_count_matches_the_model(sizes):
    assert num_parameters(*sizes) == LSTMLanguageModel(*sizes[:4],
                                                       tie_weights=sizes[4]).num_parameters()


def test_the_parameter_cap_is_the_first_size_over_it():
    # A layer of width c holds 12 c^2 weights, 9 c biases and two LayerNorms (4 c); the cap
    # falls between the two layer counts below (with the wte, wpe and ln_f terms).
    c, vocab, block = 1024, 256, 1024
    per_layer = 12 * c * c + 9 * c + 4 * c
    fixed = (vocab + block) * c + 2 * c
    fits = (MAX_PARAMETERS - fixed) // per_layer
    assert GPTConfig(vocab_size=vocab, block_size=block, n_layer=fits, n_head=8,
                     n_embd=c).num_parameters() == fixed + fits * per_layer
    with pytest.raises(ValueError, match="more than MAX_PARAMETERS=2,000,000,000"):
        GPTConfig(vocab_size=vocab, block_size=block, n_layer=fits + 1, n_head=8, n_embd=c)


def test_resume_run_in_python_refuses_a_crafted_run_config(tmp_path, nothing_is_built):
    from layerwise.errors import BadFileError
    from layerwise.train.run import resume_run

    run = crafted_run(tmp_path, "gpt-tiny", set_hp(n_layer=HUGE))
    with pytest.raises(BadFileError, match=rf"config.json.*n_layer.*{HUGE}"):
        resume_run(str(run), progress=False)


def test_a_config_with_an_integer_too_long_to_convert_is_one_line(capsys, tmp_path):
    run = crafted_run(tmp_path, "gpt-tiny", set_hp())
    (run / "config.json").write_text('{"seed": ' + "9" * 5000 + "}")
    code, _, err = run_cli(capsys, ["train", "--resume", str(run), "--no-progress"])
    assert code == 1
    one_line(err, str(run / "config.json"), "cannot be read")
