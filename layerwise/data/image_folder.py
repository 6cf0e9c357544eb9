"""Folders of images in torchvision's layout: one subfolder per class, its images inside.

    folder = ImageFolder("photos/", image_size=32)      # photos/cat/1.png, photos/dog/a.jpg, ...
    folder.classes, folder.class_to_idx                 # ['cat', 'dog'], {'cat': 0, 'dog': 1}
    folder.samples                                      # [('photos/cat/1.png', 0), ...]
    image, label = folder[0]                            # (C, 32, 32) float32 in [0, 1], int64
    splits = image_folder_splits("photos/", 32)         # {'train', 'val', 'test'}, stratified
    splits.classes, splits.paths["test"]                # what an audit names examples by

The classes are the sorted names of the root's subfolders (hidden ones left out). A class's
images are the .png, .jpg and .jpeg files under its folder (searched recursively, sorted by
path); other files are skipped, as torchvision skips them, with one warning that counts them.

Every image is decoded once, when the folder is read, by Pillow: EXIF orientation applied,
converted to grey (one channel) when every file of the folder is grey, else to RGB (alpha and
palettes dropped), and resized to image_size x image_size by Pillow's bilinear filter, which
antialiases when it shrinks (torchvision's ``Resize((S, S))`` on a PIL image); the aspect ratio
is not kept. A 16-bit grey PNG keeps its depth (its values divided by 65,535).

All of it is held in one float32 array (N, C, S, S), so this is for small data sets: a folder
whose array would take more than ``MAX_IMAGE_FOLDER_BYTES`` (2 GB: about 160,000 RGB images at
32 x 32; CIFAR-10's 60,000 take 0.74 GB) is refused before any image is decoded.
"""

import hashlib
import io
import math
import os
import warnings

from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp
from layerwise.data.dataset import Dataset, TensorDataset, stratified_split
from layerwise.data.kinds import IMAGE_SUFFIXES, visible_names
from layerwise.errors import BadFileError
from layerwise.limits import (
    DEFAULT_IMAGE_SIZE, MAX_IMAGE_FOLDER_BYTES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, shown,
)

# What Pillow may decode a file as: a GIF or TIFF renamed .png is refused, not guessed at.
PIL_FORMATS = ("PNG", "JPEG")  # JPEG includes MPO, the multi-picture JPEG of many cameras
# Pillow modes of one channel: the folder stays grey only when every file is one of them.
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # a 16-bit grey PNG opens as these
_SIXTEEN_BIT_MAX = 65535
_QUOTED_REASON = 80  # characters of Pillow's message quoted in an error
SPLITS = ("train", "val", "test")


def _is_image_name(name):
    return os.path.splitext(name.lower())[1] in IMAGE_SUFFIXES


