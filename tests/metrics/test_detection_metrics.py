"""coco_evaluate (pycocotools' COCOeval) against APs computed by hand from each fixture's
precision-recall curve, with COCO's ten IoU thresholds 0.50:0.05:0.95 and its 101-point
interpolated precision (the best precision at any recall >= each of 0, 0.01, ..., 1)."""

import math
import sys

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from layerwise.metrics.detection import coco_evaluate

NAMES = ["zero", "one", "two"]
BOX = np.array([10.0, 10.0, 20.0, 20.0])  # 10 x 10: area 100, a "small" object


def shifted(box, dx):
    return box + np.array([dx, 0, dx, 0])


def image(boxes, labels, scores=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64)
    if scores is None:
        return boxes, labels
    return boxes, np.asarray(scores, dtype=np.float32), labels


def test_perfect_detections_give_one_everywhere():
    truth = [image([BOX, shifted(BOX, 30)], [0, 1]), image([shifted(BOX, 50)], [1])]
    found = [image(b, l, np.linspace(0.9, 0.5, len(l))) for b, l in truth]
    result = coco_evaluate(truth, found, NAMES)
    for key in ("mAP", "AP50", "AP75", "AR100", "AP_small"):
        assert result[key] == pytest.approx(1.0, abs=1e-12)  # a mean of ones, summed in floats
    assert [result["per_class"][name] for name in ("zero", "one")] == pytest.approx([1.0, 1.0])
    assert math.isnan(result["per_class"]["two"])  # no ground truth: undefined, not 0
    assert (result["n_images"], result["n_objects"]) == (2, 3)


def test_a_box_at_iou_061_counts_at_three_of_the_ten_thresholds():
    # Shifted by 2.4 px: overlap 7.6 x 10 over union 200 - 76, IoU 76 / 124 = 0.613, so it
    # matches at 0.50, 0.55 and 0.60 (AP 1 there) and misses at 0.65..0.95 (AP 0). An IoU of
    # exactly 0.6 would sit on the 0.6 threshold, which np.linspace puts a rounding error off.
    truth = [image([BOX], [0])]
    found = [image([shifted(BOX, 2.4)], [0], [0.9])]
    result = coco_evaluate(truth, found, NAMES)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == 0.0
    assert result["mAP"] == pytest.approx(3 / 10)
    assert result["AR100"] == pytest.approx(3 / 10)  # recall 1 at 3 thresholds, 0 at 7
    assert result["AP_small"] == pytest.approx(3 / 10)
    assert math.isnan(result["AP_medium"]) and math.isnan(result["AP_large"])


def test_a_false_positive_scored_above_a_true_positive_costs_precision():
    # One object; the false positive (elsewhere) outranks the hit: ranked [FP, TP] gives
    # recall [0, 1] and precision [0, 1/2]; the best precision at recall >= r is 1/2 for every
    # r in 0..1, so AP50 = 1/2.
    truth = [image([BOX], [0])]
    found = [image([shifted(BOX, 40), BOX], [0, 0], [0.9, 0.8])]
    assert coco_evaluate(truth, found, NAMES)["AP50"] == pytest.approx(0.5)


def test_ap50_from_a_three_object_precision_recall_curve():
    # Ranked TP, FP, TP, TP against 3 objects: recall 1/3, 1/3, 2/3, 1 and precision 1, 1/2,
    # 2/3, 3/4. Interpolated precision: 1 at recall r <= 1/3 (r = 0, .01, ..., .33: 34 of the
    # 101 points), 3/4 above it (67 points): AP50 = (34 * 1 + 67 * 3/4) / 101.
    objects = [BOX, shifted(BOX, 30), shifted(BOX, 60)]
    truth = [image(objects, [2, 2, 2])]
    ranked = [objects[0], shifted(BOX, 0) + [0, 40, 0, 40], objects[1], objects[2]]
    found = [image(ranked, [2, 2, 2, 2], [0.9, 0.8, 0.7, 0.6])]
    result = coco_evaluate(truth, found, NAMES)
    assert result["AP50"] == pytest.approx((34 + 67 * 0.75) / 101)
    assert result["per_class"]["two"] == result["mAP"]  # exact boxes: the same at every IoU


