"""Every command and code block in README.md runs as printed, so the README cannot drift.

Commands run in-process in a fresh working directory, in the README's order. The image
recipes train as printed and must reach the accuracy the README leads a user to expect
(``ACCURACY_AT_LEAST``); the other commands get settings that shorten them appended
(``QUICK``: one epoch, 20k characters), their recipes, models and code paths the README's own. ``<recipe>-<time>`` stands for the run the README
trained last with that recipe. A run that the README later resumes keeps its epochs and is
interrupted right after its first resume checkpoint, as Ctrl-C would, so that ``--resume`` has
the rest of the run to continue.
"""

import os
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import layerwise as lw
from layerwise.cli.main import main
from layerwise.train import checkpoint
from layerwise.train.recipes import RECIPES
from tests.cli.test_scene_cli import write_coco

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SMALL_TEXT = ["--set", "corpus_chars=20000"]
SMALL_SCENES = ["--set", "train_scenes=32", "--set", "eval_scenes=16"]
# "~0.97 test accuracy" for the default MLP (0.972 measured); the CNN at the README's 3 epochs
# and seed 1 (0.956 measured).
ACCURACY_AT_LEAST = {"mlp": 0.95, "cnn": 0.93}
ADULT_ACCURACY_AT_LEAST = 0.84  # logistic regression's usual ~0.85 (0.858 measured)
USER_DATA_RECIPES = {"tabular", "cnn", "lstm", "detect"}  # what the README trains on --data
QUICK = {  # appended to a command; argparse keeps the last value of an option
    "finetune": ["--epochs", "1", "--min-steps", "5"],
    "explain": ["--steps", "8"],
}
QUICK_GENERATE_TOKENS = "20"


