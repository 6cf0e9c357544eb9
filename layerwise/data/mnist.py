"""MNIST from its original IDX files (http://yann.lecun.com/exdb/mnist/), gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dims),
one big-endian uint32 per dim, then the values in row-major order. MNIST uses dtype code
0x08 (unsigned byte): 0x00000801 for label files (N,) and 0x00000803 for images (N, 28, 28).
"""

import gzip
import os
import struct
import zlib

from layerwise.backend import xp
from layerwise.data.dataset import TensorDataset, stratified_split

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_DTYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
                0x0E: "float64"}
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path, ndim=None):
    """The array stored in the IDX file at ``path`` (uint8), gzip detected by its magic bytes.

    ``ndim``, if given, is the number of dims the file must declare (1 for labels, 3 for
    images). Raises ValueError quoting the path for a wrong magic number, a dtype other
    than unsigned byte, or a length that disagrees with the declared dims.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:  # by content, not by name: some mirrors drop or add ".gz"
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{path}: gzip data is corrupt or truncated ({err})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file, {len(raw)} bytes is shorter than the "
                         f"4-byte magic number")
    zero, dtype_code, n_dims = struct.unpack(">HBB", raw[:4])
    magic = int.from_bytes(raw[:4], "big")
    if zero != 0 or n_dims == 0:
        raise ValueError(
            f"{path}: wrong magic number 0x{magic:08X}; an MNIST IDX file starts with "
            f"0x00000801 (labels) or 0x00000803 (images)"
        )
    if dtype_code != _UBYTE:
        name = _DTYPE_NAMES.get(dtype_code, "unknown")
        raise ValueError(
            f"{path}: IDX dtype code 0x{dtype_code:02X} ({name}); only unsigned byte (0x08) "
            f"is supported, as used by MNIST"
        )
    if ndim is not None and n_dims != ndim:
        raise ValueError(
            f"{path}: magic number 0x{magic:08X} declares {n_dims} dims; expected "
            f"0x{0x800 + ndim:08X} ({ndim} dims)"
        )
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX file, {len(raw)} bytes but the header of "
                         f"{n_dims} dims needs {header}")
    shape = struct.unpack(f">{n_dims}I", raw[4:header])
    count = 1
    for d in shape:
        count *= d
    body = len(raw) - header
    if body < count:
        raise ValueError(f"{path}: truncated IDX file, dims {shape} need {count} bytes of data "
                         f"but only {body} follow the header")
    if body > count:
        raise ValueError(f"{path}: IDX file has {body - count} bytes beyond the {count} that "
                         f"dims {shape} declare; the header or the file is wrong")
    return xp.frombuffer(raw, dtype=xp.uint8, count=count, offset=header).reshape(shape).copy()


def _find(data_dir, stem):
    """The existing file among ``stem``, ``stem.gz`` and the ``a.idx3-ubyte`` spelling."""
    dotted = stem.replace("-idx", ".idx")  # e.g. Kaggle's train-images.idx3-ubyte
    candidates = [stem, stem + ".gz", dotted, dotted + ".gz"]
    for name in candidates:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"no {stem} in {data_dir!r}: looked for {candidates}; found {sorted(os.listdir(data_dir))}"
    )


def mnist_file_names(split):
    """The standard (images, labels) file names of a split, without the optional '.gz'."""
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def load_mnist(data_dir, split="train"):
    """(images, labels) of an MNIST split: float32 (N, 1, 28, 28) in [0, 1] and int64 (N,).

    ``data_dir`` holds the standard files (``train-images-idx3-ubyte``, ``...-labels-idx1-
    ubyte``, ``t10k-...``), each optionally gzipped.
    """
    data_dir = os.fspath(data_dir)
    image_stem, label_stem = mnist_file_names(split)
    if not os.path.isdir(data_dir):
        expected = [n for s in ("train", "test") for n in mnist_file_names(s)]
        raise FileNotFoundError(
            f"MNIST directory {data_dir!r} does not exist; it should hold {expected} "
            f"(each optionally ending in .gz)"
        )
    image_path, label_path = _find(data_dir, image_stem), _find(data_dir, label_stem)
    images = read_idx(image_path, ndim=3)  # (N, H, W)
    labels = read_idx(label_path, ndim=1)  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST {split} split disagrees with itself: {image_path} has {images.shape[0]} "
            f"images but {label_path} has {labels.shape[0]} labels"
        )
    images = (images.astype(xp.float32) / 255.0)[:, None]  # (N, H, W) -> (N, 1, H, W)
    return images, labels.astype(xp.int64)


def mnist_splits(data_dir, seed=0, val_fraction=0.1):
    """{'train', 'val', 'test'} TensorDatasets; val is a stratified slice of the train files."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_x, train_y = load_mnist(data_dir, "train")
    test_x, test_y = load_mnist(data_dir, "test")
    train_idx, val_idx = stratified_split(train_y, (1 - val_fraction, val_fraction), seed=seed)
    return {
        "train": TensorDataset(train_x[train_idx], train_y[train_idx]),
        "val": TensorDataset(train_x[val_idx], train_y[val_idx]),
        "test": TensorDataset(test_x, test_y),
    }
