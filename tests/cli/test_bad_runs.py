"""Every subcommand that reads a run, given a bad run or a bad file, answers in one line.

Each case copies a real tiny (image) or gpt-tiny (language model) run, damages the copy, runs
the command in-process and checks: exit 1 or 2, stderr exactly one ``error: `` line naming the
bad path or value, and nothing that was in the run directory (or at the bad path) changed.
"""

import json
import os
import shutil

import pytest

from layerwise.cli.main import main
from tests.cli.test_cli import run_cli

IMAGE, TEXT = "tiny", "gpt-tiny"
# The lock's pid is written and cleared again by every command that locks the run: its
# mtime moves but its content (empty between holders) must not.
_CONTENT_ONLY = {"run.lock"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{recipe: finished run directory}; copied per case, never touched."""
    out = tmp_path_factory.mktemp("trained")
    for recipe, extra in ((IMAGE, []), (TEXT, ["--set", "corpus_chars=6000"])):
        argv = ["train", "--model", recipe, "--epochs", "1", "--no-progress", "--no-card",
                "--out", str(out), "--name", recipe, *extra]
        assert main(argv) == 0
    return {recipe: out / recipe for recipe in (IMAGE, TEXT)}


def snapshot(path):
    """{relative name: (size, mtime) or content} of everything at ``path``; None if absent."""
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        st = os.stat(path)
        return {".": (st.st_size, st.st_mtime_ns)}
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            key = os.path.relpath(full, path)
            if name in _CONTENT_ONLY:
                with open(full, "rb") as f:
                    found[key] = f.read()
            else:
                st = os.lstat(full)
                found[key] = (st.st_size, st.st_mtime_ns, os.path.isdir(full))
    return found


# --- the commands, each given RUN and a scratch directory for what it may write -------------

COMMANDS = {
    "train": lambda run, tmp: ["train", "--resume", str(run), "--no-progress", "--no-card"],
    "report": lambda run, tmp: ["report", str(run)],
    "audit": lambda run, tmp: ["audit", str(run)],
    "audit-data": lambda run, tmp: ["audit-data", str(run)],
    "explain": lambda run, tmp: ["explain", str(run), "--index", "0"],
    "cost": lambda run, tmp: ["cost", str(run)],
    "compress": lambda run, tmp: ["compress", str(run), "--out", str(tmp / "compressed"),
                                  "--quantize", "int8", "--no-card"],
    "finetune": lambda run, tmp: ["finetune", str(run), "--out", str(tmp / "finetuned"),
                                  "--epochs", "1", "--min-steps", "1"],
    "generate": lambda run, tmp: ["generate", str(run), "--max-new-tokens", "5"],
}
# Commands that take a language-model run (compress and finetune refuse one in one line).
TEXT_COMMANDS = ("train", "report", "audit", "audit-data", "explain", "cost", "generate")


# --- the damages: each makes RUN bad and returns the fragments the error must name ----------


def _config(run):
    return run / "config.json"


def _rewrite_config(run, change):
    config = json.loads(_config(run).read_text())
    _config(run).write_text(json.dumps(change(config)))


def _without(config, key):
    return {k: v for k, v in config.items() if k != key}


def _with_hparam(config, key, value):
    return dict(config, hyperparameters=dict(config["hyperparameters"], **{key: value}))


def _other_recipes_weights(run, trained):
    other = trained[TEXT] if json.loads(_config(run).read_text())["recipe"] == IMAGE \
        else trained[IMAGE]
    shutil.copyfile(other / "model.safetensors", run / "model.safetensors")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


DAMAGES = {
    "missing": lambda run, trained: shutil.rmtree(run),
    "regular-file": lambda run, trained: (shutil.rmtree(run), run.write_text("not a run\n")),
    "empty-dir": lambda run, trained: (shutil.rmtree(run), run.mkdir()),
    "config-not-json": lambda run, trained: _config(run).write_text("{recipe: tiny"),
    "config-a-list": lambda run, trained: _config(run).write_text('["tiny"]'),
    "config-unknown-recipe": lambda run, trained: _rewrite_config(
        run, lambda c: dict(c, recipe="nosuchrecipe")),
    "config-epochs-text": lambda run, trained: _rewrite_config(
        run, lambda c: _with_hparam(c, "epochs", "x")),
    "config-no-recipe": lambda run, trained: _rewrite_config(
        run, lambda c: _without(c, "recipe")),
    "weights-missing": lambda run, trained: os.remove(run / "model.safetensors"),
    "weights-truncated": lambda run, trained: _truncate(run / "model.safetensors"),
    "weights-empty": lambda run, trained: (run / "model.safetensors").write_bytes(b""),
    "weights-other-recipe": _other_recipes_weights,
    "tokenizer-missing": lambda run, trained: os.remove(run / "tokenizer.json"),
    "tokenizer-corrupt": lambda run, trained: (run / "tokenizer.json").write_text('{"kind": '),
    "tokenizer-a-list": lambda run, trained: (run / "tokenizer.json").write_text('["a", "b"]'),
    "history-corrupt": lambda run, trained: (run / "history.jsonl").open("a").write('{"ep\n'),
    "history-a-list": lambda run, trained: (run / "history.jsonl").open("a").write("[1]\n"),
    "metrics-corrupt": lambda run, trained: (run / "metrics.json").write_text('{"energy_kwh": 1'),
    "tokenizer-bad-chars": lambda run, trained: (run / "tokenizer.json").write_text(
        '{"kind": "char", "chars": ["a", "a", 5]}'),
}
# What the one error line must name, for each damage: the run, or the file and the value.
NAMES = {
    "missing": lambda run: [str(run)],
    "regular-file": lambda run: [str(run)],
    "empty-dir": lambda run: [str(run)],
    "config-not-json": lambda run: [str(_config(run))],
    "config-a-list": lambda run: [str(_config(run))],
    "config-unknown-recipe": lambda run: ["nosuchrecipe"],
    "config-epochs-text": lambda run: [str(_config(run)), ("epochs='x'", 'epochs="x"')],
    "config-no-recipe": lambda run: [str(_config(run)), "recipe"],
    "weights-missing": lambda run: [str(run), "model.safetensors"],
    "weights-truncated": lambda run: [str(run), "model.safetensors"],
    "weights-empty": lambda run: [str(run), "model.safetensors"],
    "weights-other-recipe": lambda run: [str(run), "model.safetensors",
                                         ("missing keys", "unexpected keys", "size mismatch")],
    "tokenizer-missing": lambda run: [str(run), "tokenizer.json"],
    "tokenizer-corrupt": lambda run: [str(run), "tokenizer.json"],
    "tokenizer-a-list": lambda run: [str(run), "tokenizer.json"],
    "history-corrupt": lambda run: [str(run / "history.jsonl"), "line 2"],
    "history-a-list": lambda run: [str(run / "history.jsonl"), "line 2", "'[1]'"],
    "metrics-corrupt": lambda run: [str(run / "metrics.json")],
    "tokenizer-bad-chars": lambda run: [str(run), "tokenizer.json", "'chars'"],
}
_RUN_DAMAGES = [d for d in DAMAGES if not d.startswith(("tokenizer", "history", "metrics"))]
_TEXT_DAMAGES = ["weights-truncated", "weights-other-recipe", "tokenizer-missing",
                 "tokenizer-corrupt", "tokenizer-a-list", "tokenizer-bad-chars"]


def _base(command):
    return TEXT if command == "generate" else IMAGE


CASES = sorted(
    {(command, _base(command), damage) for command in COMMANDS for damage in _RUN_DAMAGES}
    | {(command, TEXT, damage) for command in TEXT_COMMANDS for damage in _TEXT_DAMAGES}
    # compress and finetune take image runs only; a text run's bad tokenizer must not make
    # that refusal a traceback
    | {(command, TEXT, damage) for command in ("compress", "finetune")
       for damage in ("tokenizer-missing", "tokenizer-corrupt")}
    # the records beside the weights, read by the commands that report on a finished run
    | {(command, IMAGE, damage) for command in ("report", "audit", "audit-data", "explain")
       for damage in ("history-corrupt", "history-a-list", "metrics-corrupt")}
    | {("cost", IMAGE, "metrics-corrupt")})


def _expect_one_error(code, err, fragments):
    assert code in (1, 2), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:  # a tuple: any one of its spellings
        spellings = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(s in lines[0] for s in spellings), (fragment, lines[0])


def _damaged_copy(trained, recipe, damage, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[recipe], run)
    DAMAGES[damage](run, trained)
    return run


@pytest.mark.parametrize("command, recipe, damage", CASES)
def test_a_bad_run_is_one_line_and_stays_as_it_was(trained, capsys, tmp_path, command,
                                                   recipe, damage):
    run = _damaged_copy(trained, recipe, damage, tmp_path)
    before = snapshot(run)
    code, _, err = run_cli(capsys, *COMMANDS[command](run, tmp_path))
    fragments = NAMES[damage](run)
    if command == "train" and damage.startswith(("weights", "tokenizer")):
        # A finished run is refused before its final weights or tokenizer are read.
        fragments = [str(run), "already finished"]
    if recipe == TEXT and command in ("compress", "finetune") and not damage.startswith("config"):
        fragments = [str(run)]  # refused as a text run, or for its tokenizer: both name it
    _expect_one_error(code, err, fragments)
    assert snapshot(run) == before
    assert not os.path.exists(tmp_path / "compressed")  # nothing half-made beside it
    assert not os.path.exists(tmp_path / "finetuned")


# --- options that name a file or a value wrongly, on a good run -----------------------------


def _groups_file(tmp_path, text):
    path = tmp_path / "groups.csv"
    path.write_text(text)
    return str(path)


def _test_size(run):
    from layerwise.audit.report import load_run

    return len(load_run(str(run)).splits["test"])


OPTION_CASES = {
    # id: (recipe, argv(run, tmp), fragments the error must name)
    "audit-groups-missing": (IMAGE, lambda run, tmp: [
        "audit", str(run), "--groups", str(tmp / "nope.csv")], ["nope.csv"]),
    "audit-groups-empty": (IMAGE, lambda run, tmp: [
        "audit", str(run), "--groups", _groups_file(tmp, "")], ["groups.csv"]),
    "audit-groups-wrong-rows": (IMAGE, lambda run, tmp: [
        "audit", str(run), "--groups", _groups_file(tmp, "a\nb\nc\n")], ["3"]),
    "audit-group-column-unknown": (IMAGE, lambda run, tmp: [
        "audit", str(run), "--groups", _groups_file(tmp, "writer,age\nw1,3\n"),
        "--group-column", "nosuchcolumn"], ["'nosuchcolumn'", "groups.csv"]),
    "explain-index-past-test": (IMAGE, lambda run, tmp: [
        "explain", str(run), "--index", "1000000"], ["--index 1000000"]),
    "explain-index-negative": (IMAGE, lambda run, tmp: [
        "explain", str(run), "--index", "-1"], ["--index -1"]),
    "explain-target-99": (IMAGE, lambda run, tmp: [
        "explain", str(run), "--index", "0", "--target", "99"], ["--target 99"]),
    "explain-layer-unknown": (IMAGE, lambda run, tmp: [
        "explain", str(run), "--index", "0", "--layer", "nosuchlayer"], ["'nosuchlayer'"]),
    "explain-text-index-past": (TEXT, lambda run, tmp: [
        "explain", str(run), "--index", "1000000"], ["--index 1000000"]),
    "explain-text-index-negative": (TEXT, lambda run, tmp: [
        "explain", str(run), "--index", "-1"], ["--index -1"]),
    # a language model is explained by attention maps: no class and no conv layer to pick
    "explain-text-target": (TEXT, lambda run, tmp: [
        "explain", str(run), "--index", "0", "--target", "99"], ["--target 99"]),
    "explain-text-layer": (TEXT, lambda run, tmp: [
        "explain", str(run), "--index", "0", "--layer", "nosuchlayer"], ["--layer nosuchlayer"]),
    "finetune-data-11": (IMAGE, lambda run, tmp: [
        "finetune", str(run), "--data", "digits:11", "--out", str(tmp)], ["'digits:11'"]),
    "finetune-data-reversed": (IMAGE, lambda run, tmp: [
        "finetune", str(run), "--data", "digits:5-3", "--out", str(tmp)], ["'digits:5-3'"]),
    "finetune-data-mnist": (IMAGE, lambda run, tmp: [
        "finetune", str(run), "--data", "mnist", "--out", str(tmp)], ["'mnist'"]),
    "finetune-data-colon-only": (IMAGE, lambda run, tmp: [
        "finetune", str(run), "--data", "digits:", "--out", str(tmp)], ["'digits:'"]),
    "finetune-data-huge-range": (IMAGE, lambda run, tmp: [  # refused before range() is built
        "finetune", str(run), "--data", "digits:0-99999999999", "--out", str(tmp)],
        ["'digits:0-99999999999'"]),
    "finetune-head-unknown": (IMAGE, lambda run, tmp: [
        "finetune", str(run), "--head", "nosuchmodule", "--out", str(tmp)], ["'nosuchmodule'"]),
    "finetune-freeze-matches-nothing": (IMAGE, lambda run, tmp: [
        "finetune", str(run), "--freeze", "nosuch.*", "--out", str(tmp)], ["'nosuch.*'"]),
    "compress-distill-unknown": (IMAGE, lambda run, tmp: [
        "compress", str(run), "--out", str(tmp / "c"), "--distill-into", "nosuchrecipe"],
        ["'nosuchrecipe'"]),
    "compress-distill-into-lm": (IMAGE, lambda run, tmp: [
        "compress", str(run), "--out", str(tmp / "c"), "--distill-into", "gpt-tiny"],
        ["'gpt-tiny'"]),
    "generate-unseen-character": (TEXT, lambda run, tmp: [
        "generate", str(run), "--prompt", "snow \u2603"], ["'\u2603'"]),
    "generate-empty-prompt": (TEXT, lambda run, tmp: [
        "generate", str(run), "--prompt", ""], ["prompt is empty"]),
    "cost-unknown-model": (IMAGE, lambda run, tmp: [
        "cost", "--model", "nosuchrecipe"], ["'nosuchrecipe'"]),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_a_bad_option_value_is_one_line_and_the_run_stays(trained, capsys, tmp_path, case):
    recipe, argv, fragments = OPTION_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(trained[recipe], run)
    before = snapshot(run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code, _, err = run_cli(capsys, *argv(run, scratch))
    _expect_one_error(code, err, fragments)
    assert snapshot(run) == before
    assert os.listdir(scratch) == [] or case.startswith("audit-group")  # no new run made


def test_the_group_labels_must_number_the_test_examples(trained, capsys, tmp_path):
    """One label fewer than the test split is refused; exactly as many is accepted."""
    run = tmp_path / "run"
    shutil.copytree(trained[IMAGE], run)
    n = _test_size(run)
    groups = _groups_file(tmp_path, "".join(f"g{i % 2}\n" for i in range(n - 1)))
    before = snapshot(run)
    code, _, err = run_cli(capsys, "audit", str(run), "--groups", groups)
    _expect_one_error(code, err, [str(n - 1), str(n)])
    assert snapshot(run) == before


def test_compress_refuses_to_write_over_an_existing_run(trained, capsys, tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    shutil.copytree(trained[IMAGE], source)
    shutil.copytree(trained[TEXT], target)
    before_source, before_target = snapshot(source), snapshot(target)
    code, _, err = run_cli(capsys, "compress", str(source), "--out", str(target),
                           "--quantize", "int8", "--no-card")
    _expect_one_error(code, err, [str(target)])
    assert snapshot(source) == before_source and snapshot(target) == before_target
    # Its own directory as --out is the same refusal, not an overwrite of the teacher.
    code, _, err = run_cli(capsys, "compress", str(source), "--out", str(source),
                           "--quantize", "int8", "--no-card")
    _expect_one_error(code, err, [str(source)])
    assert snapshot(source) == before_source


def test_a_prompt_longer_than_the_context_is_generated_from_its_tail(trained, capsys,
                                                                     tmp_path):
    """Not an error: GPT crops its context to the last block_size tokens, as in training."""
    run = tmp_path / "run"
    shutil.copytree(trained[TEXT], run)
    block = json.loads(_config(run).read_text())["hyperparameters"]["block_size"]
    prompt = "The " * block  # 4 * block characters of a char tokenizer
    before = snapshot(run)
    code, out, err = run_cli(capsys, "generate", str(run), "--prompt", prompt,
                             "--max-new-tokens", "3", "--temperature", "0")
    assert code == 0, err
    assert out.startswith(prompt) and len(out) == len(prompt) + 3 + 1
    assert snapshot(run) == before
