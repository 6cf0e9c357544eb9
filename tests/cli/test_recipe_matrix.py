"""Every recipe family through every subcommand, as a user would run them.

Each family is trained in a small form, interrupted after its second checkpoint (as Ctrl-C
would), resumed to the end, and then walked through report, audit, audit-data, explain, cost,
compress, finetune, generate and predict. Each cell must either work (exit 0), refuse with one line
on stderr and a non-zero exit, or (audit-data) report what it flags and exit 1 with a
one-line summary on stderr; a traceback is a failure. ``MATRIX`` says which cells must
work and which must refuse; the test prints the outcomes it saw.
"""

import os

import pytest

from layerwise.cli.main import main
from layerwise.train.checkpoint import ResumeCheckpoint

WORK, REFUSE, FLAGS = "works", "refuses", "flags"
SUBCOMMANDS = ("train", "resume", "report", "audit", "audit-data", "explain", "cost",
               "compress", "finetune", "generate", "predict")

# The small form of each family: its tiny recipe, or the full recipe on a few examples.
FAMILIES = {
    "tiny": ["--model", "tiny", "--epochs", "1"],
    "cnn": ["--model", "cnn", "--epochs", "1", "--set", "train_subset=256"],
    "gpt-tiny": ["--model", "gpt-tiny", "--epochs", "1"],
    "lstm-tiny": ["--model", "lstm-tiny", "--epochs", "1"],
    "bert-tiny": ["--model", "bert-tiny", "--epochs", "1"],
    # a user's data (train --data): a shipped table, an image folder, a text file
    "tabular-tiny": ["--data", "breast_cancer", "--model", "tabular-tiny", "--epochs", "1"],
    "cnn-folder": ["--data", "photos", "--image-size", "12", "--epochs", "1", "--set",
                   "batch_size=4"],
    "gpt-text": ["--data", "notes.txt", "--model", "gpt-tiny", "--epochs", "1"],
    # digit scenes: boxes and masks
    "detect-tiny": ["--model", "detect-tiny"],
    "segment-tiny": ["--model", "segment-tiny"],
}

_IMAGE = {command: WORK for command in SUBCOMMANDS} | {"generate": REFUSE}
_LANGUAGE = {command: WORK for command in SUBCOMMANDS} | {"compress": REFUSE,
                                                          "finetune": REFUSE, "predict": REFUSE}
# predicted boxes or masks are drawn by predict and in the card; no saliency, no int8 or
# distillation of a detector, no digits to fine-tune it on, no text
_SCENES = {command: WORK for command in SUBCOMMANDS} | {
    "explain": REFUSE, "compress": REFUSE, "finetune": REFUSE, "generate": REFUSE}
MATRIX = {
    "tiny": _IMAGE,
    "cnn": _IMAGE,
    "gpt-tiny": _LANGUAGE,
    "lstm-tiny": _LANGUAGE | {"explain": REFUSE},  # attention maps need attention
    # Its 20k characters hold a paragraph "." in both splits: a real copy, flagged.
    "bert-tiny": _LANGUAGE | {"generate": REFUSE, "audit-data": FLAGS},
    # no attributions for table features yet; no int8 or distillation of a table model; no
    # other digits to fine-tune on; no text to generate
    "tabular-tiny": {command: WORK for command in SUBCOMMANDS} | {
        "explain": REFUSE, "compress": REFUSE, "finetune": REFUSE, "generate": REFUSE,
        "predict": REFUSE},
    "cnn-folder": _IMAGE | {"finetune": REFUSE},  # finetune's other digits are no photos' task
    # one validation window of the first 30k characters of the docs shares 86% of its 13-grams
    # with training text (the docs repeat themselves): flagged
    "gpt-text": _LANGUAGE | {"audit-data": FLAGS},
    "detect-tiny": _SCENES,
    "segment-tiny": _SCENES,
}


def _write_user_data():
    """The photos/ folder and notes.txt the user-data families train on."""
    import numpy as np
    from PIL import Image
    from pydoc_data.topics import topics

    rng = np.random.default_rng(0)
    for label, brightness in (("cat", 200), ("dog", 50)):
        os.makedirs(os.path.join("photos", label))
        for i in range(10):
            pixels = np.clip(rng.normal(brightness, 30, (16, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join("photos", label, f"{i}.png"))
    with open("notes.txt", "w", encoding="utf-8") as f:
        f.write("\n\n".join(topics.values())[:30_000])
INTERRUPT_AT_STEP = 2


def _arguments(command, run, out):
    """The argv of one cell, for the run directory ``run``; new outputs go under ``out``."""
    return {
        "report": ["report", run],
        "audit": ["audit", run],
        "audit-data": ["audit-data", run],
        "explain": ["explain", run, "--index", "0", "--steps", "8",
                    "--save-dir", os.path.join(out, "explain")],
        "cost": ["cost", run],
        "compress": ["compress", run, "--out", os.path.join(out, "compressed"),
                     "--quantize", "int8", "--no-card"],
        "finetune": ["finetune", run, "--labels-per-class", "5", "--epochs", "1",
                     "--min-steps", "5", "--out", out, "--name", "finetuned"],
        "generate": ["generate", run, "--max-new-tokens", "10", "--seed", "1"],
        "predict": ["predict", run, os.path.join("photos", "cat", "0.png"), "--out",
                    os.path.join(out, "predicted.png")],
    }[command]


def _interrupt_after_second_checkpoint(monkeypatch):
    write = ResumeCheckpoint.on_batch_end

    def on_batch_end(self, trainer, logs):
        write(self, trainer, logs)
        if trainer.global_step == INTERRUPT_AT_STEP:
            raise KeyboardInterrupt  # what Ctrl-C raises in the training loop

    monkeypatch.setattr(ResumeCheckpoint, "on_batch_end", on_batch_end)


def _outcome(rc, output):
    """'works', 'refuses', 'flags', or a description of what went wrong."""
    lines = output.err.strip().splitlines()
    if rc == 0:
        return WORK
    if rc in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "):
        return REFUSE
    if rc == 1 and len(lines) == 1 and output.out.strip():
        return FLAGS
    return f"exit {rc} with stderr {output.err.strip()[-600:]!r}"


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_subcommand_works_or_refuses_in_one_line(family, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write_user_data()
    out = str(tmp_path / "runs")
    run = os.path.join(out, family)
    seen = {}

    with monkeypatch.context() as patch:
        _interrupt_after_second_checkpoint(patch)
        rc = main(["train", *FAMILIES[family], "--checkpoint-every", "1", "--no-progress",
                   "--no-card", "--out", out, "--name", family])
    capsys.readouterr()
    seen["train"] = WORK if rc == 130 and os.path.isfile(os.path.join(run, "last.json")) \
        else f"the interrupted run exited {rc}"

    rc = main(["train", "--resume", run, "--no-progress", "--no-card"])
    seen["resume"] = _outcome(rc, capsys.readouterr())
    assert os.path.isfile(os.path.join(run, "metrics.json")), "the resumed run did not finish"

    for command in SUBCOMMANDS[2:]:
        rc = main(_arguments(command, run, str(tmp_path / command)))
        seen[command] = _outcome(rc, capsys.readouterr())

    with capsys.disabled():
        print(f"\n{family}: " + ", ".join(f"{c} {seen[c]}" for c in SUBCOMMANDS))
    wrong = {c: seen[c] for c in SUBCOMMANDS if seen[c] != MATRIX[family][c]}
    assert not wrong, f"{family}: expected {MATRIX[family]}, got these cells: {wrong}"