def find_classes(root):
    """(classes, class_to_idx): the sorted subfolder names of ``root``; BadFileError (one
    line) for a missing root, a file, an empty folder, or a folder without subfolders."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise BadFileError(f"image folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise BadFileError(f"{root!r} is a file; give a folder with one subfolder of images "
                           f"per class (e.g. {os.path.join(root, 'cat', '1.png')!r})")
    entries = visible_names(os.listdir(root))
    if not entries:
        raise BadFileError(f"image folder {root!r} is empty; give one subfolder of images per "
                           f"class (e.g. {os.path.join(root, 'cat', '1.png')!r})")
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if not classes:
        raise BadFileError(f"image folder {root!r} has no class subfolders (it holds "
                           f"{shown(', '.join(entries))}); put each class's images in a "
                           f"subfolder named after the class")
    if len(classes) == 1:
        raise BadFileError(f"image folder {root!r} has one class folder ({classes[0]!r}); a "
                           f"classifier needs at least 2 classes, one subfolder each")
    return classes, {name: i for i, name in enumerate(classes)}


def _class_files(folder):
    """(image paths, other file paths) under ``folder``, each sorted, hidden names left out."""
    images, others = [], []
    for here, dirs, files in os.walk(folder):
        dirs[:] = visible_names(dirs)  # walk in sorted order, skipping hidden folders
        for name in visible_names(files):
            (images if _is_image_name(name) else others).append(os.path.join(here, name))
    return sorted(images), sorted(others)


def make_samples(root, class_to_idx):
    """([(path, class index)], [skipped paths]) in class order, then path order; a class
    folder with no images is a BadFileError naming it."""
    samples, skipped = [], []
    for name, index in sorted(class_to_idx.items(), key=lambda item: item[1]):
        folder = os.path.join(root, name)
        images, others = _class_files(folder)
        if not images:
            held = f"it holds {len(others)} other file(s)" if others else "it is empty"
            raise BadFileError(f"class folder {folder!r} holds no images "
                               f"({'/'.join(IMAGE_SUFFIXES)}; {held}); add images of "
                               f"{name!r} or remove the folder")
        samples.extend((path, index) for path in images)
        skipped.extend(others)
    return samples, skipped


def _add_to_fingerprint(digest, root, path, content):
    name = os.path.relpath(path, root).replace(os.sep, "/").encode("utf-8", "surrogateescape")
    digest.update(name + b"\0" + len(content).to_bytes(8, "little"))
    digest.update(content)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def folder_fingerprint(root):
    """SHA-256 (hex) of the folder's images: each relative file name and its bytes, in the
    order of ``samples`` (sorted). Renaming, adding, removing or editing an image changes it;
    files that are not images do not count."""
    _, class_to_idx = find_classes(root)
    samples, _ = make_samples(os.fspath(root), class_to_idx)
    digest = hashlib.sha256()
    for path, _ in samples:
        _add_to_fingerprint(digest, os.fspath(root), path, _read(path))
    return digest.hexdigest()


def _pillow():
    """Pillow's Image module, imported when a folder is read (not by ``import layerwise``:
    it adds 60 ms to every command)."""
    from PIL import Image

    return Image


def _decode_errors():
    # Pillow raises all of these for broken files (SyntaxError from the PNG chunk reader,
    # EOFError and struct errors from short headers).
    return (OSError, ValueError, SyntaxError, EOFError, _pillow().DecompressionBombError)


def _undecodable(path, err):
    if isinstance(err, _pillow().UnidentifiedImageError):  # its message quotes an address
        reason = f"not a {' or '.join(PIL_FORMATS)} image"
    else:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if len(first) > _QUOTED_REASON:
            first = first[:_QUOTED_REASON - 3] + "..."
        reason = f"truncated or corrupt: {first}"
    return BadFileError(f"{path}: cannot decode the image ({reason}); replace or remove the "
                        f"file")


def _header_mode(path):
    """The Pillow mode of an image file, read from its header alone."""
    try:
        with _pillow().open(path, formats=PIL_FORMATS) as im:
            return im.mode
    except _decode_errors() as err:
        raise _undecodable(path, err) from None


def _pixels(im, grey, size):
    """(C, size, size) float32 in [0, 1] of a Pillow image; C = 1 when ``grey``, else 3."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)  # a phone's photo upright, as a viewer shows it
    bilinear = Image.Resampling.BILINEAR
    if im.mode in _SIXTEEN_BIT:  # resized as floats: converting to "L" or "RGB" clips at 255
        wide = Image.fromarray(xp.asarray(im, dtype=xp.float32) / _SIXTEEN_BIT_MAX)  # mode F
        pixels = xp.asarray(wide.resize((size, size), bilinear), dtype=xp.float32)[None]
        return pixels if grey else xp.repeat(pixels, 3, axis=0)  # (C, S, S)
    if not grey and im.mode in ("P", "PA"):  # a palette's transparency goes through RGBA
        im = im.convert("RGBA")
    im = im.convert("L" if grey else "RGB").resize((size, size), bilinear)
    pixels = xp.asarray(im, dtype=xp.float32) / 255  # (S, S) or (S, S, 3)
    return pixels[None] if grey else pixels.transpose(2, 0, 1)  # (C, S, S)


def _decode(path, content, grey, size):
    try:
        with _pillow().open(io.BytesIO(content), formats=PIL_FORMATS) as im:
            im.load()
            return _pixels(im, grey, size)
    except _decode_errors() as err:
        raise _undecodable(path, err) from None


def read_image(path, channels, size):
    """(C, size, size) float32 in [0, 1] of one image file, as a folder's images are read
    (grey for ``channels`` 1, else RGB), and the file's own (width, height)."""
    try:
        with open(path, "rb") as f:
            content = f.read()
        with _pillow().open(io.BytesIO(content), formats=PIL_FORMATS) as im:
            im.load()
            return _pixels(im, channels == 1, size), im.size
    except _decode_errors() as err:
        if isinstance(err, OSError) and not isinstance(err, _pillow().UnidentifiedImageError) \
                and getattr(err, "errno", None) is not None:
            raise  # the file system's error (missing, a folder, no permission): said as such
        raise _undecodable(path, err) from None


