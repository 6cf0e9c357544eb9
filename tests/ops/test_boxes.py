"""Box utilities against hand-computed cases and torchvision.ops' documented behaviour."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import ops


def test_box_iou_of_overlapping_touching_and_equal_boxes():
    a = [[0, 0, 2, 2]]
    b = [[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2], [0, 0, 2, 1]]
    # overlap 1 of union 4 + 4 - 1; touching at a corner; the same box; half of it
    assert ops.box_iou(a, b).numpy() == pytest.approx(np.array([[1 / 7, 0, 1, 0.5]]))
    assert ops.box_area(b).numpy().tolist() == [4, 4, 4, 2]


def test_box_convert_by_hand_and_round_trips():
    assert ops.box_convert([[1, 2, 3, 4]], "xywh", "xyxy").numpy().tolist() == [[1, 2, 4, 6]]
    assert ops.box_convert([[2, 3, 2, 2]], "cxcywh", "xyxy").numpy().tolist() == [[1, 2, 3, 4]]
    boxes = np.random.default_rng(0).random((5, 2)) * 10
    xyxy = np.concatenate([boxes, boxes + 1 + np.random.default_rng(1).random((5, 2))], 1)
    for fmt in ("xywh", "cxcywh"):
        back = ops.box_convert(ops.box_convert(xyxy, "xyxy", fmt), fmt, "xyxy")
        assert back.numpy() == pytest.approx(xyxy)
    with pytest.raises(ValueError, match="in_fmt must be one of xyxy, xywh, cxcywh, got 'xy'"):
        ops.box_convert(xyxy, "xy", "xyxy")


# D duplicates A; B overlaps A and D with IoU 81 / 119 = 0.68; C stands apart
BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
SCORES = np.array([0.9, 0.8, 0.7, 0.95])


@pytest.mark.parametrize("threshold, kept", [(0.5, [3, 2]), (0.7, [3, 1, 2]), (1.0, [3, 0, 1, 2])])
def test_nms_keeps_the_best_box_of_each_overlapping_group(threshold, kept):
    keep = ops.nms(lw.tensor(BOXES), lw.tensor(SCORES), threshold)
    assert keep.dtype == lw.int64 and keep.numpy().tolist() == kept


def test_nms_suppresses_only_above_the_threshold():
    # IoU exactly 0.5: torchvision drops a box only when its IoU is greater than the threshold
    keep = ops.nms([[0, 0, 2, 2], [0, 0, 2, 1]], [0.9, 0.8], 0.5)
    assert keep.numpy().tolist() == [0, 1]
    assert ops.nms(np.zeros((0, 4)), np.zeros(0), 0.5).numpy().tolist() == []


def test_batched_nms_never_suppresses_across_categories():
    keep = ops.batched_nms(BOXES, SCORES, [0, 0, 0, 1], 0.5)
    assert keep.numpy().tolist() == [3, 0, 2]  # D alone in category 1; A suppresses B in 0


@pytest.mark.parametrize("call, message", [
    (lambda: ops.nms([0, 0, 1, 1], [0.5], 0.5), r"boxes must be \(N, 4\) boxes .* got shape \(4,\)"),
    (lambda: ops.nms(BOXES, SCORES[:3], 0.5), r"scores must be \(N,\) = \(4,\), one per box"),
    (lambda: ops.batched_nms(BOXES, SCORES, [0, 1], 0.5), r"idxs must be \(N,\) = \(4,\)"),
    (lambda: ops.box_iou(BOXES, BOXES[:, :3]), r"boxes2 must be \(N, 4\)"),
])
def test_bad_boxes_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
