"""The Trainer: NaN guard, determinism, exact in-process resume, callbacks, clipping, schedule."""

import json

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn, optim
from layerwise.data import DataLoader, TensorDataset
from layerwise.nn import functional as F
from layerwise.train import (
    BestCheckpoint, Callback, EarlyStopping, HistoryLogger, ResumeCheckpoint, Trainer,
    load_resume_state,
)
from layerwise.train.recipes import random_shift


def _blobs(n=192, seed=0):
    """Three Gaussian blobs drawn as 1x6x6 'images' with an empty 1-pixel border."""
    centres = np.random.default_rng(1234).standard_normal((3, 16)) * 2  # same in every split
    g = np.random.default_rng(seed)
    labels = g.integers(0, 3, size=n)
    inner = centres[labels] + g.standard_normal((n, 16))
    images = np.zeros((n, 1, 6, 6), np.float32)
    images[:, 0, 1:5, 1:5] = inner.reshape(n, 4, 4)
    return TensorDataset(images, labels.astype(np.int64))


def _setup(seed=0, epochs=3, callbacks=(), shift=True, **kwargs):
    """A small model with dropout, AdamW, a per-batch schedule and shift augmentation."""
    lw.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(32, 3))
    opt = optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.01)
    train = DataLoader(_blobs(), batch_size=20, shuffle=True, seed=seed + 1)  # 10 batches, last 12
    val = DataLoader(_blobs(60, seed=1), batch_size=25)
    sched = optim.lr_scheduler.warmup_cosine(opt, warmup_steps=4, total_steps=epochs * len(train))
    return Trainer(model, opt, F.cross_entropy, train, val, epochs=epochs, scheduler=sched,
                   callbacks=list(callbacks), batch_transform=random_shift(1) if shift else None,
                   progress=False, verbose=False, **kwargs)


