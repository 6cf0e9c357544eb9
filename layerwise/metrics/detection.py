"""COCO box metrics for detectors, computed by pycocotools' COCOeval (iouType "bbox").

    from layerwise.metrics.detection import coco_evaluate
    truth = [ds.objects(i) for i in range(len(ds))]           # per image: (boxes, labels)
    detections = decode_detections(model(images))            # per image: (boxes, scores, labels)
    result = coco_evaluate(truth, detections, ds.class_names)
    result["AP50"], result["mAP"], result["per_class"]["7"]

Boxes are xyxy in pixels on the way in and xywh on the way to COCO. The ground truth is built
in memory (no JSON file); each object's ``area``, which decides whether it counts as small
(< 32^2), medium or large (> 96^2), is its box's area, where COCO uses the area of the
object's mask: our scenes' boxes are tight around the ink, so the two sizes are close.

An AP that nothing can define (no ground truth in a class or a size range) is NaN, not the
-1 COCOeval prints, and is left out of every mean, as COCOeval leaves out its -1 entries.
"""

import contextlib
import io
import math

from layerwise.backend import xp

_INSTALL = ("coco_evaluate needs pycocotools: pip install 'layerwise[vision]' "
            "(or pip install pycocotools)")

# COCOeval.stats positions (its summarize() order) of the numbers returned here.
_STATS = {"mAP": 0, "AP50": 1, "AP75": 2, "AP_small": 3, "AP_medium": 4, "AP_large": 5,
          "AR100": 8}


def _objects(entry, i, what, n_classes):
    """One image's boxes (as xywh), labels and, for detections, scores, as Python lists."""
    parts = ("boxes", "scores", "labels") if what == "detections" else ("boxes", "labels")
    if not isinstance(entry, (tuple, list)) or len(entry) != len(parts):
        raise ValueError(f"{what}[{i}] must be a tuple ({', '.join(parts)}), got "
                         f"{type(entry).__name__} {str(entry)[:60]}")
    boxes = xp.asarray(entry[0], dtype=xp.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}[{i}] boxes must be (k, 4) xyxy, got shape {boxes.shape}")
    if (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f"{what}[{i}] has a box with x2 < x1 or y2 < y1: boxes must be xyxy")
    columns = [xp.asarray(column).reshape(-1) for column in entry[1:]]
    for name, column in zip(parts[1:], columns):
        if len(column) != len(boxes):
            raise ValueError(f"{what}[{i}] has {len(boxes)} boxes but {len(column)} {name}")
    labels = columns[-1]
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise ValueError(f"{what}[{i}] has label {int(bad)}, outside 0..{n_classes - 1} "
                         f"({n_classes} class names)")
    xywh = xp.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # xyxy -> xywh
    scores = columns[0].astype(xp.float64).tolist() if len(columns) == 2 else None
    return xywh.tolist(), labels.astype(xp.int64).tolist(), scores


def coco_evaluate(truth, detections, class_names, area_ranges=None):
    """COCO AP and AR of ``detections`` against ``truth``, one entry per image in each.

    truth: list of (boxes (k, 4) xyxy, labels (k,)); detections: list of (boxes (m, 4) xyxy,
    scores (m,), labels (m,)); labels index ``class_names``. At most 100 detections an image
    count (COCO's maxDets). Returns a dict of floats: "mAP" (AP averaged over IoU 0.50:0.95),
    "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100", "per_class" {name: AP over
    IoU 0.50:0.95}, "per_class_AP50", "per_class_objects" {name: count}, "per_size" {"small" |
    "medium" | "large": {"n_objects", "AP", "AP50"}}, and the ints "n_images", "n_objects".
    NaN where no ground truth defines it.

    ``area_ranges``: {name: (low, high)} in square pixels for "per_size" in place of COCO's
    small (< 32^2), medium and large (> 96^2), which suit 640 px photographs: every digit of a
    96 px scene is small by them. The summary figures ("AP_small", ...) stay COCO's.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError(_INSTALL) from None
    if len(truth) != len(detections):
        raise ValueError(f"coco_evaluate needs one detections entry per image: got "
                         f"{len(truth)} images of truth and {len(detections)} of detections")
    names = [str(name) for name in class_names]
    # COCO ids start at 1: COCOeval reads an annotation id of 0 as "unmatched".
    images = [{"id": i + 1} for i in range(len(truth))]
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(names)]
    annotations, results = [], []
    for i, (entry, found) in enumerate(zip(truth, detections)):
        boxes, labels, _ = _objects(entry, i, "truth", len(names))
        for box, label in zip(boxes, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": label + 1, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
        boxes, labels, scores = _objects(found, i, "detections", len(names))
        results += [{"image_id": i + 1, "category_id": label + 1, "bbox": box, "score": score}
                    for box, label, score in zip(boxes, labels, scores)]

    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print as they go
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list; no detections is AP 0 wherever truth is
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": categories}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        sized = evaluator
        if area_ranges is not None:
            sized = COCOeval(gt, dt, iouType="bbox")
            sized.params.areaRng = [[0, 1e10]] + [list(map(float, r))
                                                  for r in area_ranges.values()]
            sized.params.areaRngLbl = ["all"] + list(area_ranges)
            sized.evaluate()
            sized.accumulate()

    out = {key: _defined(evaluator.stats[index]) for key, index in _STATS.items()}
    # precision: (IoU thresholds T, recall points R, classes K, area ranges A, maxDets M);
    # area "all" is A = 0 and maxDets 100 is M = -1. -1 marks "no ground truth".
    precision = evaluator.eval["precision"]
    out["per_class"] = {name: _mean_defined(precision[:, :, k, 0, -1])
                        for k, name in enumerate(names)}
    out["per_class_AP50"] = {name: _mean_defined(precision[0, :, k, 0, -1])
                             for k, name in enumerate(names)}
    out["per_class_objects"] = {name: sum(a["category_id"] == k + 1 for a in annotations)
                                for k, name in enumerate(names)}
    # the area ranges after "all", bounds included as COCOeval counts them
    out["per_size"] = {}
    for a, size in enumerate(sized.params.areaRngLbl[1:], start=1):
        low, high = sized.params.areaRng[a]
        p = sized.eval["precision"]
        out["per_size"][size] = {
            "n_objects": sum(low <= ann["area"] <= high for ann in annotations),
            "AP": _mean_defined(p[:, :, :, a, -1]), "AP50": _mean_defined(p[0, :, :, a, -1])}
    out["n_images"], out["n_objects"] = len(images), len(annotations)
    return out


def _mean_defined(precision):
    """The mean of a slice of COCOeval's precision over its entries that are not -1 (no
    ground truth), as COCOeval's own summary averages; NaN when none is."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else math.nan


def _defined(stat):
    """COCOeval's -1 (nothing to average) as NaN."""
    return math.nan if stat == -1 else float(stat)
