"""confusion_matrix and iou_from_confusion against scikit-learn's confusion_matrix and
jaccard_score on the same pixels, and a 3x3 case computed by hand."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

import layerwise as lw
from layerwise.metrics.segmentation import confusion_matrix, iou_from_confusion


def _batches(seed, n_classes, absent, only_predicted):
    """Three batches of (4, 9, 11) masks; class ``absent`` in neither truth nor prediction,
    class ``only_predicted`` never true but sometimes predicted."""
    rng = np.random.default_rng(seed)
    true_classes = [k for k in range(n_classes) if k not in (absent, only_predicted)]
    pred_classes = [k for k in range(n_classes) if k != absent]
    for _ in range(3):
        truth = rng.choice(true_classes, size=(4, 9, 11))
        # mostly right, so the IoUs spread over (0, 1) rather than all sit near 1/n
        pred = np.where(rng.random(truth.shape) < 0.6, truth,
                        rng.choice(pred_classes, size=truth.shape))
        yield truth, pred


@pytest.mark.parametrize("seed", [0, 1])
def test_accumulated_batches_match_sklearn(seed):
    n, absent, only_predicted = 6, 4, 2
    conf, truths, preds = None, [], []
    for truth, pred in _batches(seed, n, absent, only_predicted):
        conf = confusion_matrix(lw.tensor(truth), pred, n, out=conf)  # a Tensor or an array
        truths.append(truth.ravel())
        preds.append(pred.ravel())
    t, p = np.concatenate(truths), np.concatenate(preds)
    np.testing.assert_array_equal(conf, sk_confusion(t, p, labels=range(n)))
    assert conf.dtype == np.int64

    scores = iou_from_confusion(conf)
    per_class = np.array(scores["per_class"])
    present = [k for k in range(n) if k != absent]
    assert np.isnan(per_class[absent]) and not np.isnan(per_class[present]).any()
    np.testing.assert_allclose(per_class[present],
                               jaccard_score(t, p, labels=present, average=None), rtol=1e-12)
    assert per_class[only_predicted] == 0.0
    # the mean leaves the absent class out: macro over the classes present
    np.testing.assert_allclose(scores["mIoU"],
                               jaccard_score(t, p, labels=present, average="macro"), rtol=1e-12)
    # with the absent class counted as 0 (sklearn's zero_division=0) the per-class values agree
    np.testing.assert_allclose(np.nan_to_num(per_class),
                               jaccard_score(t, p, labels=range(n), average=None,
                                             zero_division=0), rtol=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(t == p), rel=1e-12)


def test_three_classes_by_hand():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(truth, pred, 3)
    # rows truth: class 0 -> (0, 1); class 1 -> (1, 1); class 2 -> (2, 0)
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    scores = iou_from_confusion(conf)
    # IoU = TP / (row + column - TP): 1/(2+2-1), 2/(2+3-2), 1/(2+1-1)
    np.testing.assert_allclose(scores["per_class"], [1 / 3, 2 / 3, 1 / 2])
    assert scores["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)


def test_out_is_accumulated_in_place():
    out = np.zeros((3, 3), dtype=np.int64)
    result = confusion_matrix([0, 1], [0, 2], 3, out=out)
    confusion_matrix([[2]], [[2]], 3, out=out)
    assert result is out
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [0, 0, 1]])


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"y_pred labels must be in \[0, 2\], got values from "
                                         r"0 to 3"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match=r"y_true labels must be in \[0, 2\], got values from -1"):
        confusion_matrix([-1, 1], [0, 1], 3)
    with pytest.raises(ValueError, match=r"one shape, got \(2,\) and \(3,\)"):
        confusion_matrix([0, 1], [0, 1, 2], 3)
    with pytest.raises(TypeError, match="integer class labels, got dtype float64"):
        confusion_matrix(np.array([0.0, 1.0]), [0, 1], 3)
    with pytest.raises(ValueError, match=r"out must have shape \(3, 3\), got \(2, 2\)"):
        confusion_matrix([0], [0], 3, out=np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="n_classes must be a positive int, got 0"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(ValueError, match=r"square \(n, n\) matrix, got shape \(2, 3\)"):
        iou_from_confusion(np.zeros((2, 3)))
