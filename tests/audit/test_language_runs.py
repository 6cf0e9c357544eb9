"""report, audit, audit-data, explain and cost on language-model runs (bert-tiny, gpt-tiny,
lstm-tiny): each works, or refuses in one line that says why."""

import json
import os

import pytest

from layerwise.audit import text_checks
from layerwise.audit.explain import token_labels
from layerwise.cli.main import main
from layerwise.data.text import CharTokenizer
from layerwise.train.recipes.masked_lm import SPECIALS

RECIPES = ("bert-tiny", "gpt-tiny", "lstm-tiny")


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """{recipe: run dir}, one epoch each (about 5 s together). bert-tiny writes its model card
    at the end of training, as `layerwise train --model bert` does: that card decodes the
    special tokens."""
    out = tmp_path_factory.mktemp("lm_runs")
    runs = {}
    for recipe in RECIPES:
        card = [] if recipe == "bert-tiny" else ["--no-card"]
        assert main(["train", "--model", recipe, "--epochs", "1", "--no-progress", "--out",
                     str(out), "--name", recipe, *card]) == 0
        runs[recipe] = str(out / recipe)
    return runs


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_special_tokens_decode_to_their_names():
    tok = CharTokenizer("a\n")
    # ids 0, 1 are the vocabulary; 2.. the specials numbered after it; 7 is nothing
    assert token_labels(tok, [0, 1, 2, 3, 4, 5, 6, 7], SPECIALS) == [
        "a", "\\n", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<7>"]
    assert token_labels(tok, [5]) == ["<5>"]  # a run without specials
    assert token_labels(None, [3]) == ["3"]


def test_bert_card_written_at_the_end_of_training_names_its_special_tokens(lm_runs):
    with open(os.path.join(lm_runs["bert-tiny"], "card.json"), encoding="utf-8") as f:
        card = json.load(f)
    tokens = card["explanations"]["attention_tokens"]
    assert tokens[0] == "[CLS]" and "[PAD]" not in tokens  # the piece without its padding


@pytest.mark.parametrize("recipe", RECIPES)
def test_report_and_audit_write_the_card(lm_runs, recipe, capsys):
    run = lm_runs[recipe]
    assert main(["report", run]) == 0
    assert main(["audit", run]) == 0
    assert "not an image classifier" in capsys.readouterr().out
    with open(os.path.join(run, "card.json"), encoding="utf-8") as f:
        card = json.load(f)
    assert card["model_details"]["recipe"] == recipe
    assert ("explanations" in card) == (recipe != "lstm-tiny")  # attention maps: transformers


def test_audit_groups_on_a_language_model_is_refused(lm_runs, tmp_path, capsys):
    groups = tmp_path / "groups.txt"
    groups.write_text("a\nb\n")
    assert main(["audit", lm_runs["gpt-tiny"], "--groups", str(groups)]) == 1
    assert "image classifier" in _one_line_error(capsys)


@pytest.mark.parametrize("recipe", RECIPES)
def test_explain_draws_attention_or_refuses(lm_runs, recipe, tmp_path, capsys):
    rc = main(["explain", lm_runs[recipe], "--index", "3", "--save-dir", str(tmp_path)])
    if recipe == "lstm-tiny":
        assert rc == 1 and "no attention" in _one_line_error(capsys)
        return
    assert rc == 0
    assert os.path.getsize(tmp_path / "3_attention.png") > 0
    assert main(["explain", lm_runs[recipe], "--index", "100000"]) == 1
    assert "--index 100000" in _one_line_error(capsys)


@pytest.mark.parametrize("recipe", RECIPES)
def test_cost_counts_a_language_model_step(lm_runs, recipe, capsys):
    assert main(["cost", lm_runs[recipe], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["forward_flops"] > 0 and summary["backward_flops"] > 0


def _brute_force(train_rows, val_rows, n):
    """Exact copies, near copies and the n-gram share, with Python tuples and sets."""
    train_seqs = {tuple(r) for r in train_rows}
    grams = {tuple(r[i:i + n]) for r in train_rows for i in range(len(r) - n + 1)}
    exact, near, found, total = [], [], 0, 0
    for j, r in enumerate(val_rows):
        mine = [tuple(r[i:i + n]) for i in range(len(r) - n + 1)]
        hits = sum(g in grams for g in mine)
        found, total = found + hits, total + len(mine)
        if tuple(r) in train_seqs:
            exact.append(j)
        elif mine and hits / len(mine) >= text_checks.NEAR_OVERLAP:
            near.append(j)
    return exact, near, found / total


@pytest.mark.parametrize("recipe", RECIPES)
def test_audit_data_checks_language_model_splits(lm_runs, recipe, tmp_path, capsys):
    from layerwise.audit.report import load_run

    out = tmp_path / "data.json"
    rc = main(["audit-data", lm_runs[recipe], "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    val = report["contamination"]["val"]
    assert rc == (1 if val["n_leaked"] else 0)
    assert "val sequences in train" in printed
    rows = text_checks.split_rows(load_run(lm_runs[recipe]))
    exact, near, share = _brute_force([r.tolist() for r in rows["train"]],
                                      [r.tolist() for r in rows["val"]], text_checks.NGRAM)
    assert [j for _, j in val["exact_pairs"]] == exact
    assert [j for j, _ in val["near_rows"]] == near
    assert val["ngram_share_in_train"] == pytest.approx(share, abs=1e-6)
    assert val["n_other"] == len(rows["val"])


def test_text_contamination_on_hand_made_rows():
    train = [list(range(1, 31)), [7] * 20]
    val = [list(range(1, 31)),  # the same sequence: exact
           list(range(5, 25)),  # a piece of the first: every 13-gram in train, near
           list(range(100, 120)),  # unrelated
           [7] * 20]  # the same as train[1]
    report = text_checks.text_contamination(train, val, ngram=13)
    assert report.exact_pairs == [(0, 0), (1, 3)]
    assert report.near_rows == [(1, 1.0)]
    assert report.leaked == [0, 1, 3]
    # n-grams: 18 + 8 + 8 found of 18 + 8 + 8 + 8
    assert report.ngram_share == pytest.approx(34 / 42)
    assert text_checks.duplicate_rows([[1, 2], [3], [1, 2], [1, 2, 3]]) == [[0, 2]]
    for bad in ({"ngram": 0}, {"near_overlap": 0}, {"near_overlap": 1.5}):
        with pytest.raises(ValueError, match="must be"):
            text_checks.text_contamination(train, val, **bad)


def test_audit_data_image_options_on_a_language_model_are_refused(lm_runs, capsys):
    for option in (["--near-threshold", "0.2"], ["--label-issues"]):
        assert main(["audit-data", lm_runs["lstm-tiny"], *option]) == 2
        assert option[0] in _one_line_error(capsys)
