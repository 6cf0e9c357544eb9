"""The table recipes: an MLP on a table you bring (``layerwise train --data t.csv --target y``).

The table is read and encoded by ``layerwise.data.table_splits`` (numeric columns
standardised, categorical ones one-hot, statistics fitted on the training split). The task,
classification or regression, is read off the target column (or set with ``--task``):

- classification: cross-entropy over one logit per class; the test accuracy is reported
  with its Wilson 95% interval.
- regression: the network's last layer predicts the standardised target, and a fixed
  ``TargetScale`` layer turns that back into the target's units with the training split's
  mean and std (kept as buffers, so the saved weights predict in units). The loss is the
  mean squared error in standard deviations, ``mean(((pred - y) / std)^2)``: about 1 for a
  model that predicts the mean, whatever the target's scale, so one learning rate fits every
  table. The test MAE, RMSE and R^2 are reported in the target's units.

The run's config records the file's absolute path and the SHA-256 of its bytes; a resume, an
audit or a report of the run refuses a file that has changed since.
"""

import math
import os
from itertools import pairwise

from layerwise import nn, optim
from layerwise.autograd import Tensor, no_grad
from layerwise.backend import xp
from layerwise.data import DataLoader, table_splits
from layerwise.data.loader import MAX_INFERENCE_BATCH, evaluation_loader
from layerwise.errors import BadFileError
from layerwise.limits import (
    MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LAYERS, MAX_WIDTH, Int, IntList, check_parameter_count, shown,
)
from layerwise.nn import functional as F
from layerwise.serialization import file_sha256
from layerwise.stats import wilson_interval
from layerwise.train.checkpoint import RunError, read_json, write_json
from layerwise.train.recipes.base import (
    PROBABILITY, TRAINING_SCHEMA, Parts, Task, TaskData, register,
)
from layerwise.train.rundir import run_path

TASKS = ("classification", "regression")

# Batch size and epochs, when a recipe leaves them to the table (null): about ten batches an
# epoch for a small table, 256 rows a batch for a big one; then enough epochs for
# AUTO_STEPS optimizer steps, and at least AUTO_MIN_EPOCHS. Measured over seeds 0-2: Adult
# (28,943 training rows, 4 epochs) reaches test accuracy 0.857 (0.856 at 3 epochs, 0.858 at
# 6); diabetes (354 rows) reaches test R^2 0.22, as least squares does (0.24), and falls to
# 0.16 at twice the steps; breast cancer (455 rows) 0.965 at 200 to 600 steps.
AUTO_BATCHES_PER_EPOCH = 10
AUTO_MIN_BATCH, AUTO_MAX_BATCH = 16, 256
AUTO_STEPS = 300
AUTO_MIN_EPOCHS = 4
TABLE_RECORD = "table.json"  # in the run directory: the table's summary and its copy check


