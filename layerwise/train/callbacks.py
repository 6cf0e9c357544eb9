"""Callbacks: what runs around the training loop without being the training loop.

A callback overrides any of the hooks below; the Trainer calls them in list order. A
callback that keeps state across epochs (a best value, a patience counter) returns it from
``state_dict()`` as JSON-able values, so a resumed run decides exactly as the original would.

    on_train_begin(trainer)
    on_batch_end(trainer, logs)    logs: step, epoch, loss (this batch)
    on_epoch_end(trainer, logs)    logs: the epoch's row of the history
    on_train_end(trainer)

Setting ``trainer.should_stop = True`` in ``on_epoch_end`` ends training after that epoch.
"""

import json
import math
import os

from layerwise.serialization import save, write_text_atomic
from layerwise.train.rundir import append_text


class Callback:
    def on_train_begin(self, trainer):
        pass

    def on_batch_end(self, trainer, logs):
        pass

    def on_epoch_end(self, trainer, logs):
        pass

    def on_train_end(self, trainer):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _Monitor:
    """Tracks the best value of one metric: lower is better for losses, higher otherwise."""

    def __init__(self, monitor, mode="auto", min_delta=0.0):
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best = None

    def value(self, logs):
        if self.monitor not in logs:
            raise KeyError(
                f"cannot monitor {self.monitor!r}: the epoch logs have {sorted(logs)}; "
                "val_* metrics need a val_loader"
            )
        return float(logs[self.monitor])

    def improved(self, value):
        """Whether ``value`` beats the best so far by more than min_delta (and record it)."""
        if math.isnan(value):
            return False
        if self.best is None:
            better = True
        elif self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best = value
        return better


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs in a row."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto"):
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int (epochs), got {patience!r}")
        self.tracker = _Monitor(monitor, mode, min_delta)
        self.patience = patience
        self.bad_epochs = 0
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, logs):
        if self.tracker.improved(self.tracker.value(logs)):
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.stopped_epoch = logs["epoch"]
            trainer.should_stop = True

    def state_dict(self):
        return {"best": self.tracker.best, "bad_epochs": self.bad_epochs,
                "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state):
        self.tracker.best = state["best"]
        self.bad_epochs = state["bad_epochs"]
        self.stopped_epoch = state["stopped_epoch"]


class BestCheckpoint(Callback):
    """Save the model's weights to ``path`` whenever ``monitor`` reaches a new best."""

    def __init__(self, path, monitor="val_loss", mode="auto"):
        self.path = os.fspath(path)
        self.tracker = _Monitor(monitor, mode)
        self.best_epoch = None

    def on_epoch_end(self, trainer, logs):
        value = self.tracker.value(logs)
        if self.tracker.improved(value):
            self.best_epoch = logs["epoch"]
            metadata = {"epoch": logs["epoch"], "monitor": self.tracker.monitor, "value": value}
            save(trainer.unwrapped_model.state_dict(), self.path, metadata=metadata)

    def state_dict(self):
        return {"best": self.tracker.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.tracker.best = state["best"]
        self.best_epoch = state["best_epoch"]


class HistoryLogger(Callback):
    """Append each epoch's row of the history to a JSON-lines file.

    On a resumed run the file is first rewritten from the trainer's history, which drops any
    rows an interrupted run appended after its last resume checkpoint.
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def on_train_begin(self, trainer):
        write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in trainer.history))

    def on_epoch_end(self, trainer, logs):
        append_text(self.path, json.dumps(logs) + "\n")  # never through a planted link