def test_per_class_ap_and_a_class_missing_from_the_truth():
    # class "zero" found exactly (AP 1), class "one" at IoU 0.613 (AP 3/10, as above), class
    # "two" only detected, never present: NaN, left out of the mean, as COCOeval does.
    truth = [image([BOX], [0]), image([BOX], [1])]
    found = [image([BOX, shifted(BOX, 40)], [0, 2], [0.9, 0.95]),
             image([shifted(BOX, 2.4)], [1], [0.9])]
    result = coco_evaluate(truth, found, NAMES)
    per_class = result["per_class"]
    assert per_class["zero"] == pytest.approx(1.0) and per_class["one"] == pytest.approx(0.3)
    assert math.isnan(per_class["two"])
    assert result["mAP"] == pytest.approx((1.0 + 0.3) / 2)


def test_sizes_split_at_32_squared_pixels():
    small, medium = BOX, np.array([0.0, 0.0, 40.0, 30.0])  # areas 100 and 1200 (> 32^2)
    truth = [image([small, medium], [0, 0])]
    found = [image([small], [0], [0.9])]  # the medium one is missed
    result = coco_evaluate(truth, found, NAMES)
    assert result["AP_small"] == pytest.approx(1.0) and result["AP_medium"] == 0.0
    assert math.isnan(result["AP_large"])
    assert result["AP50"] == pytest.approx(51 / 101)  # precision 1 up to recall 0.5, then 0


def test_no_detections_at_all_is_ap_zero():
    truth = [image([BOX], [0]), image(np.zeros((0, 4)), [])]
    found = [image(np.zeros((0, 4)), [], []) for _ in truth]
    result = coco_evaluate(truth, found, NAMES)
    assert result["mAP"] == result["AP50"] == result["AR100"] == 0.0
    assert result["per_class"]["zero"] == 0.0 and math.isnan(result["per_class"]["one"])


def test_one_line_errors():
    truth = [image([BOX], [0])]
    with pytest.raises(ValueError, match="one detections entry per image: got 1 images"):
        coco_evaluate(truth, [], NAMES)
    with pytest.raises(ValueError, match=r"detections\[0\] has label 3, outside 0..2"):
        coco_evaluate(truth, [image([BOX], [3], [0.5])], NAMES)
    with pytest.raises(ValueError, match=r"truth\[0\] boxes must be \(k, 4\) xyxy"):
        coco_evaluate([(np.zeros((1, 5)), np.zeros(1, int))], [image([BOX], [0], [0.5])], NAMES)
    with pytest.raises(ValueError, match=r"x2 < x1 or y2 < y1"):
        coco_evaluate([image([[5, 5, 1, 9]], [0])], [image([BOX], [0], [0.5])], NAMES)
    with pytest.raises(ValueError, match=r"detections\[0\] must be a tuple \(boxes, scores"):
        coco_evaluate(truth, [image([BOX], [0])], NAMES)


def test_without_pycocotools_one_line_says_what_to_install(monkeypatch):
    for module in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, module, None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install 'layerwise\[vision\]'"):
        coco_evaluate([image([BOX], [0])], [image([BOX], [0], [0.5])], NAMES)


def test_area_ranges_of_ones_own_break_ap_down_by_size():
    # a 10x10 object found exactly and a 20x20 one missed: AP 1 among the small, 0 the large
    truth = [(np.array([[0, 0, 10, 10], [40, 40, 60, 60]], np.float32), np.array([0, 0]))]
    found = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32),
              np.array([0]))]
    out = coco_evaluate(truth, found, ["a"],
                        area_ranges={"small": (0, 200), "large": (200.5, 1e10)})
    assert out["per_size"]["small"] == {"n_objects": 1, "AP": pytest.approx(1.0),
                                        "AP50": pytest.approx(1.0)}
    assert out["per_size"]["large"] == {"n_objects": 1, "AP": 0.0, "AP50": 0.0}
    # COCO's own sizes: both objects are small; recall 0.5 at precision 1 covers 51 of COCO's
    # 101 recall points (0, 0.01, ..., 0.5)
    assert out["AP_small"] == pytest.approx(51 / 101)
