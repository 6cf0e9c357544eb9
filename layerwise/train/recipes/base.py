"""What every recipe is made of: its parts, its task, the registry and the checks of its
hyperparameters against the schema it declares (``layerwise.limits``)."""

from dataclasses import dataclass, field
from typing import Callable

from layerwise import nn, optim
from layerwise.errors import BadFileError
from layerwise.limits import (
    MAX_BATCH_SIZE, MAX_EPOCHS, MAX_INTENDED_USE_CHARS, MAX_SEED, MAX_TRAIN_STEPS, Int, Real,
    SettingError, Text, check_settings, shown,
)
from layerwise.train.checkpoint import RunError

DEFAULT_RECIPE = "mlp"


@dataclass
class Parts:
    """What a builder returns: everything the Trainer needs besides the data loaders."""

    model: nn.Module
    optimizer: optim.Optimizer
    loss_fn: Callable
    scheduler: object = None
    batch_transform: Callable = None  # training-only augmentation, drawing from lw's generator
    forward: Callable = None  # (model, inputs) -> loss_fn's input; model(inputs) if None
    clip_grad_norm: float = None


@dataclass
class TaskData:
    """What a task loads for a run: its datasets and what else the run needs or reports."""

    splits: dict  # 'train', 'val' and maybe 'test' datasets
    tokenizer: object = None
    info: dict = field(default_factory=dict)


class Task:
    """How a family of recipes gets its data and reports a finished run.

    ``load(config, run_dir)`` is called before the run directory exists (so bad data fails
    first) with ``run_dir=None``, and with the directory when resuming, where it should read
    back what ``save`` wrote there (a tokenizer) rather than rebuild it.
    """

    kind = "task"
    monitor = "val_loss"  # what best.safetensors keeps the best of
    data_kinds = ()  # the kinds of a user's data (layerwise.data.kinds) it trains on

    def data_record(self, hparams, data_dir, data=None):
        """The config's "data" entry: where the data comes from. ``data``: a user's data as
        {"kind", "path", ...options} (``train --data``), or None for the task's own."""
        raise NotImplementedError

    def load(self, config, run_dir=None):
        raise NotImplementedError

    def settle_hyperparameters(self, hparams, data):
        """``hparams`` with the values its recipe leaves to the data (null in its defaults,
        such as a table recipe's batch size) chosen from the loaded ``data``; the run's
        config.json records what this returns. Unchanged by default."""
        return hparams

    def model_info(self, config):
        """What the recipe's builder needs of the data (``TaskData.info``), from the run's
        config alone; None when only loading the data can tell (the default)."""
        return None

    def save(self, data, run_dir):
        """Write what the run needs beside its weights (nothing by default)."""

    def finish(self, trainer, parts, data, config, run_dir):
        """The task's metrics of the trained model: a dict for metrics.json."""
        raise NotImplementedError

    def summary(self, metrics):
        """Lines the command prints at the end of a run."""
        raise NotImplementedError


class HyperparameterError(RunError, ValueError):
    """A hyperparameter of the wrong type, out of its range, or at odds with another (one
    line naming the key and value); ``key`` names it, or is None for a cross-check."""

    key = None


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    defaults: dict
    build: Callable
    task: Task
    schema: dict = field(default_factory=dict)  # key -> check (layerwise.limits)
    checks: tuple = ()  # check(hparams) raising SettingError: values that go together


RECIPES = {}


def register(name, description, defaults, task, schema=None, checks=()):
    """Add a recipe; ``schema`` must hold a check for every key of ``defaults``, and the
    defaults must pass it."""
    def decorate(build):
        if name in RECIPES:
            raise ValueError(f"a recipe named {name!r} is already registered")
        unchecked = sorted(set(defaults) - set(schema or {}))
        if unchecked:
            raise ValueError(f"recipe {name!r}: no check in its schema for {unchecked}")
        recipe = Recipe(name, description, dict(defaults), build, task, dict(schema or {}),
                        tuple(checks))
        validate_hyperparameters(recipe, recipe.defaults)
        RECIPES[name] = recipe
        return build

    return decorate


def validate_hyperparameters(recipe, hparams, where=None, error=HyperparameterError):
    """Hold ``hparams`` to the recipe's schema, then to its cross-checks; raise ``error`` (one
    line, prefixed with ``where``) for the first value that cannot be right."""
    check_settings(recipe.schema, hparams, error=error, where=where)
    for check in recipe.checks:
        try:
            check(hparams)
        except SettingError as err:
            prefix = f"{where}: " if where else ""
            raise error(f"{prefix}recipe {recipe.name!r} cannot be built: {err}") from None


def recipe_of(config, path):
    """The recipe that a run's config.json, read from ``path``, names (BadFileError if none)."""
    if not isinstance(config, dict):
        raise BadFileError(f"{path}: expected a JSON object, got {shown(config)}")
    name = config.get("recipe")
    if not isinstance(name, str) or name not in RECIPES:
        raise BadFileError(f"{path}: recipe {shown(name)} is not one of "
                           f"{', '.join(sorted(RECIPES))}")
    return RECIPES[name]


_RUN_SEED = {"seed": Int(0, MAX_SEED)}
_RUN_OPTIONS = {"checkpoint_every": Int(1, MAX_TRAIN_STEPS, none="every epoch")}
_STATED = Text(1, MAX_INTENDED_USE_CHARS)  # the intended use and users a card states


def check_run_config(config, path):
    """The recipe of a run's config.json read back from ``path``, after holding the config to
    the schemas a new run's config passed; anything else is a BadFileError naming the file,
    key and value (a crafted ``"n_layer": 10**12`` must not reach the allocator)."""
    recipe = recipe_of(config, path)
    check_settings(_RUN_SEED, config, error=BadFileError, where=path)
    check_settings(_RUN_OPTIONS, config, error=BadFileError, where=path, required=False)
    stated = {k: _STATED for k in ("intended_use", "intended_users")
              if config.get(k) is not None}
    check_settings(stated, config, error=BadFileError, where=path, required=False)
    hparams = config.get("hyperparameters")
    if not isinstance(hparams, dict):
        raise BadFileError(f"{path}: hyperparameters: expected a JSON object, got "
                           f"{shown(hparams)}")
    validate_hyperparameters(recipe, hparams, where=path, error=BadFileError)
    if not isinstance(config.get("data"), dict):
        raise BadFileError(f"{path}: data: expected a JSON object, got "
                           f"{shown(config.get('data'))}")
    return recipe


def get_recipe(name):
    try:
        return RECIPES[name]
    except KeyError:
        raise RunError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(RECIPES))} "
            "(`layerwise train --list` describes them)"
        ) from None


# What every recipe trains with; the rest of each schema is its model's.
TRAINING_SCHEMA = {
    "epochs": Int(1, MAX_EPOCHS), "batch_size": Int(1, MAX_BATCH_SIZE),
    "lr": Real(0, low_open=True), "weight_decay": Real(0),
    "warmup_steps": Int(0, MAX_TRAIN_STEPS),
    "patience": Int(0, MAX_EPOCHS, none="0 or null: no early stopping"),
}
PROBABILITY = Real(0, 1, high_open=True)  # dropout, label smoothing: 1 would zero everything
