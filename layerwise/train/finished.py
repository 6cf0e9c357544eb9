"""A finished run read back: its config, recipe, model with the final weights, and its data.

    run = load_finished_run("runs/mlp-20260101-120000")
    run.model(x)                 # eval mode, model.safetensors loaded
    run.splits["test"]           # the splits the run made, rebuilt from config.json's seed

The config is held to a new run's schemas before anything is built (a crafted ``n_layer``
must not reach the allocator), and every problem is a one-line RunError naming the file.
"""

import json
import os
from dataclasses import dataclass, field

from layerwise.backend import get_rng_state, set_rng_state
from layerwise.errors import RunError
from layerwise.train.checkpoint import load_run_weights, read_json
from layerwise.train.recipes import TaskData, check_run_config

FINAL_WEIGHTS = "model.safetensors"
_HISTORY_QUOTE = 40  # bytes of a bad history line shown in the error


@dataclass
class FinishedRun:
    run_dir: str
    config: dict
    recipe: object
    model: object
    splits: dict
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    tokenizer: object = None
    info: dict = field(default_factory=dict)  # TaskData.info: input shape, classes, ...

    @property
    def kind(self):
        return self.recipe.task.kind


def finished_config(run_dir):
    """(config, recipe, path of the final weights) of a finished run, checked."""
    if not os.path.isdir(run_dir):
        what = " (that is a file)" if os.path.exists(run_dir) else ""
        raise RunError(f"no run directory {run_dir!r}{what}")
    config_path = os.path.join(run_dir, "config.json")
    config = read_json(config_path, "the run's config")
    recipe = check_run_config(config, config_path)
    weights = os.path.join(run_dir, FINAL_WEIGHTS)
    if not os.path.isfile(weights):
        raise RunError(f"{run_dir} has no {FINAL_WEIGHTS}: the run has not finished; "
                       f"continue it with `layerwise train --resume {run_dir}`")
    return config, recipe, weights


def load_finished_run(run_dir):
    """The run in ``run_dir`` rebuilt: its recipe's model with the final weights (eval mode),
    its data splits and tokenizer as the run made them, its metrics and history."""
    config, recipe, weights = finished_config(run_dir)
    state = get_rng_state()  # building a model draws initial weights; leave the caller's stream
    try:
        data = recipe.task.load(config, run_dir)
        hp = recipe.task.settle_hyperparameters(dict(config["hyperparameters"]), data)
        steps = max(1, len(data.splits["train"]) // hp.get("batch_size", 1))
        model = recipe.build(hp, steps, data).model
    finally:
        set_rng_state(state)
    load_run_weights(model, weights)
    metrics, history = {}, []
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        metrics = read_json(os.path.join(run_dir, "metrics.json"), "the run's metrics")
    history_path = os.path.join(run_dir, "history.jsonl")
    if os.path.isfile(history_path):
        history = read_history(history_path)
    return FinishedRun(run_dir, config, recipe, model, data.splits, metrics, history,
                       data.tokenizer, data.info)


def load_model_only(run_dir):
    """The run's model with its final weights, built without its data where the task can
    say what the model needs from the config alone (``Task.model_info``): a command that
    runs the model on one input need not build the splits. ``splits`` is then empty."""
    config, recipe, weights = finished_config(run_dir)
    info = recipe.task.model_info(config)
    if info is None:
        return load_finished_run(run_dir)
    state = get_rng_state()
    try:
        data = TaskData({}, info=info)
        hp = recipe.task.settle_hyperparameters(dict(config["hyperparameters"]), data)
        model = recipe.build(hp, 1, data).model
    finally:
        set_rng_state(state)
    load_run_weights(model, weights)
    return FinishedRun(run_dir, config, recipe, model, {}, info=info)


def read_history(path):
    """The epochs of history.jsonl, one JSON object a line; anything else is a RunError."""
    history = []
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 fails in json.loads
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.strip())
            except ValueError as err:  # JSONDecodeError or UnicodeDecodeError
                raise RunError(f"{path}, line {number}, is not valid JSON: {err}") from None
            if not isinstance(record, dict):
                shown = line.strip()[:_HISTORY_QUOTE].decode("utf-8", "replace")
                raise RunError(f"{path}, line {number}: expected a JSON object (one epoch), "
                               f"got {shown!r}")
            history.append(record)
    return history
