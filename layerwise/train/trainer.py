"""Trainer: the training loop, written out once, with everything a run needs to be trusted.

    trainer = Trainer(model, optimizer, F.cross_entropy, train_loader, val_loader, epochs=10)
    history = trainer.fit()      # one dict per epoch: train/val loss and accuracy, lr

Each epoch trains over ``train_loader`` (a tqdm bar with loss, accuracy and samples/s),
then evaluates ``val_loader``. ``forward(model, inputs)`` says how to call a model whose
output is not the loss function's input (a language model returning ``(logits, state)``). The scheduler, if any, steps once per batch. Callbacks add
early stopping, best-model checkpoints, the history file and resume checkpoints.

A NaN or Inf loss or gradient stops training with a FloatingPointError naming the epoch,
the step, the first parameter whose gradient went bad, and the first op that produced a
non-finite value (found by re-running the batch under ``lw.autograd.detect_anomaly()``).

``state_dict()`` holds everything the loop needs to continue bit for bit: model, optimizer,
scheduler, the global random generator, the loaders' positions, counters, the partial
sums of the current epoch, the history and each callback's state.

Data-parallel (a model wrapped in ``nn.parallel.DistributedDataParallel``, one Trainer per
rank): each loader that reads one rank's share of its data (a sampler with ``num_replicas``
above 1) has its epoch's loss and accuracy summed over the ranks, so every rank sees the
same metrics and makes the same decisions; the train sampler is told each epoch
(``set_epoch``); checkpoints hold the wrapped module's weights (they load without the
wrapper) and every rank's generator and partial sums, which ``state_dict()`` gathers, so
every rank calls it at the same point.
"""

import sys
import time

from tqdm import tqdm

from layerwise import backend, distributed
from layerwise.autograd import detect_anomaly, no_grad
from layerwise.backend import xp
from layerwise.nn import functional as F
from layerwise.nn.parallel import DistributedDataParallel
from layerwise.nn.utils import clip_grad_norm_


