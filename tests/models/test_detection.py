"""CenterNet: targets against hand-computed Gaussians and CornerNet radii, decoding of perfect
maps back to the boxes, the focal loss against the paper's formula in float64 NumPy, training
on a few scenes, shapes and errors."""

import math

import numpy as np
import pytest

import layerwise as lw
from layerwise.models.detection import (
    CenterNet, centernet_loss, centernet_targets, decode_detections, gaussian_radius,
)

# A 28 x 32 px box in a 96 px image: at stride 4 it spans cells x 5.5-12.5, y 7.5-15.5, so
# its size is (7, 8) cells and its centre (9.0, 11.5): cell (9, 11), offset (0, 0.5).
BOX = [22.0, 30.0, 50.0, 62.0]


def rectangles(n, size, seed=0):
    """n scenes of 2-3 non-overlapping bright rectangles on noise, in a 3 x 3 grid of slots;
    the class (0-9) sets the brightness. -> images (n, 1, S, S), boxes (n, 3, 4), labels (n, 3)."""
    rng = np.random.default_rng(seed)
    slot = size // 3
    images = 0.1 * rng.random((n, 1, size, size)).astype(np.float32)
    boxes, labels = np.zeros((n, 3, 4), np.float32), np.full((n, 3), -1)
    for i in range(n):
        for j, cell in enumerate(rng.permutation(9)[:rng.integers(2, 4)]):
            w, h = rng.integers(slot // 2, slot, 2)
            x1, y1 = (cell % 3) * slot + rng.integers(0, slot - w + 1), \
                (cell // 3) * slot + rng.integers(0, slot - h + 1)
            labels[i, j] = rng.integers(0, 10)
            boxes[i, j] = x1, y1, x1 + w, y1 + h
            images[i, 0, y1:y1 + h, x1:x1 + w] = 0.3 + 0.07 * labels[i, j]
    return images, boxes, labels


def small_model(**kw):
    return CenterNet(channels=(8, 8, 16), stem_channels=8, head_channels=8, **kw)


def one_box_targets(label=3):
    boxes = np.zeros((1, 2, 4), np.float32)
    boxes[0, 0] = BOX
    return centernet_targets(boxes, np.array([[label, -1]]), 10, (24, 24), 4)


def test_cornernet_radius_of_one_box_by_hand():
    # h = 8, w = 7, min overlap 0.7; the third quadratic gives the least root:
    # a = 4 * 0.7, b = -2 * 0.7 * 15, c = (0.7 - 1) * 56; r = (b + sqrt(b^2 - 4ac)) / 2
    r3 = (-21 + math.sqrt(21 ** 2 - 4 * 2.8 * (-0.3 * 56))) / 2  # 2.0416
    r1 = (15 + math.sqrt(15 ** 2 - 4 * 56 * 0.3 / 1.7)) / 2  # 14.31
    r2 = (30 + math.sqrt(30 ** 2 - 16 * 0.3 * 56)) / 2  # 27.56
    assert float(gaussian_radius(8.0, 7.0)) == pytest.approx(min(r1, r2, r3))
    assert min(r1, r2, r3) == r3


def test_targets_of_a_hand_made_box():
    t = one_box_targets(label=3)
    heat = t["heatmap"]
    assert heat.shape == (1, 10, 24, 24) and heat.dtype == np.float32
    assert heat[0, 3, 11, 9] == 1.0 and (heat == 1.0).sum() == 1  # the peak, exactly 1
    assert np.count_nonzero(np.delete(heat[0], 3, axis=0)) == 0  # other classes empty
    # radius int(2.04) = 2: a 5 x 5 window, sigma = 5 / 6, value exp(-d^2 / (2 sigma^2))
    sigma = 5 / 6
    rows, cols = np.nonzero(heat[0, 3])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 13, 7, 11)
    assert heat[0, 3, 12, 9] == pytest.approx(math.exp(-1 / (2 * sigma ** 2)))
    assert heat[0, 3, 13, 11] == pytest.approx(math.exp(-8 / (2 * sigma ** 2)))
    assert t["size"][0, 0].tolist() == [7.0, 8.0] and t["offset"][0, 0].tolist() == [0.0, 0.5]
    assert t["index"][0].tolist() == [11 * 24 + 9, 0] and t["mask"][0].tolist() == [1.0, 0.0]


def test_overlapping_gaussians_of_one_class_take_the_max():
    boxes = np.zeros((1, 2, 4), np.float32)
    boxes[0, 0], boxes[0, 1] = BOX, np.add(BOX, [8, 0, 8, 0])  # two cells to the right
    both = centernet_targets(boxes, np.array([[3, 3]]), 10, (24, 24), 4)["heatmap"]
    first = one_box_targets()["heatmap"]
    second = centernet_targets(boxes[:, 1:], np.array([[3]]), 10, (24, 24), 4)["heatmap"]
    np.testing.assert_array_equal(both, np.maximum(first, second))


def perfect_outputs(targets, batch):
    """Maps that hold the targets exactly: heatmap logits of the Gaussians (peaks at a logit of
    20), size and offset written at each object's centre cell."""
    heat = np.clip(targets["heatmap"].astype(np.float64), 1e-9, 1 - 2e-9)
    size = np.zeros((batch, 2, 24 * 24), np.float32)
    offset = np.zeros_like(size)
    for i, j in zip(*np.nonzero(targets["mask"])):
        size[i, :, targets["index"][i, j]] = targets["size"][i, j]
        offset[i, :, targets["index"][i, j]] = targets["offset"][i, j]
    return {"heatmap": lw.tensor(np.log(heat / (1 - heat)), dtype=lw.float32),
            "size": lw.tensor(size.reshape(batch, 2, 24, 24)),
            "offset": lw.tensor(offset.reshape(batch, 2, 24, 24))}


def test_decoding_the_targets_returns_the_boxes():
    _, boxes, labels = rectangles(8, 96)
    targets = centernet_targets(boxes, labels, 10, (24, 24), 4)
    found = decode_detections(perfect_outputs(targets, 8))
    for i, (b, s, y) in enumerate(found):
        truth_boxes, truth_labels = boxes[i][labels[i] >= 0], labels[i][labels[i] >= 0]
        assert len(b) == len(truth_boxes) and (s > 0.99).all()
        order, truth_order = np.lexsort(b.T[::-1]), np.lexsort(truth_boxes.T[::-1])
        np.testing.assert_allclose(b[order], truth_boxes[truth_order], atol=1e-4)
        assert y[order].tolist() == truth_labels[truth_order].tolist()
        assert b.dtype == np.float32 and y.dtype == np.int64


def test_decoding_threshold_top_k_and_nms():
    outputs = perfect_outputs(one_box_targets(), 1)
    heat = outputs["heatmap"].numpy()
    heat[0, 5, 2, 2] = 0.0  # a lone peak of score 0.5 in class 5 (a box of size 0)
    outputs["heatmap"] = lw.tensor(heat)
    _, scores, labels = decode_detections(outputs, score_threshold=0.05)[0]
    assert labels.tolist() == [3, 5] and scores[1] == pytest.approx(0.5)
    assert decode_detections(outputs, score_threshold=0.6)[0][2].tolist() == [3]
    assert decode_detections(outputs, max_detections=1, score_threshold=0)[0][2].tolist() == [3]
    # a second class-3 peak two cells right of the first, with the same size: its box is the
    # first shifted by 8 px, IoU 20 * 32 / (2 * 28 * 32 - 20 * 32) = 0.56 with it
    size, offset = outputs["size"].numpy(), outputs["offset"].numpy()
    size[0, :, 11, 11], offset[0, :, 11, 11] = size[0, :, 11, 9], offset[0, :, 11, 9]
    heat[0, 3, 11, 11] = 5.0
    outputs = {"heatmap": lw.tensor(heat), "size": lw.tensor(size), "offset": lw.tensor(offset)}
    boxes, _, labels = decode_detections(outputs)[0]
    assert labels.tolist() == [3, 3, 5]  # CenterNet's default: no NMS
    np.testing.assert_allclose(boxes[1], np.add(BOX, [8, 0, 8, 0]), atol=1e-4)
    assert decode_detections(outputs, nms_iou=0.5)[0][2].tolist() == [3, 5]
    assert decode_detections(outputs, nms_iou=0.6)[0][2].tolist() == [3, 3, 5]


def focal_reference(logits, target):
    """Eq. 1 of the paper in float64, with p = 1 / (1 + exp(-x)) and plain logs."""
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    y = target.astype(np.float64)
    pos = np.where(y == 1, (1 - p) ** 2 * np.log(p), 0)
    neg = np.where(y < 1, (1 - y) ** 4 * p ** 2 * np.log(1 - p), 0)
    return -(pos.sum() + neg.sum())


def test_loss_against_the_papers_formula():
    targets = one_box_targets()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 10, 24, 24)).astype(np.float32)
    size = rng.normal(size=(1, 2, 24, 24)).astype(np.float32)
    offset = rng.normal(size=(1, 2, 24, 24)).astype(np.float32)
    outputs = {"heatmap": lw.tensor(logits), "size": lw.tensor(size),
               "offset": lw.tensor(offset)}
    loss = centernet_loss(outputs, targets).item()
    # one object: N = 1; size (7, 8) and offset (0, 0.5) read at cell (y, x) = (11, 9)
    l_size = abs(size[0, 0, 11, 9] - 7) + abs(size[0, 1, 11, 9] - 8)
    l_off = abs(offset[0, 0, 11, 9] - 0) + abs(offset[0, 1, 11, 9] - 0.5)
    expected = focal_reference(logits, targets["heatmap"]) + 0.1 * l_size + 1.0 * l_off
    assert loss == pytest.approx(expected, rel=1e-5)