def _weights(model):
    return {k: v.data.copy() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype
        assert a[k].tobytes() == b[k].tobytes(), k


def test_fit_learns_and_records_a_history_row_per_epoch():
    trainer = _setup(epochs=4)
    history = trainer.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert [row["step"] for row in history] == [10, 20, 30, 40]
    for row in history:
        assert set(row) == {"epoch", "step", "train_loss", "train_accuracy", "val_loss",
                            "val_accuracy", "lr"}
    assert history[-1]["val_accuracy"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_evaluate_matches_a_numpy_reference():
    trainer = _setup()
    model = trainer.model
    ds = _blobs(60, seed=1)
    x, y = ds.tensors[0].data.reshape(60, -1).astype(np.float64), ds.tensors[1].data
    w1, b1, w2, b2 = (p.data.astype(np.float64) for p in model.parameters())
    logits = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2  # dropout is off in eval mode
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    got = trainer.evaluate(trainer.val_loader)
    assert got["loss"] == pytest.approx(-logp[np.arange(60), y].mean(), rel=1e-5)
    assert got["accuracy"] == np.mean(logits.argmax(1) == y)
    assert model.training  # evaluate restores the mode it found


def test_same_seed_gives_identical_runs_and_another_seed_does_not():
    # Built and fitted one after another: dropout and shifts draw from the global generator.
    runs = []
    for seed in (3, 3, 4):
        trainer = _setup(seed=seed)
        runs.append((trainer, trainer.fit()))
    (a, ha), (b, hb), (c, hc) = runs
    assert ha == hb
    _assert_same_weights(_weights(a.model), _weights(b.model))
    assert ha != hc


class _Crash(Exception):
    pass


class _CrashAt(Callback):
    """Raise at a given step, after its batch ('batch') or before its epoch's end is saved."""

    def __init__(self, step, phase):
        self.step, self.phase = step, phase

    def on_batch_end(self, trainer, logs):
        if self.phase == "batch" and trainer.global_step == self.step:
            raise _Crash

    def on_epoch_end(self, trainer, logs):
        if self.phase == "epoch" and trainer.global_step == self.step:
            raise _Crash


@pytest.mark.parametrize("every, crash_step, phase, saved_step, batch_in_epoch", [
    (3, 7, "batch", 6, 6),     # mid-epoch 1
    (5, 10, "epoch", 10, 10),  # after the epoch's last batch, before its validation
    (4, 13, "batch", 12, 2),   # mid-epoch 2, after an end-of-epoch checkpoint
])
def test_resume_from_a_checkpoint_ends_bit_for_bit_like_an_uninterrupted_run(
        tmp_path, every, crash_step, phase, saved_step, batch_in_epoch):
    full = _setup(callbacks=[EarlyStopping(patience=5)])
    full.fit()

    run = tmp_path / "run"
    run.mkdir()
    crash = _CrashAt(crash_step, phase)
    checkpoints = ResumeCheckpoint(str(run), every=every)
    callbacks = [EarlyStopping(patience=5)]
    callbacks += [crash, checkpoints] if phase == "epoch" else [checkpoints, crash]
    with pytest.raises(_Crash):
        _setup(callbacks=callbacks).fit()
    record = json.loads((run / "last.json").read_text())
    assert (record["step"], record["batch_in_epoch"]) == (saved_step, batch_in_epoch)

    # Another seed: everything it would change must come from the checkpoint instead.
    resumed = _setup(seed=99, callbacks=[EarlyStopping(patience=5),
                                         ResumeCheckpoint(str(run), every=every)])
    resumed.load_state_dict(load_resume_state(str(run)))
    assert resumed.global_step == saved_step
    resumed.fit()
    assert resumed.history == full.history
    _assert_same_weights(_weights(resumed.model), _weights(full.model))
    groups = [t.optimizer.state_dict()["param_groups"] for t in (resumed, full)]
    assert groups[0] == groups[1]


def test_resume_requires_the_state_of_stateful_callbacks(tmp_path):
    trainer = _setup(callbacks=[ResumeCheckpoint(str(tmp_path))])
    trainer.fit()
    other = _setup(callbacks=[EarlyStopping(patience=2), ResumeCheckpoint(str(tmp_path))])
    with pytest.raises(ValueError, match="no state for callback 'EarlyStopping'"):
        other.load_state_dict(load_resume_state(str(tmp_path)))


class _Snapshots(Callback):
    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, trainer, logs):
        self.by_epoch[logs["epoch"]] = _weights(trainer.model)


def test_best_checkpoint_holds_the_weights_of_the_best_epoch(tmp_path):
    snaps = _Snapshots()
    path = tmp_path / "best.safetensors"
    trainer = _setup(epochs=4, callbacks=[snaps, BestCheckpoint(path, monitor="val_loss")])
    history = trainer.fit()
    losses = [row["val_loss"] for row in history]
    best_epoch = int(np.argmin(losses)) + 1
    tensors, meta = lw.serialization.load_with_metadata(path)
    assert meta["epoch"] == best_epoch and meta["value"] == min(losses)
    _assert_same_weights({k: v.data for k, v in tensors.items()}, snaps.by_epoch[best_epoch])


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    trainer = _setup(epochs=10, callbacks=[EarlyStopping(monitor="val_loss", patience=2)])
    for group in trainer.optimizer.param_groups:  # lr 0: the weights and val loss never change
        group["initial_lr"] = group["lr"] = 0.0
    trainer.scheduler = None
    history = trainer.fit()
    assert len(history) == 3  # epoch 1 sets the best, epochs 2 and 3 fail to beat it
    assert trainer.callbacks[0].stopped_epoch == 3


def test_early_stopping_on_accuracy_watches_for_increases():
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)

    class T:
        should_stop = False

    t = T()
    for epoch, acc in enumerate([0.5, 0.6, 0.7], start=1):
        stopper.on_epoch_end(t, {"epoch": epoch, "val_accuracy": acc})
        assert not t.should_stop
    stopper.on_epoch_end(t, {"epoch": 4, "val_accuracy": 0.7})
    assert t.should_stop and stopper.stopped_epoch == 4


