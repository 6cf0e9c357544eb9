"""`layerwise generate` and the text options of `layerwise train`: determinism, cached ==
uncached, greedy decoding against an independent loop, and one-line errors."""

import json
import os

import numpy as np
import pytest

from layerwise.autograd import Tensor
from layerwise.train.recipes.language import load_trained
from tests.cli.test_cli import assert_one_error_line, run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained gpt-tiny and lstm-tiny run (through the command) and a bert-tiny config."""
    out = tmp_path_factory.mktemp("runs")
    from layerwise.cli.main import main

    for recipe in ("gpt-tiny", "lstm-tiny"):
        code = main(["train", "--model", recipe, "--out", str(out), "--name", recipe,
                     "--no-progress", "--epochs", "1", "--set", "corpus_chars=6000"])
        assert code == 0
    return out


def generate(capsys, run, *args):
    return run_cli(capsys, "generate", str(run), *args)


def test_train_prints_the_lm_summary(runs, capsys):
    code, out, _ = run_cli(capsys, "train", "--model", "gpt-tiny", "--out", str(runs),
                           "--name", "again", "--no-progress", "--epochs", "1",
                           "--set", "corpus_chars=6000", "--set", "sample_tokens=7")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"run: {runs / 'again'}"
    metrics = json.loads((runs / "again" / "metrics.json").read_text())
    assert f"{metrics['val_nats_per_char']:.4f} nats/char" in lines[1]
    assert f"unigram entropy of the val text: {metrics['unigram_entropy_nats_per_char']:.4f}" in lines[1]
    sample_lines = metrics["sample"].count("\n") + 1
    assert lines[3] == "sample:" and "\n".join(lines[4:4 + sample_lines]) == metrics["sample"]
    assert len(metrics["sample"]) == len("The ") + 7
    config = json.loads((runs / "again" / "config.json").read_text())
    assert config["hyperparameters"]["corpus_chars"] == 6000


@pytest.mark.parametrize("recipe", ["gpt-tiny", "lstm-tiny"])
def test_same_seed_same_text_and_the_prompt_comes_first(runs, capsys, recipe):
    args = ("--prompt", "The ", "--max-new-tokens", "40", "--seed", "3", "--top-k", "20")
    code, first, _ = generate(capsys, runs / recipe, *args)
    assert code == 0
    assert generate(capsys, runs / recipe, *args)[1] == first
    assert first.startswith("The ") and len(first) == len("The ") + 40 + 1  # + newline
    other = generate(capsys, runs / recipe, *args[:-4], "--seed", "4", "--top-k", "20")[1]
    assert other != first
    # A run can be named relative to --out.
    by_name = run_cli(capsys, "generate", recipe, "--out", str(runs), *args)[1]
    assert by_name == first


def test_gpt_cached_equals_uncached_past_the_context_window(runs, capsys):
    block = json.loads((runs / "gpt-tiny" / "config.json").read_text())["hyperparameters"][
        "block_size"]
    for extra in ((), ("--top-p", "0.9"), ("--temperature", "0")):
        args = ("--prompt", "The ", "--max-new-tokens", str(block + 20), "--seed", "1", *extra)
        code, cached, _ = generate(capsys, runs / "gpt-tiny", *args)
        assert code == 0 and len(cached) == len("The ") + block + 20 + 1
        assert generate(capsys, runs / "gpt-tiny", *args, "--no-cache")[1] == cached


@pytest.mark.parametrize("recipe", ["gpt-tiny", "lstm-tiny"])
def test_greedy_text_matches_a_loop_over_full_forwards(runs, capsys, recipe):
    """Temperature 0: each new character is the argmax of a forward over the whole text."""
    prompt, n = "Assert statements ", 25
    code, out, _ = generate(capsys, runs / recipe, "--prompt", prompt, "--max-new-tokens",
                            str(n), "--temperature", "0")
    assert code == 0
    trained = load_trained(str(runs / recipe))
    block = trained.config["hyperparameters"]["block_size"]
    ids = trained.tokenizer.encode(prompt)
    for _ in range(n):
        context = np.array([ids[-block:]]) if recipe.startswith("gpt") else np.array([ids])
        logits = trained.model(Tensor(context))[0].data[0, -1]
        ids.append(int(np.argmax(logits)))
    assert out == trained.tokenizer.decode(ids) + "\n"


def test_generate_errors_are_one_line(runs, capsys, tmp_path):
    gpt = runs / "gpt-tiny"
    cases = [
        ((str(tmp_path / "gone"),), 1, ["no run directory", "gone"]),
        ((str(gpt), "--prompt", "naïve ☃"), 1, ["'ï', '☃'", "not in the run's character vocabulary"]),
        ((str(gpt), "--prompt", "€"), 1, ["prompt character '€' is not"]),
        ((str(gpt), "--prompt", ""), 1, ["prompt is empty"]),
        ((str(gpt), "--top-p", "0"), 2, ["--top-p", "(0, 1]", "got 0"]),
        ((str(gpt), "--top-p", "1.5"), 2, ["--top-p", "got 1.5"]),
        ((str(gpt), "--temperature", "-0.5"), 2, ["--temperature", ">= 0", "got -0.5"]),
        ((str(gpt), "--temperature", "hot"), 2, ["--temperature", "'hot'"]),
        ((str(gpt), "--top-k", "0"), 2, ["--top-k", "must be >= 1"]),
        ((str(gpt), "--max-new-tokens", "-1"), 2, ["--max-new-tokens"]),
        ((str(runs / "lstm-tiny"), "--no-cache"), 2, ["--no-cache is for GPT runs"]),
    ]
    for argv, want_code, fragments in cases:
        code, out, err = run_cli(capsys, "generate", *argv)
        assert code == want_code, (argv, err)
        assert out == ""
        assert_one_error_line(err, *fragments)

    image = tmp_path / "mlp-run"  # a config is enough to tell what a run holds
    image.mkdir()
    (image / "config.json").write_text(json.dumps({"recipe": "mlp"}))
    code, _, err = run_cli(capsys, "generate", str(image))
    assert code == 1
    assert_one_error_line(err, "holds an image classifier (recipe 'mlp')", "gpt, gpt-tiny")

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (unfinished / name).write_bytes((gpt / name).read_bytes())
    code, _, err = run_cli(capsys, "generate", str(unfinished))
    assert code == 1
    assert_one_error_line(err, "no model.safetensors", "--resume")


@pytest.mark.parametrize("argv, fragments", [
    (["--model", "mlp", "--tokenizer", "bpe"], ["--tokenizer is for the text recipes", "'mlp'"]),
    (["--model", "gpt-tiny", "--tokenizer", "words"], ["--tokenizer", "invalid choice: 'words'"]),
    (["--model", "gpt-tiny", "--set", "n_layers=2"], ["--set n_layers", "no hyperparameter",
                                                      "n_layer"]),
    (["--model", "gpt-tiny", "--set", "n_layer=two"], ["--set n_layer=\"two\"", "expected an int"]),
    (["--model", "gpt-tiny", "--set", "n_layer"], ["--set", "expected KEY=VALUE"]),
    (["--model", "lstm-tiny", "--data-dir", "somewhere"], ["--data-dir is for the image"]),
    (["--model", "gpt-tiny", "--set", "n_head=3"], ["'gpt-tiny' cannot be built",
                                                    "n_embd (64) must be divisible by n_head (3)"]),
    (["--model", "gpt-tiny", "--set", "corpus_chars=null"], ["corpus_chars needs a value"]),
    (["--model", "lstm-tiny", "--set", "bpe_vocab_size=100", "--tokenizer", "bpe"],
     ["bpe_vocab_size", ">= 257", "got 100"]),
])
def test_train_text_option_errors(capsys, tmp_path, argv, fragments):
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path), "--no-progress", *argv)
    assert code in (1, 2)
    assert_one_error_line(err, *fragments)
    assert os.listdir(tmp_path) == []


def test_resume_forbids_text_options(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path), "--tokenizer", "bpe",
                           "--set", "n_layer=2")
    assert code == 2
    assert_one_error_line(err, "drop --tokenizer, --set")