def readme_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands():
    """Each command line of the README's bash blocks, split as the shell would. Its text
    blocks are shown, not run: `layerwise serve` runs until it is stopped, so its block is
    checked against a real server by tests/serve/test_server.py instead."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def _quick_train(argv, keep_epochs):
    given = argv[argv.index("--model") + 1] if "--model" in argv else "mlp"
    if RECIPES[given].task.kind == "image":
        return argv + ["--no-progress"]  # as printed: seconds each
    if RECIPES[given].task.kind in ("detect", "segment"):  # minutes as printed
        return argv + ["--epochs", "1", "--no-progress", *SMALL_SCENES]
    small = SMALL_TEXT + (["--set", "sample_tokens=20"] if given in ("gpt", "lstm") else [])
    epochs = [] if keep_epochs else ["--epochs", "1"]
    return argv + [*epochs, "--no-progress", *small]


def _quick(argv, keep_epochs=False):
    command = argv[0]
    if command == "train" and "--resume" not in argv:
        return _quick_train(argv, keep_epochs)
    if command == "train":
        return argv + ["--no-progress"]
    if command == "generate" and "--max-new-tokens" in argv:
        argv = list(argv)
        argv[argv.index("--max-new-tokens") + 1] = QUICK_GENERATE_TOKENS
    return argv + QUICK.get(command, [])


class _Runs:
    """Which run directory ``runs/<recipe>-<time>`` stands for: the latest of that recipe."""

    def __init__(self):
        self.latest = {}
        self.all = []  # (recipe, run directory) of every run, in order

    def record_new(self, before):
        for name in set(os.listdir("runs")) - before:
            config = Path("runs", name, "config.json")
            if config.is_file():
                recipe = checkpoint.read_json(str(config), "config").get("recipe")
                if recipe is not None:  # compress and finetune runs name no recipe
                    self.latest[recipe] = os.path.join("runs", name)
                    self.all.append((recipe, self.latest[recipe]))

    def substitute(self, argv):
        def run_of(match):
            recipe = match.group(1)
            assert recipe in self.latest, f"the README uses a {recipe} run before training one"
            return self.latest[recipe]

        return [re.sub(r"runs/([\w-]+)-<time>", run_of, arg) for arg in argv]


def _interrupting(monkeypatch):
    write = checkpoint.save_resume_state

    def save_then_interrupt(run_dir, state):
        write(run_dir, state)
        raise KeyboardInterrupt  # what Ctrl-C raises in the training loop

    monkeypatch.setattr(checkpoint, "save_resume_state", save_then_interrupt)


def _run_example(argv, monkeypatch):
    script = str(REPO / argv[1])
    monkeypatch.setattr(sys, "argv", [script, *argv[2:]])
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        return stop.code or 0
    return 0


def test_the_readme_test_command_is_what_ci_runs():
    commands = [argv for argv in readme_commands() if argv[:2] == ["uv", "run"]]
    assert ["uv", "run", "pytest"] in commands
    assert "uv run pytest" in (REPO / ".ci" / "run").read_text().splitlines()


def _write_readme_data():
    """The photos/ folder, notes.txt and shapes/ (a COCO file and its images) that the
    README's own-data commands name."""
    from PIL import Image
    from pydoc_data.topics import topics

    rng = np.random.default_rng(0)
    for label, brightness in (("cat", 200), ("dog", 50)):  # told apart by brightness alone
        os.makedirs(os.path.join("photos", label))
        for i in range(10):
            pixels = np.clip(rng.normal(brightness, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join("photos", label, f"{i}.png"))
    Path("notes.txt").write_text("\n\n".join(topics.values())[:30_000])
    os.mkdir("shapes")
    write_coco(Path("shapes"), n_images=12)


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.mkdir("runs")
    _write_readme_data()
    commands = readme_commands()
    resumed = {os.path.basename(argv[argv.index("--resume") + 1])
               for argv in commands if "--resume" in argv}
    runs = _Runs()
    ran = 0
    for argv in commands:
        assert argv[:2] == ["uv", "run"], f"README command not run through uv: {argv}"
        argv = runs.substitute(argv[2:])
        if argv == ["pytest"]:
            continue  # the suite itself: test_the_readme_test_command_is_what_ci_runs
        before = set(os.listdir("runs"))
        if argv[0] == "python":
            rc = _run_example(argv, monkeypatch)
        else:
            assert argv[0] == "layerwise", f"unexpected README command {argv}"
            name = argv[argv.index("--name") + 1] if "--name" in argv else None
            argv = _quick(argv[1:], keep_epochs=name in resumed)
            with monkeypatch.context() as patch:
                if argv[0] == "train" and name in resumed:
                    _interrupting(patch)
                rc = main(argv)
            if name in resumed:
                assert rc == 130 and os.path.isfile(os.path.join("runs", name, "last.json"))
                rc = 0
        output = capsys.readouterr()
        assert rc == 0, f"`{shlex.join(argv)}` exited {rc}: {output.err.strip()[-800:]}"
        runs.record_new(before)
        ran += 1
    assert ran >= 15
    for recipe, run in runs.all:
        metrics = checkpoint.read_json(os.path.join(run, "metrics.json"), "metrics")
        config = checkpoint.read_json(os.path.join(run, "config.json"), "config")
        if config["data"].get("source") == "user":
            assert recipe in USER_DATA_RECIPES, (run, recipe)
        elif recipe in ACCURACY_AT_LEAST:
            assert metrics["test_accuracy"] >= ACCURACY_AT_LEAST[recipe], (run, metrics)
    adult = [run for recipe, run in runs.all if recipe == "tabular"][0]
    metrics = checkpoint.read_json(os.path.join(adult, "metrics.json"), "metrics")
    assert metrics["test_accuracy"] >= ADULT_ACCURACY_AT_LEAST


def test_the_python_example_runs_and_learns(tmp_path, monkeypatch, capsys):
    blocks = readme_blocks("python")
    assert len(blocks) == 3  # the training example, the dispatch one, the card of any model
    code = blocks[0]
    assert "for epoch in range(5):" in code
    code = code.replace("for epoch in range(5):", "for epoch in range(1):")  # keep it quick
    monkeypatch.chdir(tmp_path)  # the example saves mlp.safetensors in the working directory
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)

    assert namespace["accuracy"] > 0.8  # one epoch of an MLP on 4,000 digits; chance is 0.1
    assert f"test accuracy {namespace['accuracy']:.3f}" in capsys.readouterr().out
    saved = lw.load(tmp_path / "mlp.safetensors")
    assert list(saved) == list(namespace["model"].state_dict())
    for name, value in namespace["model"].state_dict().items():
        assert (saved[name].data == value.data).all()


def test_the_dispatch_example_prints_the_two_paths_and_their_difference(capsys):
    code = readme_blocks("python")[1]
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    names, difference = capsys.readouterr().out.splitlines()
    assert names.split() == [type(namespace["fast"].grad_fn).__name__, "GELU"]
    if lw.ops.fast.activation.GeluFloat32.available():  # numba present: the compiled path ran
        assert names.split()[0] == "GeluFloat32"
    assert 0 <= float(difference) < 1e-6


def test_the_card_example_writes_a_card_with_the_worst_group(tmp_path, monkeypatch, capsys):
    code = readme_blocks("python")[2]
    assert "for epoch in range(3):" in code
    code = code.replace("for epoch in range(3):", "for epoch in range(1):")  # keep it quick
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    accuracy, headline = capsys.readouterr().out.splitlines()
    card = namespace["card"]
    assert float(accuracy.split()[-1]) >= 0.83  # one epoch; the majority class alone is 0.764
    assert headline == card["disaggregated"]["headline"] and headline.startswith("Worst group: ")
    assert "sex=" in headline and "race=" in headline  # an intersection is the worst cell here
    assert (tmp_path / "adult-card" / "card.html").is_file()
    assert "Teaching how a classifier" in (tmp_path / "adult-card" / "card.html").read_text()
