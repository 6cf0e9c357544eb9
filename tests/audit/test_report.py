"""The model card of a finished run: card.json + a self-contained card.html."""

import json
import os
import re
import shutil
import time

import pytest

from layerwise.audit import build_report, load_run, write_model_card
from layerwise.audit.report import predict_logits, split_arrays, training_cost
from layerwise.train.checkpoint import RunError


@pytest.fixture(scope="module")
def carded(tiny_run, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("card") / "run")
    shutil.copytree(tiny_run, run_dir)
    t0 = time.perf_counter()
    card = write_model_card(run_dir)
    return run_dir, card, time.perf_counter() - t0


def test_load_run_rebuilds_the_trained_model(tiny_run):
    run = load_run(tiny_run)
    x, y = split_arrays(run.splits["test"])
    acc = float((predict_logits(run.model, x).argmax(1) == y).mean())
    assert acc == pytest.approx(run.metrics["test_accuracy"], abs=1e-9)


def test_card_files_and_sections(carded):
    run_dir, _, seconds = carded
    assert seconds < 30  # a few seconds for a small run; generous for busy CI machines
    with open(os.path.join(run_dir, "card.json")) as f:
        on_disk = json.load(f)
    for key in ("model_details", "intended_use", "data", "metrics", "disaggregated",
                "calibration", "robustness", "explanations", "training_cost", "caveats",
                "data_checks"):
        assert key in on_disk, key
    m = on_disk["metrics"]
    assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
    assert len(on_disk["disaggregated"]["by_true_class"]["groups"]) == 10
    assert on_disk["data_checks"]["contamination_test"]["n_leaked"] == 0
    assert on_disk["data_checks"]["contamination_test_in_val"]["n_leaked"] == 0
    assert max(on_disk["explanations"]["ig_relative_delta"]) <= 0.01
    # the tiny run is far from calibrated; the card says so
    assert any("miscalibrated" in c for c in on_disk["caveats"])


def test_card_html_is_self_contained(carded):
    run_dir, _, _ = carded
    with open(os.path.join(run_dir, "card.html"), encoding="utf-8") as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>")
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for heading in ("Model details", "Intended use", "Data", "Metrics", "Disaggregated results",
                    "Calibration", "Robustness", "Explanations", "Training cost", "Caveats"):
        assert f"<h2>{heading}</h2>" in page, heading
    # `layerwise train` records the cost of every run: the card shows it, not "not measured"
    cost = page[page.index("<h2>Training cost</h2>"):page.index("<h2>Caveats</h2>")]
    assert "energy_kwh" in cost and "not measured" not in cost


def test_groups_must_match_the_test_split(tiny_run):
    # the groups reaching the card are checked in test_cli (audit --groups)
    n = len(load_run(tiny_run).splits["test"])
    with pytest.raises(RunError, match=f"give 3 labels but the test split has {n} examples"):
        build_report(tiny_run, group_labels=["a", "b", "c"], write=False)


def test_training_cost_is_read_when_present(tmp_path):
    assert not training_cost(str(tmp_path), {"train_seconds": 3.0})["measured"]
    with open(tmp_path / "emissions.csv", "w") as f:
        f.write("duration,energy_consumed,emissions\n3.0,0.0001,0.00004\n")
    cost = training_cost(str(tmp_path), {"train_seconds": 3.0, "energy_kwh": 1e-4})
    assert cost["measured"] and cost["values"]["energy_kwh"] == 1e-4
    assert cost["values"]["emissions_csv"]["emissions"] == "0.00004"


def test_unfinished_or_missing_runs_are_one_line_errors(tiny_run, tmp_path):
    with pytest.raises(RunError, match="no run directory"):
        load_run(str(tmp_path / "nope"))
    (tmp_path / "half").mkdir()  # a run's config, and no weights yet
    shutil.copy(os.path.join(tiny_run, "config.json"), tmp_path / "half" / "config.json")
    with pytest.raises(RunError, match="has not finished"):
        load_run(str(tmp_path / "half"))


def test_check_split_contamination_for_the_trainer(tiny_run):
    from layerwise.audit import check_split_contamination
    from layerwise.data import TensorDataset

    splits = load_run(tiny_run).splits
    assert check_split_contamination(splits).leaked == []
    x_test, _ = split_arrays(splits["test"])
    x_train, y_train = split_arrays(splits["train"])
    x_train = x_train.copy()
    x_train[[5, 9]] = x_test[[0, 3]]
    leaky = dict(splits, train=TensorDataset(x_train, y_train))
    report = check_split_contamination(leaky)
    assert report.exact_pairs == [(5, 0), (9, 3)]
    assert report.message().startswith("2 of 500 test examples also appear in the training")
    # the trainer's hook: a RunError (one line on the command line), naming the way out
    from layerwise.audit import ContaminationError, refuse_contamination

    assert refuse_contamination(splits).leaked == []
    with pytest.raises(RunError, match="--allow-contamination") as info:
        refuse_contamination(leaky)
    assert isinstance(info.value, ContaminationError)
    assert refuse_contamination({"train": splits["train"], "val": splits["val"]}) is None


def test_image_grid_scales_coarse_maps_to_the_image():
    import base64

    import numpy as np

    from layerwise.audit import plots

    coarse = np.arange(4.0).reshape(2, 2)
    assert plots._resize_nearest(coarse, 4, 4).tolist() == [
        [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    png = plots.image_grid([np.zeros((1, 8, 8))] * 2, [[coarse, coarse]], ["a", "b"], cmap="jet")
    assert base64.b64decode(png)[:4] == b"\x89PNG"


def test_estimated_energy_becomes_a_caveat(carded):
    # the trainer measured with the fallback estimate on this machine unless RAPL is readable
    _, card, _ = carded
    warning = card["training_cost"]["values"].get("energy_warnings")
    estimated = [c for c in card["caveats"] if c.startswith("Training energy and CO2e are")]
    assert estimated == ([f"Training energy and CO2e are estimates: {warning}."] if warning
                         else [])
    method = card["training_cost"]["values"]["energy_method"]
    assert ("estimate" in method) == bool(warning)


def test_group_table_shows_fairlearn_differences_for_binary_tasks():
    import numpy as np

    from layerwise.audit import card_html as C
    from layerwise.audit import groups as G

    y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
    p = np.array([1, 0, 1, 0, 1, 1, 1, 0, 0, 1])
    table = G.group_metrics(y, p, np.array(["a"] * 4 + ["b"] * 6), small=1)
    page = C._group_table(table)
    fair = table["fairness"]
    assert f"parity difference <b>{fair['demographic_parity_difference']:.3f}</b>" in page
    assert f"equalized-odds difference <b>{fair['equalized_odds_difference']:.3f}</b>" in page
