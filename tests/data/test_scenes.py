"""Digit scenes: seeded, split-disjoint, boxes and masks that agree with the digits placed."""

import numpy as np
import pytest

from layerwise.data import digit_scenes, digits_splits, load_digits_5k, scenes, stratified_split
from layerwise.data.scenes import (
    INK_THRESHOLD,
    MAX_OBJECTS,
    MAX_PLACEMENT_IOU,
    N_MASK_CLASSES,
    SCENE_SIZE,
    place_digits,
    resize_bilinear,
)
from layerwise.ops import box_iou

SMALL = {"train": 6, "val": 3, "test": 12}


def arrays(ds):
    return [t.data for t in ds.tensors]


def test_shapes_dtypes_padding():
    ds = digit_scenes(seed=0, counts=SMALL)["test"]
    images, boxes, labels, masks = arrays(ds)
    n, s = SMALL["test"], SCENE_SIZE
    assert images.shape == (n, 1, s, s) and images.dtype == np.float32
    assert boxes.shape == (n, MAX_OBJECTS, 4) and boxes.dtype == np.float32
    assert labels.shape == (n, MAX_OBJECTS) and labels.dtype == np.int64
    assert masks.shape == (n, s, s) and masks.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert masks.min() >= 0 and masks.max() < N_MASK_CLASSES
    assert ds.class_names == [str(d) for d in range(10)]
    k = (labels >= 0).sum(axis=1)
    assert (k >= 1).all() and (k <= MAX_OBJECTS).all()
    for i in range(n):
        # Objects first, then padding rows: label -1, box 0, source -1.
        assert (labels[i, :k[i]] >= 0).all() and (labels[i, :k[i]] <= 9).all()
        assert (labels[i, k[i]:] == -1).all() and (boxes[i, k[i]:] == 0).all()
        assert (ds.sources[i, k[i]:] == -1).all()
        b, lab = ds.objects(i)
        assert b.shape == (k[i], 4) and b.dtype == np.float32 and lab.dtype == np.int64
        np.testing.assert_array_equal(b, boxes[i, :k[i]])
        np.testing.assert_array_equal(lab, labels[i, :k[i]])
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert b.min() >= 0 and b.max() <= s


def test_same_seed_same_scenes_other_seed_differs():
    first = [a.copy() for a in arrays(digit_scenes(seed=3, counts=SMALL)["train"])]
    scenes._build.cache_clear()  # build again from scratch, not from the cache
    again = arrays(digit_scenes(seed=3, counts=SMALL)["train"])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    other = arrays(digit_scenes(seed=4, counts=SMALL)["train"])
    assert not np.array_equal(first[0], other[0])
    # Each split has its own generator: the test scenes do not depend on the other counts.
    alone = digit_scenes(seed=3, counts={"train": 2, "val": 0, "test": 12})
    assert len(alone["val"]) == 0
    np.testing.assert_array_equal(arrays(alone["test"])[0],
                                  arrays(digit_scenes(seed=3, counts=SMALL)["test"])[0])


@pytest.mark.parametrize("seed", [0, 7])
def test_scenes_use_only_their_splits_digits(seed):
    images, labels = load_digits_5k()
    parts = dict(zip(("train", "val", "test"), stratified_split(labels, (0.8, 0.1, 0.1), seed)))
    splits = digits_splits(seed)
    built = digit_scenes(seed=seed, counts=SMALL)
    for name, ds in built.items():
        # These indices are digits_splits' own: its images are the 5k images at them.
        np.testing.assert_array_equal(splits[name].tensors[0].data, images[parts[name]])
        used = ds.sources[ds.sources >= 0]
        assert np.isin(used, parts[name]).all()
        others = np.concatenate([parts[o] for o in parts if o != name])
        assert not np.isin(used, others).any()
        # The label of each object is its source digit's label.
        obj_labels = arrays(ds)[2]
        np.testing.assert_array_equal(obj_labels[obj_labels >= 0], labels[used])


