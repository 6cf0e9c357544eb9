"""The detection card's matching and calibration on hand-worked cases."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.audit.scenes import (
    MIN_SCORED, _iou_matrix, detection_calibration, match_detections,
)


def _image(truth, found):
    boxes, labels = truth
    f_boxes, f_scores, f_labels = found
    return ((np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)),
            (np.asarray(f_boxes, np.float32).reshape(-1, 4), np.asarray(f_scores, np.float32),
             np.asarray(f_labels, np.int64)))


def _scene():
    """Two objects; four detections: a hit, a second box on the same object, the right box
    with the wrong class, and the right box and class under the score floor. The scores are
    exact in float32, so no bin edge is in doubt."""
    truth, found = _image(([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2]),
                          ([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [20, 20, 30, 30]],
                           [0.875, 0.75, 0.625, MIN_SCORED / 2], [1, 1, 3, 2]))
    return [truth], [found]


def test_each_object_is_matched_once_highest_score_first():
    truth, found = _scene()
    scores, right = match_detections(truth, found)
    assert scores.tolist() == [0.875, 0.75, 0.625]
    assert right.tolist() == [True, False, False]


def test_a_lower_scored_detection_takes_the_object_only_when_the_higher_one_misses():
    # the 0.6 box overlaps the object at IoU 81/100 = 0.81 and the 0.9 box at 4/196 < 0.5
    truth, found = _image(([[0, 0, 10, 10]], [0]),
                          ([[8, 8, 18, 18], [1, 1, 10, 10]], [0.9, 0.6], [0, 0]))
    scores, right = match_detections([truth], [found])
    assert scores.tolist() == pytest.approx([0.9, 0.6]) and right.tolist() == [False, True]


def test_calibration_error_by_hand():
    truth, found = _scene()
    cal = detection_calibration(truth, found)
    # one detection in each of the bins (0.6, 0.7], (0.7, 0.8], (0.8, 0.9]:
    # ECE = (|1 - 0.875| + |0 - 0.75| + |0 - 0.625|) / 3 = 0.5, MCE = 0.75
    assert cal["ece"] == pytest.approx(0.5, rel=1e-12)
    assert cal["mce"] == pytest.approx(0.75, rel=1e-12)
    counts = [b["count"] for b in cal["bins"]]
    assert counts == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0] and cal["n_detections"] == 3


def test_iou_matrix_equals_box_iou():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (2, 7, 2))
    a = np.concatenate([corners[0], corners[0] + rng.uniform(1, 20, (7, 2))], axis=1)
    corners = rng.uniform(0, 50, (2, 5, 2))
    b = np.concatenate([corners[0], corners[0] + rng.uniform(1, 20, (5, 2))], axis=1)
    expected = lw.ops.box_iou(lw.tensor(a), lw.tensor(b)).data
    np.testing.assert_allclose(_iou_matrix(a, b), expected, rtol=1e-10, atol=1e-12)
