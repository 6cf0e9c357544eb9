"""Run directories and resume checkpoints.

A run directory ``runs/<name>/`` holds:

    config.json         recipe, hyperparameters, seed, data source, layerwise version
    history.jsonl       one JSON line per finished epoch
    best.safetensors    weights at the best validation score so far
    last.safetensors    resume checkpoint: model weights and optimizer tensors
    last.json           resume checkpoint: everything else (RNG, loaders, scheduler, counters)
    model.safetensors   final weights, written when training ends
    metrics.json        the task's metrics (test_accuracy for images; val nats per token and
                        per character for language models), train_seconds, params, ...
    tokenizer.json      text recipes: the tokenizer, written at the start
    sample.txt          language models: a seeded sample from the final weights

The two resume files must always describe the same step. Both carry the step number, and
they are committed like a journal: the new weights go to ``last.next.safetensors``, then
``last.json`` is atomically replaced (the commit point), then the new weights are renamed
over ``last.safetensors``. A crash before the commit leaves the old pair; a crash after it
leaves a pending file with the committed step, which ``load_resume_state`` renames into place.
A pending file of any other step was never committed; ``discard_uncommitted`` removes it, with
the temporary files of atomic writes that a killed process left (see layerwise.train.rundir).

Also in the directory: ``run.lock`` (the pid of the process training it; see RunLock),
``emissions.csv`` (one row per training session) and, from ``layerwise report``, the model
card (``card.json``, ``card.html``). Every file name read from last.json must resolve inside
the run directory.
"""

import json
import os
import re
import time

from layerwise.serialization import (
    flatten_optimizer_state, load, load_with_metadata, save, unflatten_optimizer_state,
    write_text_atomic,
)
from layerwise.errors import RunError  # noqa: F401  (re-exported: callers import it here)
from layerwise.train.callbacks import Callback
from layerwise.train.rundir import remove_stale_temps, run_path

RESUME_JSON = "last.json"
RESUME_WEIGHTS = "last.safetensors"
_PENDING_WEIGHTS = "last.next.safetensors"
_FORMAT = "layerwise-resume-1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def load_run_weights(model, weights):
    """Load a finished run's weights file into ``model`` (built from the run's config) and
    switch it to eval mode; a file that does not fit the model is a RunError."""
    try:
        model.load_state_dict(load(weights))
    except (KeyError, ValueError, RuntimeError) as err:
        raise RunError(f"{weights} does not fit the run's config: {_first_problem(err)}") \
            from None
    model.eval()
    return model


_MAX_REASON_CHARS = 240  # a mismatch lists every key; one line must stay readable