def test_scene_is_its_digits_placed_again():
    """Re-place each test scene's source digits at its recorded positions and sides: the
    mask, the boxes and the image's ink must come out the same."""
    images5k, _ = load_digits_5k()
    ds = digit_scenes(seed=1, counts=SMALL)["test"]
    images, boxes, labels, masks = arrays(ds)
    for i in range(len(ds)):
        k = int((labels[i] >= 0).sum())
        canvas, inst, b = place_digits(SCENE_SIZE, images5k[ds.sources[i, :k], 0],
                                       ds.positions[i, :k], ds.sides[i, :k])
        np.testing.assert_array_equal(b, boxes[i, :k])
        expected = np.where(inst > 0, np.concatenate([[-1], labels[i, :k]])[inst] + 1, 0)
        np.testing.assert_array_equal(masks[i], expected)
        np.testing.assert_allclose(images[i, 0][inst > 0], canvas[inst > 0], rtol=0, atol=0)
        # The clutter never reaches the ink threshold: the image's ink is the mask.
        np.testing.assert_array_equal(images[i, 0] > INK_THRESHOLD, masks[i] > 0)
        for j in range(k):
            # Every pixel of an object's mask lies inside its box, and the box is tight
            # around the digit's own ink (before later digits cover part of it).
            rows, cols = np.nonzero(inst == j + 1)
            if len(rows):
                x1, y1, x2, y2 = boxes[i, j]
                assert x1 <= cols.min() and cols.max() < x2
                assert y1 <= rows.min() and rows.max() < y2
            _, alone, _ = place_digits(SCENE_SIZE, images5k[ds.sources[i, j:j + 1], 0],
                                       ds.positions[i, j:j + 1], ds.sides[i, j:j + 1])
            rows, cols = np.nonzero(alone)
            np.testing.assert_array_equal(
                boxes[i, j], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            assert labels[i, j] + 1 in masks[i]  # no digit is hidden entirely


def test_boxes_of_one_scene_overlap_at_most_the_threshold():
    for ds in digit_scenes(seed=2, counts=SMALL).values():
        for i in range(len(ds)):
            b, _ = ds.objects(i)
            iou = box_iou(b, b).data.astype(np.float64)
            np.fill_diagonal(iou, 0.0)
            assert iou.max() <= MAX_PLACEMENT_IOU + 1e-6


def test_place_digits_by_hand():
    # A digit that is a bright 8 x 12 rectangle (rows 10-17, cols 8-19) of a 28 x 28 frame.
    digit = np.zeros((28, 28), np.float32)
    digit[10:18, 8:20] = 1.0
    # At side 28 the resize is the identity, so the ink lands exactly where we put it.
    canvas, inst, boxes = place_digits(40, digit[None], [(5, 7)], [28])
    np.testing.assert_array_equal(boxes, [[7 + 8, 5 + 10, 7 + 20, 5 + 18]])
    expected = np.zeros((40, 40), np.int64)
    expected[15:23, 15:27] = 1
    np.testing.assert_array_equal(inst, expected)
    assert canvas.sum() == pytest.approx(8 * 12)
    # A second digit over the first's right part: the later one wins the shared pixels,
    # and the first keeps its own box.
    _, inst2, boxes2 = place_digits(48, np.stack([digit, digit]), [(5, 7), (5, 13)], [28, 28])
    np.testing.assert_array_equal(boxes2, [[15, 15, 27, 23], [21, 15, 33, 23]])
    assert (inst2[15:23, 15:21] == 1).all() and (inst2[15:23, 21:33] == 2).all()
    assert (inst2 == 1).sum() == 8 * 6 and (inst2 == 2).sum() == 8 * 12


def test_resize_matches_a_pixel_by_pixel_reference():
    rng = np.random.default_rng(0)
    image = rng.random((28, 28))
    for side in (18, 28, 40):
        # align_corners=False: output pixel i samples input coordinate (i + 0.5) * 28 / side
        # - 0.5, clamped at 0, from its two neighbours (the last one repeated at the edge).
        ref = np.zeros((side, side))
        for i in range(side):
            for j in range(side):
                y = max((i + 0.5) * 28 / side - 0.5, 0.0)
                x = max((j + 0.5) * 28 / side - 0.5, 0.0)
                y0, x0 = int(y), int(x)
                y1, x1 = min(y0 + 1, 27), min(x0 + 1, 27)
                fy, fx = y - y0, x - x0
                ref[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                             + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
        np.testing.assert_allclose(resize_bilinear(image[None], side)[0], ref, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ({"size": 10}, "size must be an int from 32 to 512 pixels, got 10"),
    ({"counts": {"tests": 3}}, "counts must be a dict with keys among train, val, test"),
    ({"counts": {"test": -2}}, r"counts\['test'\] must be an int >= 0, got -2"),
])
def test_bad_arguments_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digit_scenes(**kwargs)


def test_place_digits_refuses_a_frame_outside_the_canvas():
    with pytest.raises(ValueError, match=r"a 28 px frame at \(row, col\) = \(20, 0\) does not "
                                         r"fit a 40 px canvas"):
        place_digits(40, np.ones((1, 28, 28)), [(20, 0)], [28])
