"""What `layerwise train` does beyond training: the model card, the cost record, the
contamination check, and the cnn recipe's accuracy target."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import _write_idx, assert_one_error_line, run_cli


def test_every_run_gets_a_card_and_a_cost_record(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--model", "tiny", "--no-progress",
                             "--out", str(tmp_path), "--country", "FR")
    assert code == 0, err
    run = Path(out.splitlines()[0].removeprefix("run: "))
    assert f"model card: {run / 'card.html'}" in out
    card = json.loads((run / "card.json").read_text())
    assert card["metrics"] and "<html" in (run / "card.html").read_text().lower()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_flops"] > 0 and metrics["energy_kwh"] > 0
    with open(run / "emissions.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["country_iso_code"] == "FR"
    assert float(row["emissions"]) == pytest.approx(metrics["emissions_kg_co2e"], rel=1e-6)
    # France's grid intensity (56 g/kWh in the table), PUE 1.0: kg = kWh * 56 / 1000
    assert metrics["emissions_kg_co2e"] == pytest.approx(metrics["energy_kwh"] * 0.056, rel=1e-6)


def _digits_like_idx(tmp_path, leak):
    """Random 'digits' in IDX files; with ``leak``, 5 test images are copies of training ones."""
    g = np.random.default_rng(0)
    images = {"train": g.integers(0, 256, (120, 28, 28)), "t10k": g.integers(0, 256, (40, 28, 28))}
    if leak:
        images["t10k"][:5] = images["train"][10:15]
    for prefix, array in images.items():
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", array)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(len(array)) % 10)


def test_training_refuses_test_examples_copied_into_train(capsys, tmp_path):
    _digits_like_idx(tmp_path, leak=True)
    args = ["train", "--model", "tiny", "--no-progress", "--no-card", "--data-dir", str(tmp_path),
            "--out", str(tmp_path / "runs")]
    code, _, err = run_cli(capsys, *args)
    assert code == 1
    assert_one_error_line(err, "test examples also appear in the training split", "--allow-contamination")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    code, _, err = run_cli(capsys, *args, "--allow-contamination")
    assert code == 0, err


def test_clean_data_is_not_refused(capsys, tmp_path):
    _digits_like_idx(tmp_path, leak=False)
    code, _, err = run_cli(capsys, "train", "--model", "tiny", "--no-progress", "--no-card",
                           "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs"))
    assert code == 0, err


