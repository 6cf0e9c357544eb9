"""Every setting is checked before any work starts: a bad option or --set value, a count that
cannot be right, or an unknown country gives one line that quotes the value, exit 2, and no
run directory; every hyperparameter of every recipe has a declared check."""

import time

import pytest

from layerwise.cli.main import main
from layerwise.data import diabetes_path
from layerwise.train import RECIPES, make_config
from layerwise.train.recipes import IMAGE, HyperparameterError, register

HUGE = str(10**12)


def run_cli(capsys, argv):
    """(exit code, stdout, stderr) of main(argv), in this process."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse exits by itself on usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_quoting(err, quoted):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    assert quoted in lines[0], (quoted, lines[0])


# (argv after `train --out DIR --no-progress`, the text the error line must quote)
BAD_TRAIN = [
    # the country is checked against the cost code's table at parse time
    (["--country", "XX"], "'XX'"),
    (["--country", "usa"], "'usa'"),
    (["--country", ""], "''"),
    (["--pue", "0.5"], "0.5"),
    (["--pue", "nan"], "nan"),
    (["--pue", "1e6"], "1e6"),
    (["--grid-intensity", "-1"], "-1"),
    (["--grid-intensity", "1e9"], "1e9"),
    # counts that cannot be right, refused at parse time
    (["--batch-size", HUGE], HUGE),
    (["--epochs", str(10**9)], str(10**9)),
    (["--seed", str(2**40)], str(2**40)),
    (["--checkpoint-every", HUGE], HUGE),
    (["--lr", "inf"], "inf"),
    # an empty recipe name is not the default recipe
    (["--model", ""], "''"),
    (["--model", " "], "' '"),
    # image recipes: every key has a type and range
    (["--set", "hidden=[0]"], "[0]"),
    (["--set", "hidden=[-5,10]"], "-5"),
    (["--set", "hidden=[1000000000]"], "1000000000"),
    (["--set", "hidden=512"], "512"),
    (["--set", "hidden=[1.5]"], "1.5"),
    (["--set", "hidden=[65536,65536,65536]"], "65536"),  # over MAX_PARAMETERS
    (["--set", "label_smoothing=2"], "2"),
    (["--set", "label_smoothing=-0.1"], "-0.1"),
    (["--set", "label_smoothing=1"], "1"),
    (["--set", "dropout=1"], "1"),
    (["--set", "batch_size=0"], "0"),
    (["--set", "batch_size=100000000"], "100000000"),
    (["--set", "epochs=true"], "true"),
    (["--set", "patience=-1"], "-1"),
    (["--set", "patience=1.5"], "1.5"),
    (["--set", "train_subset=-10"], "-10"),
    (["--set", "train_subset=0"], "0"),
    (["--set", "lr=0"], "0"),
    (["--set", "lr=-1"], "-1"),
    (["--set", "lr=\"fast\""], '"fast"'),
    (["--set", "lr=1e999"], "Infinity"),
    (["--set", "lr=1" + "0" * 400], "100000"),  # an int no float can hold
    (["--set", "epochs=" + "9" * 5000], "99999"),  # past Python's int-from-text limit
    (["--set", "weight_decay=-1"], "-1"),
    (["--set", "warmup_steps=-1"], "-1"),
    (["--set", "max_shift=-1"], "-1"),
    (["--set", "max_shift=100"], "100"),
    (["--model", "cnn", "--set", "epochs=0"], "0"),
    (["--model", "mlp-small", "--set", "dropout=-0.5"], "-0.5"),
    # GPT
    (["--model", "gpt-tiny", "--set", "sample_top_k=0"], "0"),
    (["--model", "gpt-tiny", "--set", "sample_top_k=-3"], "-3"),
    (["--model", "gpt-tiny", "--set", "sample_top_k=2.5"], "2.5"),
    (["--model", "gpt-tiny", "--set", "sample_temperature=-1"], "-1"),
    (["--model", "gpt-tiny", "--set", "sample_tokens=-5"], "-5"),
    (["--model", "gpt-tiny", "--set", "sample_tokens=10000000"], "10000000"),
    (["--model", "gpt-tiny", "--set", "sample_prompt="], '""'),
    (["--model", "gpt-tiny", "--set", "sample_prompt=[1]"], "[1]"),
    (["--model", "gpt", "--set", "n_layer=1000000"], "1000000"),
    (["--model", "gpt", "--set", "n_layer=0"], "0"),
    (["--model", "gpt", "--set", "n_layer=\"two\""], '"two"'),
    (["--model", "gpt", "--set", "n_embd=100000"], "100000"),
    (["--model", "gpt", "--set", "n_head=0"], "0"),
    (["--model", "gpt-tiny", "--set", "n_head=3"], "n_head (3)"),
    (["--model", "gpt", "--set", "n_layer=1024", "--set", "n_embd=65536", "--set", "n_head=1"],
     "n_layer=1024"),  # each in range, the model over MAX_PARAMETERS
    (["--model", "gpt-tiny", "--set", "block_size=0"], "0"),
    (["--model", "gpt-tiny", "--set", "block_size=10000000"], "10000000"),
    (["--model", "gpt-tiny", "--set", "tokenizer=\"words\""], "'words'"),
    (["--model", "gpt-tiny", "--set", "val_fraction=0"], "0"),
    (["--model", "gpt-tiny", "--set", "val_fraction=1"], "1"),
    (["--model", "gpt-tiny", "--set", "corpus_chars=-1"], "-1"),
    (["--model", "gpt-tiny", "--set", "grad_clip=0"], "0"),
    (["--model", "gpt-tiny", "--set", "eval_batch_size=0"], "0"),
    # LSTM
    (["--model", "lstm-tiny", "--set", "bpe_vocab_size=100"], "100"),
    (["--model", "lstm-tiny", "--set", "bpe_vocab_size=1000000000"], "1000000000"),
    (["--model", "lstm-tiny", "--set", "embed_dim=0"], "0"),
    (["--model", "lstm-tiny", "--set", "hidden_size=1000000"], "1000000"),
    (["--model", "lstm-tiny", "--set", "num_layers=0"], "0"),
    (["--model", "lstm-tiny", "--set", "num_layers=100000"], "100000"),
    (["--model", "lstm-tiny", "--set", "tie_weights=1"], "1"),
    (["--model", "lstm-tiny", "--set", "tie_weights=true"], "embed_dim=32"),
    (["--model", "lstm-tiny", "--set", "dropout=1.5"], "1.5"),
    # BERT
    (["--model", "bert-tiny", "--set", "max_len=2"], "2"),
    (["--model", "bert-tiny", "--set", "mask_prob=0"], "0"),
    (["--model", "bert-tiny", "--set", "mask_prob=1.5"], "1.5"),
    (["--model", "bert-tiny", "--set", "num_heads=3"], "num_attention_heads (3)"),
    (["--model", "bert-tiny", "--set", "intermediate_size=0"], "0"),
    (["--model", "bert-tiny", "--set", "hidden_size=1000000"], "1000000"),
    (["--model", "bert-tiny", "--set", "num_layers=10000"], "10000"),
    (["--model", "bert", "--set", "patience=-2"], "-2"),
]


def _ids(table):
    return [" ".join(argv)[:60] for argv, _ in table]


@pytest.mark.parametrize("argv, quoted", BAD_TRAIN, ids=_ids(BAD_TRAIN))
def test_a_bad_train_setting_is_one_line_exit_2_and_no_run_dir(capsys, tmp_path, argv, quoted):
    out = tmp_path / "runs"
    code, stdout, err = run_cli(capsys, ["train", "--out", str(out), "--no-progress", *argv])
    assert code == 2
    assert stdout == ""
    assert_one_line_quoting(err, quoted)
    assert not out.exists()  # nothing was started


# (argv, the text the error line must quote); RUN need not exist: the option is refused first
BAD_OTHER = [
    (["explain", "RUN", "--index", "0", "--steps", str(10**7)], str(10**7)),
    (["explain", "RUN", "--index", "0", "--steps", "0"], "0"),
    (["audit-data", "--folds", str(10**9)], str(10**9)),
    (["audit-data", "--folds", "0"], "0"),
    (["audit-data", "--seed", "-1"], "-1"),
    (["audit-data", "--seed", str(2**40)], str(2**40)),
    (["cost", "--model", "tiny", "--batch-size", HUGE], HUGE),
    (["cost", "RUN", "--country", "zz"], "'zz'"),
    (["cost", "RUN", "--pue", "0.2"], "0.2"),
    (["cost", "RUN", "--grid-intensity", "nan"], "nan"),
    (["generate", "RUN", "--max-new-tokens", str(10**9)], str(10**9)),
    (["generate", "RUN", "--max-new-tokens", "-1"], "-1"),
    (["generate", "RUN", "--top-k", str(10**11)], str(10**11)),
    (["generate", "RUN", "--seed", str(2**40)], str(2**40)),
    (["finetune", "RUN", "--seeds", "0", str(10**14)], str(10**14)),
    (["finetune", "RUN", "--labels-per-class", str(10**9)], str(10**9)),
    (["finetune", "RUN", "--labels-per-class", "0"], "0"),
    (["finetune", "RUN", "--epochs", str(10**9)], str(10**9)),
    (["finetune", "RUN", "--min-steps", HUGE], HUGE),
    (["finetune", "RUN", "--lr", "-1"], "-1"),
    (["finetune", "RUN", "--features-lr-decay", "0"], "0"),
    (["compress", "RUN", "--out", "OUT", "--finetune-epochs", str(10**9)], str(10**9)),
    (["compress", "RUN", "--out", "OUT", "--distill-epochs", str(10**9)], str(10**9)),
    (["compress", "RUN", "--out", "OUT", "--distill-epochs", "0"], "0"),
]


@pytest.mark.parametrize("argv, quoted", BAD_OTHER, ids=_ids(BAD_OTHER))
def test_a_huge_or_bad_count_in_another_command_is_one_line(capsys, argv, quoted):
    code, stdout, err = run_cli(capsys, argv)
    assert code == 2
    assert stdout == ""
    assert_one_line_quoting(err, quoted)


def test_cost_of_an_unknown_recipe_is_one_line(capsys):
    code, _, err = run_cli(capsys, ["cost", "--model", ""])
    assert code == 1
    assert_one_line_quoting(err, "unknown model ''")


def test_a_bad_setting_fails_before_any_data_is_loaded(capsys, tmp_path, monkeypatch):
    task = RECIPES["gpt"].task

    def load(*_args, **_kwargs):
        raise AssertionError("the data was loaded before the settings were checked")

    monkeypatch.setattr(task, "load", load)
    start = time.perf_counter()
    code, _, err = run_cli(capsys, ["train", "--model", "gpt", "--out", str(tmp_path / "runs"),
                                    "--set", "n_layer=1000000"])
    assert time.perf_counter() - start < 0.5
    assert code == 2
    assert_one_line_quoting(err, "n_layer must be <= 1,024, got 1000000")


def test_a_prompt_outside_the_char_vocabulary_fails_before_the_run_dir(capsys, tmp_path):
    # The sample is written when training ends; a prompt its tokenizer cannot encode must
    # fail when the data is loaded, not after the weights are saved.
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, ["train", "--model", "gpt-tiny", "--out", str(out),
                                    "--no-progress", "--set", "corpus_chars=6000",
                                    "--set", "sample_prompt=\u2603"])
    assert code == 1
    assert_one_line_quoting(err, "sample_prompt='\u2603'")
    assert not out.exists()


# --- the Python API: make_config holds every key of every recipe to its schema -------------

EVERY_KEY = [(name, key) for name, recipe in RECIPES.items() for key in recipe.defaults]


@pytest.mark.parametrize("recipe, key", EVERY_KEY, ids=[f"{r}.{k}" for r, k in EVERY_KEY])
def test_every_hyperparameter_of_every_recipe_refuses_a_value_of_the_wrong_type(recipe, key):
    with pytest.raises(HyperparameterError) as err:
        make_config(recipe, **{key: {"not": "a setting"}})
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert key in message and '{"not": "a setting"}' in message


def _own_data(recipe):
    """A table for the recipes that train only on a user's table; None for the others."""
    if "table" not in RECIPES[recipe].task.data_kinds:
        return None
    return {"kind": "table", "path": diabetes_path(), "target": "target", "groups": [],
            "drop": [], "task": None}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_defaults_and_edge_values_that_make_sense_pass(recipe):
    make_config(recipe, data=_own_data(recipe))  # the defaults pass their own schema
    edges = {"patience": 0, "warmup_steps": 0, "weight_decay": 0, "epochs": 10_000,
             "train_subset": 1, "hidden": [], "max_shift": 0, "label_smoothing": 0.99,
             "sample_top_k": 1, "sample_temperature": 0, "sample_tokens": 0, "dropout": 0.5}
    make_config(recipe, data=_own_data(recipe),
                **{k: v for k, v in edges.items() if k in RECIPES[recipe].defaults})


def test_a_recipe_without_a_check_for_each_key_cannot_be_registered():
    with pytest.raises(ValueError, match=r"no check in its schema for \['depth'\]"):
        register("unchecked", "a recipe whose depth nobody checks", {"depth": 3}, IMAGE)(print)
    assert "unchecked" not in RECIPES