def test_loss_trains_every_parameter_and_falls_on_a_few_scenes():
    lw.manual_seed(0)
    images, boxes, labels = rectangles(8, 48)
    model = small_model()
    targets = centernet_targets(boxes, labels, 10, (12, 12), 4)
    optimizer = lw.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss = centernet_loss(model(lw.tensor(images)), targets)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                assert np.isfinite(p.grad.numpy()).all() and np.abs(p.grad.numpy()).max() > 0, name
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[-1] < 0.5 * losses[0]


def test_shapes_and_the_heatmap_prior():
    model = small_model(num_classes=4, in_channels=3)
    out = model(lw.randn(2, 3, 64, 64))
    assert out["heatmap"].shape == (2, 4, 16, 16)
    assert out["size"].shape == out["offset"].shape == (2, 2, 16, 16)
    assert 1 / (1 + math.exp(-float(model.heatmap[2].bias.data[0]))) == pytest.approx(0.1)


def test_one_line_errors():
    model = small_model()
    with pytest.raises(ValueError, match=r"expects images \(B, 1, S, S\), got shape \(1, 96, 96\)"):
        model(lw.randn(1, 96, 96))
    with pytest.raises(ValueError, match=r"expects images \(B, 1, S, S\), got shape \(1, 3, 96"):
        model(lw.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match=r"multiples of 8 .* got \(36, 36\)"):
        model(lw.randn(1, 1, 36, 36))
    with pytest.raises(ValueError, match="label 10 is outside 0..9"):
        centernet_targets(np.zeros((1, 1, 4)), np.array([[10]]), 10, (24, 24), 4)
    with pytest.raises(ValueError, match="three stages"):
        CenterNet(channels=(8, 16))
