"""ImageFolder and image_folder_splits on small folders the tests write with Pillow.

The pixel reference is Pillow's own decode and bilinear resize of the same file, or, where an
image keeps its size, the hand-written pixel values divided by 255 (or 65,535).
"""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from layerwise.data import DataLoader, ImageFolder, folder_fingerprint, image_folder_splits
from layerwise.data import image_folder as image_folder_module
from layerwise.errors import BadFileError, LayerwiseError

RNG = np.random.default_rng(0)


def save(path, pixels, mode=None):
    """Write ``pixels`` (H, W) or (H, W, C) uint8/uint16 as an image at ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return str(path)


def rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def grey(h, w):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def pillow_reference(path, mode, size):
    """(C, size, size) float64 from Pillow alone: convert, bilinear resize, / 255."""
    with Image.open(path) as im:
        out = np.asarray(im.convert(mode).resize((size, size), Image.Resampling.BILINEAR),
                         np.float64) / 255
    return out[None] if mode == "L" else out.transpose(2, 0, 1)


def one_line(err):
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- reading -------------------------------------------------------------------------------


def test_rgb_png_and_jpeg_of_different_sizes_match_pillow_resize(tmp_path):
    root = tmp_path / "photos"
    files = [save(root / "dog" / "b.png", rgb(20, 13)), save(root / "cat" / "z.jpg", rgb(9, 31)),
             save(root / "cat" / "a.png", rgb(12, 12)), save(root / "dog" / "a.jpeg", rgb(40, 7))]
    folder = ImageFolder(root, image_size=12)
    assert folder.classes == ["cat", "dog"]
    assert folder.class_to_idx == {"cat": 0, "dog": 1}
    expected = [(files[2], 0), (files[1], 0), (files[3], 1), (files[0], 1)]  # class, then name
    assert folder.samples == expected
    assert folder.targets == [0, 0, 1, 1]
    assert folder.images.shape == (4, 3, 12, 12) and folder.images.dtype == np.float32
    for i, (path, label) in enumerate(expected):
        image, target = folder[i]
        np.testing.assert_allclose(image.data, pillow_reference(path, "RGB", 12), atol=1e-7)
        assert int(target.data) == label and target.data.dtype == np.int64
    assert len(folder) == 4


def test_an_all_grey_folder_has_one_channel_and_its_exact_pixels(tmp_path):
    root = tmp_path / "digits"
    a = np.array([[0, 255], [51, 102]], np.uint8)
    b = np.array([[1, 2], [3, 4]], np.uint8)
    save(root / "a" / "0.png", np.kron(a, np.ones((4, 4), np.uint8)))  # 8 x 8, no resampling
    save(root / "b" / "0.png", np.kron(b, np.ones((4, 4), np.uint8)))
    big = save(root / "b" / "1.jpg", grey(30, 17))
    folder = ImageFolder(root, image_size=8)
    assert folder.images.shape == (3, 1, 8, 8)
    np.testing.assert_array_equal(folder.images[0, 0, ::4, ::4], a / np.float32(255))
    np.testing.assert_array_equal(folder.images[1, 0, ::4, ::4], b / np.float32(255))
    np.testing.assert_allclose(folder.images[2], pillow_reference(big, "L", 8), atol=1e-7)


def test_one_colour_file_makes_the_folder_rgb_with_grey_repeated(tmp_path):
    root = tmp_path / "mixed"
    g = grey(8, 8)
    save(root / "a" / "g.png", g)
    save(root / "b" / "c.png", rgb(8, 8))
    folder = ImageFolder(root, image_size=8)
    assert folder.in_channels == 3
    for channel in range(3):
        np.testing.assert_array_equal(folder.images[0, channel], g / np.float32(255))


def test_rgba_palette_and_sixteen_bit_grey(tmp_path):
    root = tmp_path / "modes"
    colour = rgb(8, 8)
    rgba = np.concatenate([colour, np.full((8, 8, 1), 7, np.uint8)], axis=2)
    save(root / "a" / "rgba.png", rgba)  # alpha dropped: the RGB values stay
    palette = save(root / "b" / "p.png", rgb(8, 8), mode="P")
    folder = ImageFolder(root, image_size=8)
    np.testing.assert_array_equal(folder.images[0], colour.transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_allclose(folder.images[1], pillow_reference(palette, "RGB", 8), atol=1e-7)

    deep = tmp_path / "deep"
    wide = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # up to 63,000: past 8 bits
    save(deep / "a" / "w.png", wide)
    save(deep / "b" / "w.png", wide[::-1].copy())
    folder = ImageFolder(deep, image_size=8)
    assert folder.in_channels == 1
    np.testing.assert_allclose(folder.images[0, 0], wide / 65535, rtol=1e-6)
    save(deep / "b" / "colour.png", rgb(8, 8))  # now RGB: the 16-bit one repeated, unclipped
    folder = ImageFolder(deep, image_size=8)
    for channel in range(3):
        np.testing.assert_allclose(folder.images[0, channel], wide / 65535, rtol=1e-6)


def test_non_image_and_hidden_files_are_skipped_with_a_count(tmp_path):
    root = tmp_path / "photos"
    save(root / "a" / "1.png", rgb(8, 8))
    save(root / "b" / "sub" / "2.png", rgb(8, 8))  # class folders are searched recursively
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "labels.csv").write_text("x")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("the root's own files are not classes")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\) that are not .png/.jpg/.jpeg"):
        folder = ImageFolder(root, image_size=8)
    assert [os.path.basename(p) for p, _ in folder.samples] == ["1.png", "2.png"]
    assert sorted(os.path.basename(p) for p in folder.skipped) == ["labels.csv", "notes.txt"]


def test_a_loader_batches_the_folder(tmp_path):
    root = tmp_path / "photos"
    for k in range(3):
        save(root / "a" / f"{k}.png", rgb(8, 8))
        save(root / "b" / f"{k}.png", rgb(8, 8))
    images, labels = next(iter(DataLoader(ImageFolder(root, 8), batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and labels.data.tolist() == [0, 0, 0, 1]


# --- bad folders: one line each, naming the file or folder -----------------------------------


def _corrupt(root):
    path = save(root / "b" / "broken.png", rgb(16, 16))
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2])
    return path


def _not_an_image(root):
    path = root / "b" / "text.jpg"
    path.write_text("this is not a JPEG")
    return str(path)


def _empty_file(root):
    path = root / "b" / "zero.png"
    path.write_bytes(b"")
    return str(path)


def _gif_named_png(root):
    path = str(root / "b" / "anim.png")
    Image.fromarray(rgb(8, 8)).save(path, format="GIF")
    return path


@pytest.mark.parametrize("make, words", [
    (_corrupt, "truncated or corrupt"),
    (_not_an_image, "not a PNG or JPEG image"),
    (_empty_file, "not a PNG or JPEG image"),
    (_gif_named_png, "not a PNG or JPEG image"),
])
def test_a_file_that_does_not_decode_is_named(tmp_path, make, words):
    root = tmp_path / "photos"
    save(root / "a" / "ok.png", rgb(8, 8))
    save(root / "b" / "ok.png", rgb(8, 8))
    path = make(root)
    with pytest.raises(BadFileError) as err:
        ImageFolder(root, image_size=8)
    message = one_line(err)
    assert message.startswith(f"{path}: cannot decode the image") and words in message
    assert "0x" not in message  # not Pillow's buffer address


def _folder_with(tmp_path, layout):
    root = tmp_path / "photos"
    root.mkdir()
    for name in layout:
        if name.endswith("/"):
            (root / name).mkdir(parents=True)
        elif name.endswith(".png"):
            save(root / name, rgb(8, 8))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("x")
    return root


@pytest.mark.parametrize("layout, words", [
    ([], "is empty; give one subfolder of images per class"),
    (["a.png", "b.png"], "has no class subfolders"),
    (["cats/1.png", "cats/2.png"], "has one class folder ('cats'); a classifier needs at least 2"),
    (["a/1.png", "b/"], "holds no images (.png/.jpg/.jpeg; it is empty)"),
    (["a/1.png", "b/notes.txt"], "holds no images (.png/.jpg/.jpeg; it holds 1 other file(s))"),
])
def test_bad_folder_layouts(tmp_path, layout, words):
    root = _folder_with(tmp_path, layout)
    with pytest.raises(BadFileError) as err:
        ImageFolder(root, image_size=8)
    message = one_line(err)
    assert words in message
    if "holds no images" in message:
        assert repr(str(root / "b")) in message  # the class folder is named


def test_a_missing_folder_or_a_file_is_refused(tmp_path):
    with pytest.raises(BadFileError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")
    file = save(tmp_path / "one.png", rgb(8, 8))
    with pytest.raises(BadFileError, match="is a file; give a folder"):
        ImageFolder(file)


@pytest.mark.parametrize("size", [0, 7, 1025, 12.5, True, "32"])
def test_image_size_out_of_range(tmp_path, size):
    with pytest.raises(ValueError, match="image_size must be an integer from 8 to 1,024"):
        ImageFolder(tmp_path, image_size=size)


def test_a_folder_too_big_to_decode_is_refused_before_decoding(tmp_path, monkeypatch):
    root = _folder_with(tmp_path, ["a/1.png", "b/2.png"])
    # two RGB images of 16 x 16 in float32: 2 * 3 * 16 * 16 * 4 = 6,144 bytes
    monkeypatch.setattr(image_folder_module, "MAX_IMAGE_FOLDER_BYTES", 6_143)
    monkeypatch.setattr(image_folder_module, "_decode", None)  # never reached
    with pytest.raises(BadFileError) as err:
        ImageFolder(root, image_size=16)
    assert "2 images of 3 x 16 x 16 would take 0.00 GB" in one_line(err)
    monkeypatch.undo()
    assert ImageFolder(root, image_size=16).images.nbytes == 6_144


def test_errors_are_layerwise_and_value_errors(tmp_path):
    with pytest.raises(LayerwiseError):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError):
        ImageFolder(tmp_path)


# --- splits and fingerprints -----------------------------------------------------------------


def _classes_of_sizes(tmp_path, sizes, h=8):
    root = tmp_path / "photos"
    for c, n in enumerate(sizes):
        for k in range(n):
            save(root / f"class{c}" / f"{k:03d}.png", rgb(h, h))
    return root


def test_splits_are_stratified_and_name_each_examples_file(tmp_path):
    root = _classes_of_sizes(tmp_path, [20, 10])
    splits = image_folder_splits(root, image_size=8, seed=3)
    counts = {name: np.bincount(ds.tensors[1].data, minlength=2).tolist()
              for name, ds in splits.items()}
    assert counts == {"train": [16, 8], "val": [2, 1], "test": [2, 1]}
    assert splits.classes == ["class0", "class1"] and splits.input_shape == (3, 8, 8)
    for name, ds in splits.items():
        for i, path in enumerate(splits.paths[name]):
            np.testing.assert_allclose(ds.tensors[0].data[i], pillow_reference(path, "RGB", 8),
                                       atol=1e-7)
            label = splits.classes.index(os.path.basename(os.path.dirname(path)))
            assert int(ds.tensors[1].data[i]) == label
    all_paths = sorted(p for name in splits for p in splits.paths[name])
    assert all_paths == sorted(p for p, _ in splits.folder.samples)
    again = image_folder_splits(root, image_size=8, seed=3)
    assert again.paths == splits.paths
    assert image_folder_splits(root, image_size=8, seed=4).paths != splits.paths


def test_too_few_images_for_every_split(tmp_path):
    root = _classes_of_sizes(tmp_path, [2, 1])
    with pytest.raises(BadFileError) as err:
        image_folder_splits(root, image_size=8)
    assert "3 images are too few to split 80%/10%/10% (train/val/test)" in one_line(err)
    assert "10 per class" in str(err.value)


def test_the_fingerprint_follows_names_and_bytes_of_the_images_only(tmp_path):
    root = _classes_of_sizes(tmp_path, [2, 2])
    first = folder_fingerprint(root)
    digest = hashlib.sha256()  # the definition, written out
    for rel in ("class0/000.png", "class0/001.png", "class1/000.png", "class1/001.png"):
        content = (root / rel).read_bytes()
        digest.update(rel.encode() + b"\0" + len(content).to_bytes(8, "little") + content)
    assert first == digest.hexdigest() == ImageFolder(root, 8).sha256
    (root / "class0" / "notes.txt").write_text("not an image")
    assert folder_fingerprint(root) == first
    os.rename(root / "class1" / "001.png", root / "class1" / "002.png")
    renamed = folder_fingerprint(root)
    assert renamed != first
    save(root / "class1" / "002.png", rgb(8, 8))
    assert folder_fingerprint(root) not in (first, renamed)