class TableTask(Task):
    """Classification or regression of one column of a user's table from the other columns."""

    kind = "table"
    monitor = "val_loss"  # defined for both tasks; accuracy has no meaning for regression
    data_kinds = ("table",)

    def data_record(self, hparams, data_dir, data=None):
        if data_dir is not None:
            raise RunError("--data-dir is for MNIST IDX files; give a table with --data PATH "
                           "--target COL")
        if data is None:
            raise RunError("the table recipes train on a table you give: --data PATH (CSV, "
                           "TSV or Parquet) --target COL")
        path = os.path.abspath(data["path"])
        return {"source": "user", "kind": "table", "path": path, "sha256": file_sha256(path),
                "target": data["target"], "groups": list(data.get("groups") or []),
                "drop": list(data.get("drop") or []), "task": data.get("task")}

    def load(self, config, run_dir=None):
        record = checked_record(config["data"])
        try:
            digest = file_sha256(record["path"])
        except OSError as err:
            raise RunError(f"cannot read the run's table {record['path']} ({err.strerror or err})"
                           f"; put the file it trained on back at that path") from None
        if digest != record["sha256"]:
            raise RunError(f"the run's table {record['path']} has changed since the run was "
                           f"made (its SHA-256 is {digest[:12]}..., the run recorded "
                           f"{record['sha256'][:12]}...); restore that file, or start a new run")
        splits = table_splits(record["path"], target=record["target"], groups=record["groups"],
                              drop=record["drop"], task=record["task"], seed=config["seed"])
        info = {"kind": "table", "task": splits.task, "num_features": splits.num_features,
                "classes": splits.classes, "summary": splits.summary()}
        if splits.task == "regression":
            info["target_mean"] = splits.info["target_mean"]
            info["target_std"] = splits.info["target_std"]
        if run_dir is not None:  # what the checks before training found, when the run began
            saved = os.path.join(run_dir, TABLE_RECORD)
            if os.path.isfile(saved):
                found = read_json(run_path(run_dir, TABLE_RECORD, "the table recipe"),
                                  "the table's record")
                if isinstance(found, dict) and found.get("split_copies") is not None:
                    info["split_copies"] = found["split_copies"]
        return TaskData(splits, info=info)

    def settle_hyperparameters(self, hparams, data):
        n_train = len(data.splits["train"])
        if hparams["batch_size"] is None:
            hparams["batch_size"] = min(AUTO_MAX_BATCH, max(AUTO_MIN_BATCH,
                                                            n_train // AUTO_BATCHES_PER_EPOCH))
        if hparams["epochs"] is None:
            steps_per_epoch = math.ceil(n_train / hparams["batch_size"])
            hparams["epochs"] = max(AUTO_MIN_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch))
        return hparams

    def save(self, data, run_dir):
        write_json(os.path.join(run_dir, TABLE_RECORD),
                   {"summary": data.info["summary"],
                    "split_copies": data.info.get("split_copies")})

    def finish(self, trainer, parts, data, config, run_dir):
        last = trainer.history[-1] if trainer.history else {}
        test_set = data.splits["test"]
        metrics = {"table": data.info["summary"], "task": data.info["task"],
                   "n_test": len(test_set), "val_loss": last.get("val_loss")}
        if data.info.get("split_copies") is not None:
            metrics["split_copies"] = data.info["split_copies"]
        test = trainer.evaluate(evaluation_loader(test_set))
        metrics["test_loss"] = test["loss"]
        if data.info["task"] == "classification":
            correct = round(test["accuracy"] * len(test_set))
            metrics.update(test_accuracy=test["accuracy"],
                           test_accuracy_ci95=list(wilson_interval(correct, len(test_set))),
                           majority_accuracy=_majority_accuracy(data.splits),
                           val_accuracy=last.get("val_accuracy"))
        else:
            y = test_set.tensors[1].data.astype(xp.float64)
            metrics.update(regression_metrics(predict(parts.model, test_set), y))
            # what predicting the training mean for every row would score: the bar to beat
            metrics["mean_rmse"] = float(xp.sqrt(((y - data.info["target_mean"]) ** 2).mean()))
            metrics["target"] = data.splits.info["target"]
        return metrics

    def summary(self, metrics):
        lines = [f"table: {metrics['table']}"]
        cost = f"{metrics['train_seconds']:.1f} s, {metrics['params']:,} parameters"
        n = f"{metrics['n_test']:,} test rows"
        if metrics["task"] == "classification":
            low, high = metrics["test_accuracy_ci95"]
            lines.append(f"test accuracy: {metrics['test_accuracy']:.4f}  (95% CI {low:.4f}-"
                         f"{high:.4f} over {n}; the majority class alone "
                         f"{metrics['majority_accuracy']:.4f}; {cost})")
        else:
            lines.append(f"test MAE {metrics['test_mae']:.4g}, RMSE {metrics['test_rmse']:.4g}"
                         f", R^2 {metrics['test_r2']:.4f}  (in units of '{metrics['target']}' "
                         f"over {n}; predicting the training mean: RMSE "
                         f"{metrics['mean_rmse']:.4g}; {cost})")
        return lines


TABLE = TableTask()


def checked_record(record):
    """The config's "data" entry of a table run, each field of the type it must have."""
    where = "the run's config.json: data"
    expected = {"path": str, "sha256": str, "target": str, "groups": list, "drop": list}
    for key, kind in expected.items():
        if not isinstance(record.get(key), kind):
            raise BadFileError(f"{where}.{key} is {shown(record.get(key))}; expected a "
                               f"{kind.__name__}")
    for key in ("groups", "drop"):
        if not all(isinstance(name, str) for name in record[key]):
            raise BadFileError(f"{where}.{key} is {shown(record[key])}; expected a list of "
                               f"column names")
    if record.get("task") not in (None, *TASKS):
        raise BadFileError(f"{where}.task is {shown(record.get('task'))}; expected null, "
                           f"{' or '.join(TASKS)}")
    if not os.path.isabs(record["path"]):
        raise BadFileError(f"{where}.path is {shown(record['path'])}; expected an absolute path")
    return record


def _majority_accuracy(splits):
    """The test accuracy of always predicting the training split's most frequent class."""
    counts = splits.info["class_counts"]
    majority = max(range(len(counts["train"])), key=lambda k: counts["train"][k])
    return counts["test"][majority] / max(sum(counts["test"]), 1)


def predict(model, dataset, batch_size=MAX_INFERENCE_BATCH):
    """(N,) float64 predictions of a regression model, in eval mode and without a graph."""
    was_training = model.training
    model.eval()
    x = dataset.tensors[0].data
    out = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(Tensor(x[start:start + batch_size])).data.reshape(-1))
    model.train(was_training)
    return xp.concatenate(out).astype(xp.float64)


