"""Language-model recipes: run directories, metrics against references, the positional split,
the BPE tokenizer trained on the training text only, BERT's masked LM, bit-exact resume."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from layerwise import nn
from layerwise.audit.cost import run_cost_callback
from layerwise.autograd import Tensor
from layerwise.data import DataLoader, TensorDataset
from layerwise.data.text import BPETokenizer, load_tokenizer, python_docs_corpus
from layerwise.models.gpt import GPT
from layerwise.models.lstm_lm import LSTMLanguageModel
from layerwise.serialization import load
from layerwise.train import RunError, Trainer
from layerwise.train.recipes.language import load_trained, token_cross_entropy
from layerwise.train.recipes.masked_lm import SPECIALS, masked_token_loss, special_ids
from layerwise.train.recipes import RECIPES, get_recipe
from layerwise.train.run import make_config, resume_run, start_run

CHARS = 20_000


def _train(out, recipe, name, **overrides):
    config = make_config(recipe, seed=0, **overrides)
    run_dir, metrics = start_run(config, out_dir=str(out), name=name, progress=False,
                                 verbose=False, callbacks=[run_cost_callback])
    return Path(run_dir), metrics


def _val_text(corpus_chars=CHARS, val_fraction=0.1):
    text = python_docs_corpus()[:corpus_chars]
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def _entropy(text):
    p = np.array(list(Counter(text).values()), dtype=np.float64) / len(text)
    return float(-(p * np.log(p)).sum())


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("lm"), "lstm-tiny", "lstm")


def test_every_text_recipe_is_registered_with_a_task():
    for name in ("gpt", "lstm", "bert", "gpt-tiny", "lstm-tiny", "bert-tiny"):
        assert get_recipe(name).task.kind == ("mlm" if name.startswith("bert") else "lm")
    for name in ("mlp", "tiny", "cnn"):
        assert get_recipe(name).task.kind == "image"
    for name in ("tabular", "tabular-tiny"):
        assert get_recipe(name).task.kind == "table"
    for name in ("detect", "detect-tiny", "segment", "segment-tiny"):
        assert get_recipe(name).task.kind == name.split("-")[0]
    assert all(recipe.task.kind in ("image", "lm", "mlm", "table", "detect", "segment")
               for recipe in RECIPES.values())


def test_lm_run_directory_metrics_and_learning(lstm_run):
    run, metrics = lstm_run
    files = {p.name for p in run.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "sample.txt",
            "history.jsonl", "best.safetensors", "last.json", "last.safetensors"} <= files
    assert json.loads((run / "metrics.json").read_text()) == metrics
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["source"] == "pydoc_data.topics" and config["data"]["chars"] == CHARS

    train_text, val_text = _val_text()
    tokenizer = load_tokenizer(run / "tokenizer.json")
    assert tokenizer.chars == sorted(set(python_docs_corpus()[:CHARS]))
    # Char tokens: nats per token and per character are the same number.
    assert metrics["val_nats_per_char"] == pytest.approx(metrics["val_loss_nats_per_token"])
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss_nats_per_token"]))
    assert metrics["val_bits_per_char"] == pytest.approx(metrics["val_nats_per_char"] / math.log(2))
    assert metrics["unigram_entropy_nats_per_char"] == pytest.approx(_entropy(val_text), rel=1e-12)
    block = config["hyperparameters"]["block_size"]
    assert metrics["val_tokens"] == metrics["val_chars"] == (len(val_text) - 1) // block * block
    # It learned: well under what any context-free model could do on this text.
    assert metrics["val_nats_per_char"] < metrics["unigram_entropy_nats_per_char"] - 0.3, metrics

    sample = (run / "sample.txt").read_text()
    assert sample == metrics["sample"] and sample.startswith("The ")
    assert len(sample) == len("The ") + config["hyperparameters"]["sample_tokens"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["val_loss"] == metrics["val_loss_nats_per_token"]
    assert 0 < history[-1]["val_accuracy"] == metrics["val_accuracy"] < 1
    assert "test_accuracy" not in metrics


def test_val_loss_matches_a_numpy_recomputation(lstm_run):
    """The reported loss is the mean over every validation token, recomputed from the weights."""
    run, metrics = lstm_run
    trained = load_trained(str(run))
    assert isinstance(trained.model, LSTMLanguageModel) and not trained.model.training
    _, val_text = _val_text()
    block = trained.config["hyperparameters"]["block_size"]
    ids = np.array(trained.tokenizer.encode(val_text))
    n = (len(ids) - 1) // block
    x, y = ids[: n * block].reshape(n, block), ids[1: n * block + 1].reshape(n, block)
    logits = trained.model(Tensor(x))[0].data.astype(np.float64)  # (N, T, V)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], axis=-1).mean()
    assert metrics["val_loss_nats_per_token"] == pytest.approx(nll, rel=1e-5)
    assert metrics["val_accuracy"] == np.mean(logits.argmax(-1) == y)


def test_gpt_run_learns_and_loads_back(tmp_path):
    run, metrics = _train(tmp_path, "gpt-tiny", "gpt")
    assert metrics["val_nats_per_char"] < metrics["unigram_entropy_nats_per_char"] - 0.2, metrics
    trained = load_trained(str(run))
    assert isinstance(trained.model, GPT)
    saved = load(run / "model.safetensors")
    for key, value in trained.model.state_dict().items():
        assert value.data.tobytes() == saved[key].data.tobytes()
    assert metrics["params"] == trained.model.num_parameters()


def test_bpe_is_trained_on_the_training_text_only_and_reports_nats_per_char(tmp_path):
    run, metrics = _train(tmp_path, "lstm-tiny", "bpe", tokenizer="bpe", bpe_vocab_size=300,
                          epochs=1)
    train_text, val_text = _val_text()
    saved = load_tokenizer(run / "tokenizer.json")
    assert saved.vocab_size == metrics["vocab_size"] == 300
    fresh = BPETokenizer.train(train_text, vocab_size=300)
    assert saved.hf.get_vocab() == fresh.hf.get_vocab()
    assert saved.hf.get_vocab() != BPETokenizer.train(train_text + val_text, 300).hf.get_vocab()

    block = json.loads((run / "config.json").read_text())["hyperparameters"]["block_size"]
    val_ids = saved.encode(val_text)
    n = (len(val_ids) - 1) // block
    assert metrics["val_tokens"] == n * block
    covered = saved.decode(val_ids[1: n * block + 1])  # the text the scored tokens spell
    assert metrics["val_chars"] == len(covered) and covered in val_text
    assert metrics["val_chars"] > 1.3 * metrics["val_tokens"]  # merges: > 1 char per token
    assert metrics["val_nats_per_char"] == pytest.approx(
        metrics["val_loss_nats_per_token"] * metrics["val_tokens"] / metrics["val_chars"])


def test_token_accuracy_and_loss_weights_skip_ignored_targets():
    """Trainer.evaluate over (B, T, V) scores: per-token mean and accuracy, -100 and -1 ignored."""
    g = np.random.default_rng(0)
    logits = g.standard_normal((6, 5, 7)).astype(np.float32)
    targets = g.integers(0, 7, size=(6, 5))
    targets[g.random((6, 5)) < 0.3] = -100
    targets[0, 0] = -1  # GPT's ignore index counts as ignored too...

    class Lookup(nn.Module):  # row i of the inputs -> the fixed logits of example i
        def forward(self, rows):
            return Tensor(logits[rows.data])

    def loss(out, y):  # ...and cross_entropy must skip it: map -1 to -100 first
        y = Tensor(np.where(y.data < 0, -100, y.data))
        return token_cross_entropy(out, y)

    loader = DataLoader(TensorDataset(np.arange(6), targets), batch_size=4)  # 4 + 2 rows
    trainer = Trainer(Lookup(), _NoOpt(), loss, loader, epochs=1, progress=False, verbose=False)
    got = trainer.evaluate(loader)
    keep = targets >= 0
    lp = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(lp, np.where(keep, targets, 0)[..., None], -1)[..., 0]
    assert got["loss"] == pytest.approx(nll[keep].mean(), rel=1e-6)
    assert got["accuracy"] == pytest.approx(np.mean(logits.argmax(-1)[keep] == targets[keep]))


class _NoOpt:
    param_groups = [{"lr": 0.0}]


def test_bert_masked_lm_run_reports_masked_token_metrics(tmp_path):
    run, metrics = _train(tmp_path, "bert-tiny", "bert")  # its last batch has 1 sequence
    tokenizer = load_tokenizer(run / "tokenizer.json")
    assert metrics["vocab_size"] == tokenizer.vocab_size + len(SPECIALS)
    assert list(special_ids(tokenizer).values()) == list(
        range(tokenizer.vocab_size, tokenizer.vocab_size + 5))
    # About mask_prob (30% for bert-tiny) of the validation characters are masked and scored.
    _, val_text = _val_text()
    p = get_recipe("bert-tiny").defaults["mask_prob"]
    assert 0.8 * p * len(val_text) < metrics["val_masked_tokens"] < 1.2 * p * len(val_text)
    assert metrics["val_mlm_perplexity"] == pytest.approx(math.exp(metrics["val_mlm_loss"]))

    # The reported loss and accuracy, recomputed over the masked validation tokens.
    trained = load_trained(str(run), kinds=("mlm",))
    data = trained.task.load(trained.config, str(run))
    inputs, labels = (t.data for t in data.splits["val"].tensors)  # (N, L) each
    pad = special_ids(tokenizer)["[PAD]"]
    assert ((labels >= 0) <= (inputs != pad)).all()  # nothing masked in the padding
    assert int((labels >= 0).sum()) == metrics["val_masked_tokens"]
    logits = trained.model(Tensor(inputs), attention_mask=Tensor(inputs != pad))[0].data
    logits = logits.astype(np.float64)[labels >= 0]  # (M, V): the masked positions
    target = labels[labels >= 0]
    lp = logits - logits.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    assert metrics["val_mlm_loss"] == pytest.approx(-lp[np.arange(len(target)), target].mean(),
                                                    rel=1e-5)
    assert metrics["val_mlm_accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == target))

    # It learned: from uniform guessing (log V) to under the text's unigram entropy.
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["val_loss"] < history[0]["val_loss"] < math.log(metrics["vocab_size"])
    assert metrics["val_mlm_loss"] < metrics["unigram_entropy_nats_per_char"], metrics
    with pytest.raises(RunError, match="masked-LM encoder.*needs a language model"):
        load_trained(str(run), kinds=("lm",))


def test_masked_token_loss_is_the_mean_over_masked_tokens_and_zero_without_any():
    g = np.random.default_rng(0)
    logits = Tensor(g.standard_normal((2, 3, 5)), requires_grad=True)
    labels = np.full((2, 3), -100)
    labels[0, 1], labels[1, 2] = 4, 0
    loss = masked_token_loss(logits, Tensor(labels))
    lp = logits.data - np.log(np.exp(logits.data).sum(-1, keepdims=True))
    assert loss.item() == pytest.approx(-(lp[0, 1, 4] + lp[1, 2, 0]) / 2, rel=1e-12)
    none = masked_token_loss(logits, Tensor(np.full((2, 3), -100)))
    none.backward()
    assert none.item() == 0.0 and (logits.grad.data == 0).all()


@pytest.mark.parametrize("recipe, overrides", [
    ("lstm-tiny", dict(dropout=0.2, num_layers=2)),  # dropout draws from the global generator
    ("gpt-tiny", dict(dropout=0.1, tokenizer="bpe", bpe_vocab_size=300)),
    ("bert-tiny", dict(dropout=0.1)),  # and so does the dynamic masking
])
def test_lm_resume_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path, monkeypatch, recipe,
                                                               overrides):
    overrides = dict(overrides, epochs=2, batch_size=8, corpus_chars=8000, checkpoint_every=5)
    straight, m_straight = _train(tmp_path, recipe, "straight", **overrides)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}
    real_step = Trainer._train_step

    def step_then_die(self, inputs, targets):
        calls["n"] += 1
        if calls["n"] == 13:  # after the checkpoint at step 10 (or an epoch's end)
            raise Interrupt
        return real_step(self, inputs, targets)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", step_then_die)
        with pytest.raises(Interrupt):
            _train(tmp_path, recipe, "killed", **overrides)
    killed = tmp_path / "killed"
    assert 5 <= json.loads((killed / "last.json").read_text())["step"] < 13
    assert not (killed / "metrics.json").exists()
    m_killed = resume_run(str(killed), progress=False, verbose=False, callbacks=[run_cost_callback])

    assert (killed / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert (killed / "history.jsonl").read_text() == (straight / "history.jsonl").read_text()
    assert (killed / "tokenizer.json").read_text() == (straight / "tokenizer.json").read_text()
    if recipe != "bert-tiny":
        assert (killed / "sample.txt").read_text() == (straight / "sample.txt").read_text()
    assert _deterministic(m_killed) == _deterministic(m_straight)
    assert _deterministic(m_straight)["val_mlm_loss" if recipe == "bert-tiny" else "sample"]


def _deterministic(metrics):
    """The metrics that do not depend on the clock (time, energy): the task's and the counts."""
    return {k: v for k, v in metrics.items()
            if k.startswith("val_") or k in ("sample", "params", "epochs", "steps", "vocab_size")}


def test_lm_config_errors(tmp_path):
    with pytest.raises(RunError, match="--data-dir is for the image recipes"):
        make_config("gpt-tiny", data_dir=str(tmp_path))
    with pytest.raises(RunError, match="tokenizer must be one of char, bpe, got 'words'"):
        start_run(make_config("gpt-tiny", tokenizer="words"), out_dir=str(tmp_path / "a"))
    with pytest.raises(RunError, match="fewer than block_size"):
        start_run(make_config("gpt-tiny", corpus_chars=200), out_dir=str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no run dir left


def test_resume_refuses_a_different_corpus(lstm_run, tmp_path):
    run, _ = lstm_run
    config = json.loads((run / "config.json").read_text())
    config["data"].update(sha256="0" * 64, python="2.7.18")
    fake = tmp_path / "other-python"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps(config))
    for name in ("last.json", "last.safetensors", "tokenizer.json"):
        (fake / name).write_bytes((run / name).read_bytes())
    with pytest.raises(RunError, match="not the one the run used \\(Python 2.7.18"):
        resume_run(str(fake), progress=False, verbose=False, callbacks=[run_cost_callback])
