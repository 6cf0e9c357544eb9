"""The table recipes (layerwise.train.recipes.tabular) through make_config and start_run: the
data record, the hyperparameters chosen from the table's size, the regression model that
predicts in the target's units, the metrics against NumPy float64, and a changed file refused.
"""

import hashlib
import io
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from layerwise import nn, optim
from layerwise.audit.groups import wilson_interval
from layerwise.autograd import Tensor
from layerwise.data import DataLoader, TensorDataset
from layerwise.errors import BadFileError, RunError
from layerwise.nn import functional as F
from layerwise.train import Trainer
from layerwise.train.finished import load_finished_run
from layerwise.train.recipes import RECIPES, TaskData
from layerwise.train.recipes.tabular import (
    AUTO_MAX_BATCH, AUTO_MIN_EPOCHS, AUTO_STEPS, TABLE, predict, regression_metrics,
)
from layerwise.train.run import make_config, resume_run, start_run


def regression_csv(path, n=300, seed=0):
    """y = 1000 + 40 x1 - 25 x2 (+ 10 for 'b') + noise: a target far from 0 with std ~50."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    kind = rng.choice(["a", "b"], size=n)
    y = 1000 + 40 * x1 - 25 * x2 + 10 * (kind == "b") + rng.normal(scale=5, size=n)
    lines = ["x1,x2,kind,y"] + [f"{a:.4f},{b:.4f},{k},{v:.3f}" for a, b, k, v in
                                zip(x1, x2, kind, y)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def table_data(path, target="y", **options):
    return {"kind": "table", "path": str(path), "target": target,
            "groups": options.get("groups", []), "drop": options.get("drop", []),
            "task": options.get("task")}


def test_the_data_record_holds_the_absolute_path_and_the_files_sha256(tmp_path, monkeypatch):
    path = regression_csv(tmp_path / "r.csv")
    monkeypatch.chdir(tmp_path)
    config = make_config("tabular-tiny", data=table_data("r.csv", groups=["kind"]))
    record = config["data"]
    assert record == {"source": "user", "kind": "table", "path": path,
                      "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                      "target": "y", "groups": ["kind"], "drop": [], "task": None}


def test_a_table_recipe_without_a_table_is_refused_in_one_line():
    with pytest.raises(RunError, match=r"--data PATH .* --target COL") as err:
        make_config("tabular")
    assert "\n" not in str(err.value)


def test_batch_size_and_epochs_follow_the_tables_size():
    """Hand-computed: 354 rows -> batches of 35 (11 a pass) -> ceil(300 / 11) = 28 epochs;
    28,943 rows -> 256 a batch (114 a pass) -> ceil(300 / 114) = 3 -> at least 4 epochs."""
    def settled(n_train, **hp):
        data = TaskData({"train": range(n_train)})
        return TABLE.settle_hyperparameters({"batch_size": None, "epochs": None, **hp}, data)

    assert settled(354) == {"batch_size": 35, "epochs": 28}
    assert settled(28_943) == {"batch_size": AUTO_MAX_BATCH, "epochs": AUTO_MIN_EPOCHS}
    assert settled(40) == {"batch_size": 16, "epochs": math.ceil(AUTO_STEPS / 3)}
    assert settled(354, epochs=2, batch_size=7) == {"batch_size": 7, "epochs": 2}  # as asked


def test_the_wilson_interval_the_recipe_reports_by_hand():
    # 0 of 10: high = z^2 / (n + z^2) = 3.8415 / 13.8415
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2), rel=1e-12))


def test_regression_metrics_against_numpy_float64():
    rng = np.random.default_rng(3)
    y = rng.normal(50, 10, size=40)
    pred = y + rng.normal(0, 3, size=40)
    got = regression_metrics(pred, y)
    err = pred - y
    assert got["test_mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    assert got["test_rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-12)
    r2 = 1 - np.sum(err ** 2) / np.sum((y - y.mean()) ** 2)
    assert got["test_r2"] == pytest.approx(r2, rel=1e-12)
    assert regression_metrics(y.copy(), y)["test_r2"] == 1.0


def test_regression_run_predicts_in_the_targets_units_and_reports_numpy_metrics(tmp_path):
    path = regression_csv(tmp_path / "r.csv")
    config = make_config("tabular-tiny", data=table_data(path), epochs=15)
    run_dir, metrics = start_run(config, out_dir=str(tmp_path / "runs"), progress=False,
                                 verbose=False)
    run = load_finished_run(run_dir)  # the saved weights, rebuilt from config.json
    x, y = (t.data for t in run.splits["test"].tensors)
    with_units = run.model(Tensor(x)).data.astype(np.float64)[:, 0]  # (N, 1) -> (N,)
    y = y.astype(np.float64)
    err = with_units - y
    assert metrics["test_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-5)
    assert metrics["test_rmse"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-5)
    assert metrics["test_r2"] == pytest.approx(
        1 - (err ** 2).sum() / ((y - y.mean()) ** 2).sum(), rel=1e-5)
    # the loss is in units of the training std: mean((pred - y)^2) / std^2
    train_y = run.splits["train"].tensors[1].data.astype(np.float64)
    assert metrics["test_loss"] == pytest.approx((err ** 2).mean() / train_y.var(), rel=1e-4)
    assert metrics["mean_rmse"] == pytest.approx(np.sqrt(((y - train_y.mean()) ** 2).mean()))
    # a linear target with noise of 5 around a std of ~50: learned, in its own units
    assert metrics["test_r2"] > 0.8 and metrics["test_rmse"] < 0.5 * metrics["mean_rmse"]
    assert np.isfinite(with_units).all() and abs(with_units.mean() - 1000) < 30


def test_the_regression_model_starts_at_the_training_mean(tmp_path):
    """TargetScale: a network whose last layer outputs 0 predicts the training mean."""
    path = regression_csv(tmp_path / "r.csv")
    config = make_config("tabular-tiny", data=table_data(path))
    data = TABLE.load(config)
    hp = TABLE.settle_hyperparameters(dict(config["hyperparameters"]), data)
    model = RECIPES["tabular-tiny"].build(hp, 10, data).model
    last = model[-2]  # the Linear before TargetScale
    last.weight.data[:] = 0
    last.bias.data[:] = 0
    out = predict(model, data.splits["test"])
    train_y = data.splits["train"].tensors[1].data.astype(np.float64)
    np.testing.assert_allclose(out, train_y.mean(), rtol=1e-6)
    saved = model.state_dict()  # the mean and std go with the weights
    assert float(saved["4.mean"].data[0]) == pytest.approx(train_y.mean(), rel=1e-6)
    assert float(saved["4.std"].data[0]) == pytest.approx(train_y.std(), rel=1e-6)


def test_a_changed_table_is_refused_on_resume(tmp_path):
    path = regression_csv(tmp_path / "r.csv")
    config = make_config("tabular-tiny", data=table_data(path))
    run_dir, _ = start_run(config, out_dir=str(tmp_path / "runs"), progress=False,
                           verbose=False)
    os.remove(os.path.join(run_dir, "metrics.json"))  # as if it stopped after its checkpoint
    with open(path, "a") as f:
        f.write("0.1,0.2,a,1000.0\n")
    with pytest.raises(RunError, match="has changed since the run was made") as err:
        resume_run(run_dir, progress=False, verbose=False)
    assert "\n" not in str(err.value)
    with pytest.raises(RunError, match="has changed"):
        load_finished_run(run_dir)  # the audit and the report rebuild the run the same way


@pytest.mark.parametrize("key, value, fragment", [
    ("groups", "kind", "data.groups"),
    ("path", "r.csv", "absolute path"),
    ("task", "clustering", "data.task"),
    ("sha256", None, "data.sha256"),
])
def test_a_crafted_data_record_is_a_one_line_bad_file_error(tmp_path, key, value, fragment):
    config = make_config("tabular-tiny", data=table_data(regression_csv(tmp_path / "r.csv")))
    config["data"][key] = value
    with pytest.raises(BadFileError, match=fragment) as err:
        TABLE.load(config)
    assert "\n" not in str(err.value)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("targets, loss_fn, shows_accuracy", [
    (np.arange(32) % 2, F.cross_entropy, True),
    (np.linspace(0, 1, 32, dtype=np.float32), lambda out, y: F.mse_loss(out[:, 0], y), False),
])
def test_the_progress_bar_shows_accuracy_only_for_class_labels(monkeypatch, targets, loss_fn,
                                                               shows_accuracy):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    model = nn.Linear(3, 2)
    loader = DataLoader(TensorDataset(x, targets), batch_size=8)
    Trainer(model, optim.SGD(model.parameters(), lr=0.1), loss_fn, loader, epochs=1,
            progress=True, verbose=False).fit()
    assert "loss=" in terminal.getvalue()
    assert ("acc=" in terminal.getvalue()) == shows_accuracy