def check_image_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, int) or \
            not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer from {MIN_IMAGE_SIZE} to "
                         f"{MAX_IMAGE_SIZE:,} (pixels a side), got {shown(image_size)}")


class ImageFolder(Dataset):
    """The images of ``root`` (one subfolder per class), decoded and resized at construction.

    ``classes``, ``class_to_idx``, ``samples`` [(path, class index)] and ``targets`` as in
    torchvision; ``images`` float32 (N, C, S, S) in [0, 1]; ``labels`` int64 (N,);
    ``skipped``: the files left out for their suffix; ``sha256``: ``folder_fingerprint`` of the
    bytes that were decoded. ``folder[i]`` is (image (C, S, S), label) as Tensors.
    """

    def __init__(self, root, image_size=DEFAULT_IMAGE_SIZE):
        check_image_size(image_size)
        self.root = os.fspath(root)
        self.image_size = image_size
        self.classes, self.class_to_idx = find_classes(self.root)
        self.samples, self.skipped = make_samples(self.root, self.class_to_idx)
        self.targets = [label for _, label in self.samples]
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} file(s) that are not "
                          f"{'/'.join(IMAGE_SUFFIXES)} images, e.g. {self.skipped[0]!r}",
                          stacklevel=2)
        modes = [_header_mode(path) for path, _ in self.samples]
        self.grey = all(mode in GREY_MODES for mode in modes)
        channels = 1 if self.grey else 3
        n, size = len(self.samples), image_size
        need = n * channels * size * size * 4
        if need > MAX_IMAGE_FOLDER_BYTES:
            raise BadFileError(
                f"image folder {self.root!r}: {n:,} images of {channels} x {size} x {size} "
                f"would take {need / 1e9:.2f} GB as float32, more than MAX_IMAGE_FOLDER_BYTES "
                f"= {MAX_IMAGE_FOLDER_BYTES / 1e9:g} GB; use a smaller --image-size or fewer "
                f"images")
        self.images = xp.empty((n, channels, size, size), dtype=xp.float32)  # (N, C, S, S)
        digest = hashlib.sha256()
        for i, (path, _) in enumerate(self.samples):
            content = _read(path)
            _add_to_fingerprint(digest, self.root, path, content)
            self.images[i] = _decode(path, content, self.grey, size)
        self.labels = xp.asarray(self.targets, dtype=xp.int64)
        self.sha256 = digest.hexdigest()

    @property
    def in_channels(self):
        return self.images.shape[1]

    def __getitem__(self, index):
        return Tensor(self.images[index]), Tensor(self.labels[index])

    def __len__(self):
        return len(self.samples)


class ImageFolderSplits(dict):
    """{'train', 'val', 'test'} TensorDatasets of one image folder, and what an audit needs.

    ``classes``: class names in label order; ``paths[split]``: each example's file, in
    dataset order; ``indices[split]``: its position in ``folder.samples``; ``folder``: the
    ImageFolder (its ``sha256``, ``in_channels``, ``image_size``, ``skipped``).
    """

    def __init__(self, datasets, folder, indices):
        super().__init__(datasets)
        self.folder = folder
        self.indices = indices
        self.paths = {name: [folder.samples[i][0] for i in idx.tolist()]
                      for name, idx in indices.items()}

    @property
    def classes(self):
        return self.folder.classes

    @property
    def input_shape(self):
        return tuple(self.folder.images.shape[1:])  # (C, S, S)


def image_folder_splits(root, image_size=DEFAULT_IMAGE_SIZE, seed=0, fractions=(0.8, 0.1, 0.1)):
    """ImageFolderSplits of ``root``: a stratified split (each class in its share) that
    depends only on the folder's files, ``fractions`` and ``seed``. A folder too small to
    give every split an example is a BadFileError."""
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    folder = ImageFolder(root, image_size)
    parts = stratified_split(folder.labels, fractions, seed=seed)
    for name, idx in zip(SPLITS, parts):
        if len(idx) == 0:
            per_class = math.ceil(1 / min(fractions)) if min(fractions) > 0 else "more"
            shares = "/".join(f"{f:.0%}" for f in fractions)
            raise BadFileError(
                f"image folder {folder.root!r}: {len(folder)} images are too few to split "
                f"{shares} (train/val/test): the {name} split would be empty; add images "
                f"({per_class} per class give every split some of each class)")
    datasets = {name: TensorDataset(folder.images[idx], folder.labels[idx])
                for name, idx in zip(SPLITS, parts)}
    return ImageFolderSplits(datasets, folder, dict(zip(SPLITS, parts)))