def _first_problem(err):
    """The first line of ``err`` that says what is wrong: load_state_dict's message opens
    with a header ending in ':' and lists the problems on the lines below it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [repr(err)]
    reason = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[:_MAX_REASON_CHARS - 3] + "..."
    return reason


# --- run directories ------------------------------------------------------------------------


def create_run_dir(out_dir, name, explicit=False):
    """Make a new, empty run directory under ``out_dir``; never reuse an existing one.

    ``explicit``: the user chose ``name`` and it must be free. Otherwise a taken name gets
    ``-2``, ``-3``, ... appended. ``os.mkdir`` fails if the directory exists, so two runs
    started at the same moment cannot share one.
    """
    if not _NAME.match(name):
        raise RunError(
            f"run name {name!r} is not allowed; use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create output directory {out_dir!r}: {err.strerror}") from None
    if explicit:
        path = os.path.join(out_dir, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            raise RunError(
                f"run directory {path} already exists; choose another --name, or continue it "
                f"with --resume {path}"
            ) from None
        return path
    k = 1
    while True:
        path = os.path.join(out_dir, name if k == 1 else f"{name}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            k += 1


def write_json(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} is missing; is {os.path.dirname(path) or '.'} a layerwise run "
                       f"directory? ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON ({what}): {err}") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise RunError(f"{path} cannot be read ({what}): {err}") from None


# --- resume checkpoints ---------------------------------------------------------------------


def save_resume_state(run_dir, state):
    """Write a Trainer.state_dict() as last.safetensors + last.json (see the module doc)."""
    step = state["global_step"]
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    optim_tensors, optim_json = flatten_optimizer_state(state["optimizer"], prefix="optimizer.")
    tensors.update(optim_tensors)
    record = {"format": _FORMAT, "step": step, "weights": RESUME_WEIGHTS,
              "model_keys": list(state["model"]), "optimizer": optim_json}
    record.update({k: v for k, v in state.items() if k not in ("model", "optimizer")})

    pending = os.path.join(run_dir, _PENDING_WEIGHTS)
    save(tensors, pending, metadata={"format": _FORMAT, "step": step})
    write_text_atomic(os.path.join(run_dir, RESUME_JSON), json.dumps(record))  # the commit
    os.replace(pending, os.path.join(run_dir, RESUME_WEIGHTS))


def has_resume_state(run_dir):
    return os.path.isfile(os.path.join(run_dir, RESUME_JSON))


def load_resume_state(run_dir):
    """The Trainer state saved by ``save_resume_state``, checked for consistency."""
    json_path = os.path.join(run_dir, RESUME_JSON)
    if not os.path.isfile(json_path):
        raise RunError(
            f"{run_dir} has no resume checkpoint ({RESUME_JSON}); it stopped before its first "
            "checkpoint, so start it again instead"
        )
    record = read_json(json_path, "the resume checkpoint")
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise RunError(f"{json_path} is not a layerwise resume checkpoint ({_FORMAT})")
    _check_record(record, json_path)
    step = record["step"]
    weights_path = _resume_weights_path(run_dir, record["weights"], json_path)
    tensors = _load_weights_for_step(weights_path, os.path.join(run_dir, _PENDING_WEIGHTS), step)

    missing = [k for k in record["model_keys"] if f"model.{k}" not in tensors]
    if missing:
        raise RunError(f"{weights_path} lacks model weights {missing[:3]} listed in {json_path}")
    state = {k: v for k, v in record.items()
             if k not in ("format", "step", "weights", "model_keys", "optimizer")}
    state["model"] = {k: tensors[f"model.{k}"] for k in record["model_keys"]}
    try:
        state["optimizer"] = unflatten_optimizer_state(tensors, record["optimizer"])
    except ValueError as err:
        raise RunError(f"{weights_path}: {err}") from None
    return state


def _check_record(record, json_path):
    """The entries load_resume_state reads, with the types save_resume_state gives them."""
    expected = {"step": int, "weights": str, "model_keys": list, "optimizer": dict}
    for key, kind in expected.items():
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RunError(f"{json_path}: {key!r} is {value!r}, expected a {kind.__name__}; "
                           "the resume checkpoint is damaged")


def _resume_weights_path(run_dir, value, json_path):
    """The weights file last.json names: inside the run, and the run's own last.safetensors
    (the journal renames the pending weights onto that file and no other)."""
    path = run_path(run_dir, value, json_path)
    if path != os.path.join(os.path.realpath(run_dir), RESUME_WEIGHTS):
        raise RunError(f"{json_path} names the weights file {value!r}, which resolves to "
                       f"{path}; a layerwise resume checkpoint keeps its weights in the run's "
                       f"own {RESUME_WEIGHTS}")
    return os.path.join(run_dir, RESUME_WEIGHTS)


def discard_uncommitted(run_dir):
    """Remove what an interrupted writer left that no committed state refers to: a pending
    weights file whose step last.json does not describe, and the temporary files of atomic
    writes. Call it with the run locked, after ``load_resume_state`` (which renames a pending
    file that completes the commit into place first). Returns the names removed."""
    removed = remove_stale_temps(run_dir)
    pending = os.path.join(run_dir, _PENDING_WEIGHTS)
    if os.path.lexists(pending):
        os.remove(pending)
        removed.append(_PENDING_WEIGHTS)
    return removed


def _load_weights_for_step(weights_path, pending_path, step):
    """Load the weights saved at ``step``, finishing an interrupted commit if there was one."""
    saved_step, problem = None, None
    try:
        tensors, metadata = load_with_metadata(weights_path)
        saved_step = metadata.get("step")
    except (FileNotFoundError, ValueError) as err:
        tensors, problem = None, str(err)
    if saved_step == step:
        return tensors
    if os.path.isfile(pending_path) and not os.path.islink(pending_path):
        # The crash fell between the commit of last.json and the final rename.
        try:
            pending, metadata = load_with_metadata(pending_path)
        except ValueError:
            pending, metadata = None, {}
        if metadata.get("step") == step:
            os.replace(pending_path, weights_path)
            return pending
    if problem is not None:
        raise RunError(f"cannot resume: {problem}")
    raise RunError(
        f"cannot resume: {weights_path} holds step {saved_step} but {RESUME_JSON} describes step "
        f"{step}; the two files do not belong together"
    )


class ResumeCheckpoint(Callback):
    """Write the resume checkpoint every ``every`` optimizer steps and at each epoch's end.

    Keep it last in the callback list, so the state it saves includes what the other
    callbacks decided at the end of the epoch. It also carries the training time so far,
    so a resumed run reports the time of both parts.

    ``write=False``: a rank other than 0 of a data-parallel run, which takes part in
    gathering the state (``Trainer.state_dict`` collects every rank's) but leaves the
    files to rank 0.
    """

    def __init__(self, run_dir, every=None, clock=None, write=True):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint every must be a positive number of steps, got {every!r}")
        self.run_dir, self.every, self.write = run_dir, every, write
        self._clock = clock or time.perf_counter
        self.seconds_before = 0.0  # training time of earlier (interrupted) sessions
        self._started = None

    def on_train_begin(self, trainer):
        self._started = self._clock()

    def seconds(self):
        return self.seconds_before + (self._clock() - self._started if self._started else 0.0)

    def on_batch_end(self, trainer, logs):
        if self.every is not None and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_epoch_end(self, trainer, logs):
        self._save(trainer)

    def _save(self, trainer):
        state = trainer.state_dict()
        if self.write:
            save_resume_state(self.run_dir, state)

    def state_dict(self):
        return {"seconds": self.seconds()}

    def load_state_dict(self, state):
        self.seconds_before = float(state["seconds"])