class Trainer:
    def __init__(self, model, optimizer, loss_fn=F.cross_entropy, train_loader=None,
                 val_loader=None, epochs=1, scheduler=None, callbacks=(), clip_grad_norm=None,
                 batch_transform=None, progress=True, verbose=True, forward=None):
        if train_loader is None:
            raise ValueError("Trainer needs a train_loader")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(
                f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}"
            )
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.epochs = epochs
        self.scheduler = scheduler
        self.callbacks = list(callbacks)
        self.clip_grad_norm = clip_grad_norm
        # (inputs, targets) -> (inputs, targets), applied to training batches only:
        # augmentation. It should draw from the global generator, which checkpoints carry.
        self.batch_transform = batch_transform
        # (model, inputs) -> outputs for loss_fn(outputs, targets); model(inputs) by default.
        self.forward = forward if forward is not None else _call
        self.progress = progress
        self.verbose = verbose
        # The ranks whose replicas this one trains with (each holds its own generator).
        self._replicas = (distributed.world_size()
                          if isinstance(model, DistributedDataParallel) else 1)

        self.history = []          # one dict per finished epoch
        self.epoch = 0             # epochs finished
        self.global_step = 0       # optimizer steps taken
        self.batch_in_epoch = 0    # batches done in the current epoch
        self.should_stop = False
        self._sums = _EpochSums()  # the current epoch's running loss and accuracy

    @property
    def unwrapped_model(self):
        """The model whose weights checkpoints hold: the module inside a
        DistributedDataParallel wrapper, so that weights trained on N processes load on one."""
        if isinstance(self.model, DistributedDataParallel):
            return self.model.module
        return self.model

    # --- the loop -------------------------------------------------------------------------
    def fit(self):
        """Train until ``epochs`` are done or a callback stops it; returns the history."""
        self._notify("on_train_begin", self)
        while self.epoch < self.epochs and not self.should_stop:
            self._train_epoch()
            self._end_epoch()
        self._notify("on_train_end", self)
        return self.history

    def _train_epoch(self):
        self.model.train()
        n_batches = len(self.train_loader)
        if self.batch_in_epoch >= n_batches:
            return  # resumed after the last batch, before validation: nothing left to train
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)  # a new shuffle of each rank's share (PyTorch's rule)
        bar = tqdm(total=n_batches, initial=self.batch_in_epoch, unit="batch", leave=True,
                   desc=f"epoch {self.epoch + 1}/{self.epochs}", file=sys.stderr,
                   disable=not self.progress or not sys.stderr.isatty(), dynamic_ncols=True)
        start, seen_here = time.perf_counter(), 0
        for inputs, targets in self.train_loader:
            loss = self._train_step(inputs, targets)
            seen_here += len(targets)
            if not bar.disable:
                rate = seen_here / max(time.perf_counter() - start, 1e-9)
                postfix = {"loss": f"{self._sums.mean_loss():.4f}"}  # a dict keeps this order
                if self._sums.has_accuracy:  # not for a regression's float targets
                    postfix["acc"] = f"{self._sums.accuracy():.4f}"
                postfix["samples/s"] = f"{rate:,.0f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            self._notify("on_batch_end", self,
                         {"epoch": self.epoch + 1, "step": self.global_step, "loss": loss})
        bar.close()

    def _train_step(self, inputs, targets):
        if self.batch_transform is not None:
            inputs, targets = self.batch_transform(inputs, targets)
        rng_state = backend.get_rng_state()  # to replay the batch exactly if it goes bad
        self.optimizer.zero_grad()
        outputs = self.forward(self.model, inputs)
        loss = self.loss_fn(outputs, targets)
        loss.backward()
        self._check_finite(loss, inputs, targets, rng_state)
        if self.clip_grad_norm is not None:
            clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1
        self.batch_in_epoch += 1
        loss_value = float(loss.data)
        self._sums.add(loss_value, outputs.data, targets.data)
        return loss_value

    def _end_epoch(self):
        self.epoch += 1
        self.batch_in_epoch = 0
        row = {"epoch": self.epoch, "step": self.global_step}
        row.update(_across_ranks(self._sums, self.train_loader).metrics("train"))
        self._sums = _EpochSums()
        if self.val_loader is not None:
            row.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        self.history.append(row)
        if self.verbose:
            shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in row.items() if k not in ("epoch", "step"))
            tqdm.write(f"epoch {self.epoch}/{self.epochs}  {shown}", file=sys.stderr)
        self._notify("on_epoch_end", self, row)

    def evaluate(self, loader):
        """{'loss', 'accuracy'} of the model on ``loader``, in eval mode, without a graph."""
        was_training = self.model.training
        self.model.eval()
        sums = _EpochSums()
        with no_grad():
            for inputs, targets in loader:
                outputs = self.forward(self.model, inputs)
                sums.add(float(self.loss_fn(outputs, targets).data), outputs.data, targets.data)
        self.model.train(was_training)
        return _across_ranks(sums, loader).metrics()

    def _notify(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    # --- the NaN/Inf guard ----------------------------------------------------------------
    def _check_finite(self, loss, inputs, targets, rng_state):
        loss_ok = bool(xp.isfinite(loss.data).all())
        bad_param = None
        for name, p in self.unwrapped_model.named_parameters():
            if p.grad is not None and not xp.isfinite(p.grad.data).all():
                bad_param = name
                break
        if loss_ok and bad_param is None:
            return
        where = (f"at epoch {self.epoch + 1}, step {self.global_step + 1} "
                 f"(batch {self.batch_in_epoch + 1} of {len(self.train_loader)})")
        what = f"loss is {float(loss.data)}" if not loss_ok else "loss is finite"
        grad = (f"first non-finite gradient: {bad_param!r}" if bad_param is not None
                else "all gradients are finite")
        op = self._find_bad_op(inputs, targets, rng_state)
        raise FloatingPointError(f"non-finite values {where}: {what}; {grad}; {op}")

    def _find_bad_op(self, inputs, targets, rng_state):
        """Replay the batch (same dropout draws) under anomaly detection to name the op."""
        after = backend.get_rng_state()
        backend.set_rng_state(rng_state)
        self.optimizer.zero_grad()
        try:
            with detect_anomaly():
                self.loss_fn(self.forward(self.model, inputs), targets).backward()
        except FloatingPointError as err:
            return f"anomaly detection: {err}"
        finally:
            backend.set_rng_state(after)
            self.optimizer.zero_grad()
        return "anomaly detection found no non-finite op when replaying the batch"

    # --- resuming -------------------------------------------------------------------------
    def state_dict(self):
        """Everything needed to continue this run exactly; Tensors in 'model' and 'optimizer'.
        Data-parallel, also 'world_size' and 'ranks': each rank's generator and partial sums
        (gathered: every rank calls this at the same point)."""
        state = {
            "model": self.unwrapped_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": backend.get_rng_state(),
            "train_loader": self.train_loader.state_dict(),
            "val_loader": None if self.val_loader is None else self.val_loader.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_sums": self._sums.state_dict(),
            "should_stop": self.should_stop,
            "history": [dict(row) for row in self.history],
            "callbacks": {key: c.state_dict() for key, c in self._keyed_callbacks()},
        }
        if self._replicas > 1:
            state["world_size"] = self._replicas
            state["ranks"] = distributed.all_gather_json(self._own_state())
        return state

    def _own_state(self):
        """What differs from rank to rank: the generator and the epoch's partial sums."""
        return {"rng": backend.get_rng_state(), "epoch_sums": self._sums.state_dict()}

    def load_state_dict(self, state):
        saved_world = state.get("world_size", 1)
        if saved_world != self._replicas:
            raise ValueError(
                f"the checkpoint was written by a run on {saved_world} process(es) and this "
                f"one has {self._replicas}; resume it on {saved_world} (--nproc {saved_world} "
                f"or mpiexec -n {saved_world})")
        own = _own_entry(state, self._replicas)
        saved_callbacks = state["callbacks"]
        for key, callback in self._keyed_callbacks():
            # A callback without state (a logger) may come and go between sessions; one with
            # state (early stopping's patience) must find its saved state.
            if key not in saved_callbacks and callback.state_dict():
                raise ValueError(
                    f"resume state has no state for callback {key!r} (it has "
                    f"{sorted(saved_callbacks)}); build the trainer as the saved run was built"
                )
        self.unwrapped_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        backend.set_rng_state(own["rng"])
        self.train_loader.load_state_dict(state["train_loader"])
        if self.val_loader is not None and state["val_loader"] is not None:
            self.val_loader.load_state_dict(state["val_loader"])
        self.epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self._sums = _EpochSums.from_state(own["epoch_sums"])
        self.should_stop = state["should_stop"]
        self.history = [dict(row) for row in state["history"]]
        for key, callback in self._keyed_callbacks():
            if key in saved_callbacks:
                callback.load_state_dict(saved_callbacks[key])

    def _keyed_callbacks(self):
        """(key, callback): the class name, numbered from the second of a kind on."""
        counts = {}
        for callback in self.callbacks:
            name = type(callback).__name__
            counts[name] = counts.get(name, 0) + 1
            yield (name if counts[name] == 1 else f"{name}-{counts[name]}"), callback


def _call(model, inputs):
    return model(inputs)


def _own_entry(state, replicas):
    """This rank's generator and partial sums in a checkpoint of ``replicas`` ranks."""
    if replicas == 1:
        return state
    ranks = state.get("ranks")
    if not isinstance(ranks, list) or len(ranks) != replicas \
            or not all(isinstance(entry, dict) for entry in ranks):
        raise ValueError(f"the checkpoint's 'ranks' should hold the state of each of its "
                         f"{replicas} ranks, got {str(ranks)[:60]}")
    return ranks[distributed.rank()]


def _across_ranks(sums, loader):
    """``sums`` over every rank when ``loader`` reads one rank's share of its data (its
    sampler has num_replicas above 1): the same metrics on every rank, as one process
    reading all of the data would find them."""
    replicas = getattr(getattr(loader, "sampler", None), "num_replicas", 1)
    if replicas == 1:
        return sums
    totals = xp.asarray([sums.loss_sum, sums.correct, sums.seen, sums.has_accuracy],
                        dtype=xp.float64)
    distributed.all_reduce(totals)
    loss_sum, correct, seen, with_accuracy = totals.tolist()
    return _EpochSums(loss_sum, int(correct), int(seen), has_accuracy=with_accuracy == replicas)


def _class_axis(outputs, targets):
    """The axis of ``outputs`` holding class scores for integer ``targets``, or None.

    Scores (B, C) for labels (B,), (B, T, V) for tokens (B, T): the last axis; PyTorch's
    (B, C, d1, ...) for labels (B, d1, ...): axis 1. Anything else has no accuracy.
    """
    if targets.dtype.kind not in "iu" or targets.ndim == 0 or outputs.ndim != targets.ndim + 1:
        return None
    if outputs.shape[:-1] == targets.shape:
        return -1
    if outputs.shape[:1] + outputs.shape[2:] == targets.shape:
        return 1
    return None


class _EpochSums:
    """Target-weighted loss and correct-prediction counts over one pass.

    Integer targets count one each, except negative ones, which a loss ignores (the
    ignore_index of -100 or GPT's -1): so the mean loss of a pass is the mean over every
    predicted token of a language model, or over the masked tokens of a masked LM.
    """

    def __init__(self, loss_sum=0.0, correct=0, seen=0, has_accuracy=True):
        self.loss_sum, self.correct, self.seen = loss_sum, correct, seen
        self.has_accuracy = has_accuracy

    def add(self, mean_loss, outputs, targets):
        axis = _class_axis(outputs, targets)
        if axis is not None:
            counted = targets >= 0
            n = int(counted.sum())
            self.correct += int(((outputs.argmax(axis=axis) == targets) & counted).sum())
        else:
            n = int(targets.shape[0]) if targets.ndim else 1
            self.has_accuracy = False
        if n:  # a batch with every target ignored has a NaN mean and no weight
            self.loss_sum += mean_loss * n
            self.seen += n

    def mean_loss(self):
        return self.loss_sum / max(self.seen, 1)

    def accuracy(self):
        return self.correct / max(self.seen, 1)

    def metrics(self, prefix=None):
        out = {"loss": self.mean_loss()}
        if self.has_accuracy:
            out["accuracy"] = self.accuracy()
        return out if prefix is None else {f"{prefix}_{k}": v for k, v in out.items()}

    def state_dict(self):
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen,
                "has_accuracy": self.has_accuracy}

    @classmethod
    def from_state(cls, state):
        return cls(**state)