def regression_metrics(pred, y):
    """Test MAE, RMSE and R^2 (1 - SS_res / SS_tot about the test mean, as scikit-learn's
    r2_score) of predictions ``pred`` against targets ``y``, both (N,) float64."""
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"test_mae": float(xp.abs(err).mean()), "test_rmse": float(xp.sqrt((err ** 2).mean())),
            "test_r2": r2}


# --- the model ------------------------------------------------------------------------------


class TargetScale(nn.Module):
    """(B, 1) standardised predictions -> (B, 1) in the target's units: z * std + mean.

    ``mean`` and ``std`` are the training split's, fixed (buffers, not parameters): the
    layers before it learn a target of mean 0 and std 1 whatever the table's units.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", Tensor(xp.asarray([mean], dtype=xp.float32)))
        self.register_buffer("std", Tensor(xp.asarray([std if std > 0 else 1.0],
                                                      dtype=xp.float32)))

    def forward(self, z):
        return z * self.std + self.mean


def tabular_mlp(n_features, hidden, n_out, dropout, target_scale=None):
    """Linear-GELU-Dropout blocks, then a Linear to ``n_out`` (and a TargetScale for a
    regression): (B, n_features) -> (B, n_out)."""
    layers, n_in = [], n_features
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.GELU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    if target_scale is not None:
        layers.append(TargetScale(*target_scale))
    return nn.Sequential(*layers)


def _tabular_parts(hp, steps_per_epoch, data):
    info = data.info
    classification = info["task"] == "classification"
    n_out = len(info["classes"]) if classification else 1
    sizes = [info["num_features"], *hp["hidden"], n_out]
    count = sum(n_in * n_out + n_out for n_in, n_out in pairwise(sizes))
    check_parameter_count(count, f"an MLP with {info['num_features']:,} features and "
                                 f"hidden={shown(hp['hidden'])}")
    scale = None if classification else (info["target_mean"], info["target_std"])
    model = tabular_mlp(info["num_features"], hp["hidden"], n_out, hp["dropout"], scale)
    optimizer = optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    total = hp["epochs"] * steps_per_epoch
    scheduler = optim.lr_scheduler.warmup_cosine(
        optimizer, warmup_steps=min(hp["warmup_steps"], total - 1), total_steps=total)
    if classification:
        smoothing = hp["label_smoothing"]

        def loss_fn(logits, labels):  # (B, K), (B,)
            return F.cross_entropy(logits, labels, label_smoothing=smoothing)
    else:
        std = scale[1] if scale[1] > 0 else 1.0

        def loss_fn(pred, y):  # (B, 1) -> (B,), in units of the target's std
            return F.mse_loss(pred.reshape(-1) / std, y / std)
    return Parts(model, optimizer, loss_fn, scheduler)


_TABULAR_DEFAULTS = {
    "epochs": None, "batch_size": None, "lr": 2e-3, "weight_decay": 0.01, "hidden": [256, 128],
    "dropout": 0.1, "label_smoothing": 0.0, "warmup_steps": 50, "patience": None,
}
_TABULAR_SCHEMA = {
    **TRAINING_SCHEMA,
    "epochs": Int(1, MAX_EPOCHS, none=f"enough for {AUTO_STEPS} steps, at least "
                                       f"{AUTO_MIN_EPOCHS}"),
    "batch_size": Int(1, MAX_BATCH_SIZE, none=f"a tenth of the training rows, "
                                              f"{AUTO_MIN_BATCH} to {AUTO_MAX_BATCH}"),
    "hidden": IntList(1, MAX_WIDTH, max_len=MAX_LAYERS),
    "dropout": PROBABILITY, "label_smoothing": PROBABILITY,
}


@register("tabular", "MLP of two GELU layers (256, 128) with dropout on your table (--data "
                     "--target): AdamW, warm-up and cosine lr, about 300 steps; "
                     "classification or regression",
          _TABULAR_DEFAULTS, TABLE, _TABULAR_SCHEMA)
def build_tabular(hp, steps_per_epoch, data):
    return _tabular_parts(hp, steps_per_epoch, data)


@register("tabular-tiny", "MLP with one GELU layer of 32 on your table for 2 epochs: a smoke "
                          "test in seconds",
          {**_TABULAR_DEFAULTS, "epochs": 2, "hidden": [32], "warmup_steps": 5},
          TABLE, _TABULAR_SCHEMA)
def build_tabular_tiny(hp, steps_per_epoch, data):
    return _tabular_parts(hp, steps_per_epoch, data)
