"""IDX reading: small files written by hand with struct.pack, gzipped and raw, and their errors."""

import gzip
import struct

import numpy as np
import pytest

from layerwise.data import load_mnist, mnist_splits, read_idx


def idx_bytes(array, dtype_code=0x08):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, dtype_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path, data, gz):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(directory, n_train=40, n_test=12, gz=True, seed=0):
    """A directory of MNIST-named IDX files with random 28x28 images and balanced labels."""
    rng = np.random.default_rng(seed)
    directory.mkdir(exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write(directory / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gz)
        write(directory / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    # Names lie on purpose: gzip is detected by its magic bytes, not by ".gz".
    img_path = write(tmp_path / "images.bin", idx_bytes(images), gz)
    lab_path = write(tmp_path / "labels.gz", idx_bytes(labels), gz)
    np.testing.assert_array_equal(read_idx(img_path), images)
    np.testing.assert_array_equal(read_idx(lab_path), labels)
    assert read_idx(img_path).dtype == np.uint8


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    data = idx_bytes(np.ones((4, 28, 28)))
    path = write(tmp_path / "short", data[:-10], gz)
    with pytest.raises(ValueError, match=r"short.*truncated.*3136 bytes.*3126"):
        read_idx(path)
    header_only = write(tmp_path / "hdr", data[:6], gz)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(header_only)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28))  # incompressible
    compressed = gzip.compress(idx_bytes(noise))
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="cut.gz.*gzip"):
        read_idx(path)


def test_wrong_magic_and_dtype(tmp_path):
    good = idx_bytes(np.ones(5))
    bad_magic = write(tmp_path / "magic", b"\x12\x34" + good[2:], False)
    with pytest.raises(ValueError, match=r"magic.*0x12340801.*0x00000801"):
        read_idx(bad_magic)
    float_idx = write(tmp_path / "float", good[:2] + b"\x0d" + good[3:], False)
    with pytest.raises(ValueError, match=r"float.*0x0D.*float32"):
        read_idx(float_idx)
    with pytest.raises(ValueError, match="declares 1 dims; expected 0x00000803"):
        read_idx(write(tmp_path / "labels", good, False), ndim=3)


def test_trailing_bytes(tmp_path):
    path = write(tmp_path / "long", idx_bytes(np.ones(5)) + b"\x00", False)
    with pytest.raises(ValueError, match="1 bytes beyond"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    truth = fake_mnist(tmp_path / "mnist", gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = load_mnist(tmp_path / "mnist", split)
        raw_images, raw_labels = truth[prefix]
        assert images.shape == (len(raw_images), 1, 28, 28) and images.dtype == np.float32
        assert labels.dtype == np.int64
        np.testing.assert_allclose(images[:, 0] * 255.0, raw_images, atol=1e-4)
        np.testing.assert_array_equal(labels, raw_labels)
        assert 0.0 <= images.min() and images.max() <= 1.0


def test_missing_directory_names_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*train-images-idx3-ubyte.*t10k"):
        load_mnist(missing)


def test_missing_file_in_directory(tmp_path):
    fake_mnist(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path / "m", "test")


def test_count_mismatch(tmp_path):
    fake_mnist(tmp_path / "m", gz=False)
    write(tmp_path / "m" / "train-labels-idx1-ubyte", idx_bytes(np.zeros(39)), False)
    with pytest.raises(ValueError, match="40 images but .* 39 labels"):
        load_mnist(tmp_path / "m", "train")


def test_bad_split_name(tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test', got 'val'"):
        load_mnist(tmp_path, "val")


def test_mnist_splits(tmp_path):
    truth = fake_mnist(tmp_path / "m", n_train=100, n_test=20)
    splits = mnist_splits(tmp_path / "m", seed=0, val_fraction=0.1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 90, "val": 10, "test": 20}
    val_labels = splits["val"].tensors[1].numpy()
    np.testing.assert_array_equal(np.bincount(val_labels, minlength=10), np.ones(10))
    # Train and val together are exactly the train files' images.
    train_x = np.concatenate([splits["train"].tensors[0].numpy(), splits["val"].tensors[0].numpy()])
    got = np.sort((train_x[:, 0] * 255).round().astype(np.uint8).reshape(100, -1), axis=0)
    want = np.sort(truth["train"][0].reshape(100, -1), axis=0)
    np.testing.assert_array_equal(got, want)