def test_history_logger_writes_the_history_as_json_lines(tmp_path):
    path = tmp_path / "history.jsonl"
    trainer = _setup(callbacks=[HistoryLogger(path)])
    history = trainer.fit()
    assert [json.loads(line) for line in path.read_text().splitlines()] == history


def test_gradient_clipping_bounds_the_update():
    lw.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    before = np.concatenate([p.data.ravel() for p in model.parameters()])
    loader = DataLoader(_blobs(20), batch_size=20)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=1.0), F.cross_entropy, loader,
                      epochs=1, clip_grad_norm=1e-3, progress=False, verbose=False)
    trainer.fit()
    after = np.concatenate([p.data.ravel() for p in model.parameters()])
    # SGD moves by lr * grad, and the clipped gradient has norm 1e-3 (the raw one is far larger)
    assert np.linalg.norm(after.astype(np.float64) - before) == pytest.approx(1e-3, rel=1e-3)


def test_scheduler_steps_once_per_batch():
    lw.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loader = DataLoader(_blobs(60), batch_size=20)  # 3 batches an epoch
    trainer = Trainer(model, opt, F.cross_entropy, loader, epochs=2, scheduler=sched,
                      progress=False, verbose=False)
    history = trainer.fit()
    assert [row["lr"] for row in history] == [0.1 * 0.5**3, 0.1 * 0.5**6]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own inf/nan warnings
def test_nan_guard_names_epoch_step_parameter_and_op():
    trainer = _setup(shift=False)
    trainer.model[1].weight.data[0, 0] = np.inf  # the first Linear now outputs +-inf
    with pytest.raises(FloatingPointError) as err:
        trainer.fit()
    message = str(err.value)
    assert "epoch 1, step 1" in message
    assert "'1.weight'" in message  # the first parameter (named_parameters order) gone bad
    assert "LinearFunction" in message and "forward" in message  # from detect_anomaly
    assert trainer.global_step == 0  # no step was taken with the bad gradient


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_guard_catches_an_infinite_gradient_under_a_finite_loss():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
            self.scale = nn.Parameter(lw.zeros(1))

        def forward(self, x):
            return self.body(x) + self.scale.sqrt()  # sqrt(0) = 0, but d sqrt/dx at 0 is inf

    lw.manual_seed(0)
    model = Scaled()
    loader = DataLoader(_blobs(40), batch_size=20)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, loader,
                      progress=False, verbose=False)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit()
    message = str(err.value)
    assert "loss is finite" in message and "'scale'" in message
    assert "Sqrt" in message and "backward" in message


def test_random_shift_is_a_zero_filled_roll():
    images = np.zeros((8, 2, 7, 7), np.float32)
    images[:, :, 2:5, 2:5] = np.random.default_rng(0).random((8, 2, 3, 3))  # empty 2-px border
    lw.manual_seed(5)
    dy, dx = lw.backend.rng().integers(0, 5, size=(2, 8))
    lw.manual_seed(5)
    out, labels = random_shift(2)(lw.tensor(images), "labels")
    assert labels == "labels"
    for i in range(8):
        expected = np.roll(images[i], (2 - dy[i], 2 - dx[i]), axis=(1, 2))
        np.testing.assert_array_equal(out.data[i], expected)
    assert len({(a, b) for a, b in zip(dy, dx)}) > 1  # the draws do vary per image


def test_trainer_rejects_bad_settings():
    trainer = _setup()
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        Trainer(trainer.model, trainer.optimizer, train_loader=trainer.train_loader, epochs=0)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        Trainer(trainer.model, trainer.optimizer, train_loader=trainer.train_loader,
                clip_grad_norm=-1)
    with pytest.raises(KeyError, match="val_accuracy"):
        EarlyStopping(monitor="val_accuracy").on_epoch_end(trainer, {"epoch": 1, "train_loss": 1.0})
