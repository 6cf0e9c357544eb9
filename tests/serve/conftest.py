"""Finished runs to serve, trained once per test process through the command a user runs."""

import os

import numpy as np
import pytest

from layerwise.cli.main import main
from tests.serve.client import start, wait_ready

QUICK = ["--no-progress", "--no-card"]
COLORS = ("red", "green", "blue")
COLOR_ROWS = 90
MAX_WAIT_MS = 40  # long enough that concurrent requests share batches on a busy machine


def _train(out, name, *args):
    rc = main(["train", *args, *QUICK, "--out", str(out), "--name", name])
    assert rc == 0, f"training the {name} run failed"
    return str(out / name)


def write_colors_table(path):
    """A small table with a categorical column (color), a numeric one with missing cells
    (size) and a 0/1 target: what breast_cancer, all numbers, does not exercise. Each row is
    unique (distinct ``weight``), so the contamination check finds no copies across splits."""
    rng = np.random.default_rng(0)
    lines = ["color,size,weight,label"]
    for i in range(COLOR_ROWS):
        color = COLORS[i % len(COLORS)]
        size = "" if i % 9 == 4 else f"{rng.uniform(0, 1):.3f}"
        label = int(color == "red") ^ int(size != "" and float(size) > 0.5)
        lines.append(f"{color},{size},{i},{label}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """{'image', 'table', 'colors', 'gpt', 'bert'}: finished run directories."""
    out = tmp_path_factory.mktemp("runs")
    colors = write_colors_table(out / "colors.csv")
    cwd = os.getcwd()
    os.chdir(out)  # anything a run writes beside itself stays in the temporary folder
    try:
        return {
            "image": _train(out, "digits", "--model", "tiny", "--epochs", "1",
                            "--set", "train_subset=200"),
            "table": _train(out, "cancer", "--model", "tabular-tiny", "--data",
                            "breast_cancer"),
            "colors": _train(out, "colors", "--model", "tabular-tiny", "--data", colors,
                             "--target", "label"),
            "gpt": _train(out, "gpt", "--model", "gpt-tiny", "--epochs", "1",
                          "--set", "corpus_chars=5000", "--set", "sample_tokens=5"),
            "bert": _train(out, "bert", "--model", "bert-tiny", "--epochs", "1",
                           "--set", "corpus_chars=5000"),
        }
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def server(runs):
    """A ServerThread on 127.0.0.1 serving every run, ready; stopped after the module."""
    models = {"digits": runs["image"], "cancer": runs["table"], "colors": runs["colors"],
              "gpt": runs["gpt"], "bert": runs["bert"]}
    server = start(models, max_batch=32, max_wait_ms=MAX_WAIT_MS, max_queue=256)
    try:
        wait_ready(server.port)
        yield server
    finally:
        server.stop()
