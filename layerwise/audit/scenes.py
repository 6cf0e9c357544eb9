"""The card sections of a detection or segmentation run: its metrics the standard way, broken
down by object size and class, how far its confidences can be trusted, and its answers drawn
over test images.

    sections, figures = audit_detection(run)     # a `detect` run (layerwise.train.finished)
    sections, figures = audit_segmentation(run)  # a `segment` run

Detection confidences are calibrated when a detection scored s is right a fraction s of the
time: each detection is matched, highest score first, to an unmatched object of its class at
IoU >= MATCH_IOU (COCOeval's matching at AP50), and the reliability diagram bins detections by
score. Segmentation's calibration is that of every pixel's top class probability.
"""

import numpy as np

from layerwise.audit import plots

MATCH_IOU = 0.5  # a detection is right when it overlaps an unmatched object of its class this much
CALIBRATION_BINS = 10
MIN_SCORED = 0.05  # detections below this score are left out of calibration (decode's floor)
MIN_CELL_OBJECTS = 30  # a class or size with fewer objects is shown with a warning
N_DRAWN = 8  # test scenes drawn in the explanation figure
DRAWN_SCORE = 0.3  # detections drawn in that figure
_COCO_METHOD = ("COCOeval (pycocotools), iouType bbox: AP averaged over IoU thresholds "
                "0.50:0.05:0.95 and 101 recall points, at most 100 detections an image; AP50 at "
                "IoU 0.50. Object area is its box's area.")


# --- detection ---------------------------------------------------------------------------------


def audit_detection(run):
    """(sections, figures) of a detection run's card from its test split."""
    from layerwise.metrics.detection import coco_evaluate
    from layerwise.train.recipes.scenes import arrays, detect, unpacked_objects

    images, packed = arrays(run.splits["test"])
    truth = unpacked_objects(packed)
    found = detect(run.model, images)
    classes = list(run.info["classes"])
    ranges = size_thirds(truth)
    result = coco_evaluate(truth, found, classes, area_ranges=ranges)
    sections = {
        "metrics": {"task": "detection", "mAP": result["mAP"], "AP50": result["AP50"],
                    "AP75": result["AP75"], "AR100": result["AR100"],
                    "n_images": result["n_images"], "n": result["n_objects"],
                    "classes": classes, "method": _COCO_METHOD},
        "disaggregated": _detection_breakdown(result, classes, ranges),
        "calibration": detection_calibration(truth, found),
    }
    figures = {"reliability": plots.reliability_diagram(sections["calibration"]),
               "detections": _drawn_detections(images, truth, found, classes)}
    sections["explanations"] = {
        "kind": "detections", "examples": list(range(min(N_DRAWN, len(images)))),
        "method": f"the first {min(N_DRAWN, len(images))} test scenes with the objects found "
                  f"at score >= {DRAWN_SCORE} (coloured, labelled class:score) over the true "
                  f"boxes (white)"}
    return sections, figures


def size_thirds(truth):
    """{name: (low, high)} box areas (px^2) cutting the objects of ``truth`` into thirds: the
    sizes the card breaks AP down by. COCO's fixed ones (small below 32^2 px) are made for
    640 px photographs, and every digit of a 96 px scene is small by them."""
    areas = np.concatenate([np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
                            for boxes, _ in truth] + [np.zeros(0)])
    if not len(areas):
        return {"all sizes": (0.0, np.inf)}
    low, high = np.quantile(areas, [1 / 3, 2 / 3])
    above = np.nextafter  # COCOeval includes both bounds: the next range starts just above
    return {"smallest third": (0.0, float(low)),
            "middle third": (float(above(low, np.inf)), float(high)),
            "largest third": (float(above(high, np.inf)), float(np.inf))}


def _detection_breakdown(result, classes, ranges):
    rows_size = [{"label": size, "range": _area_range(*ranges[size]),
                  **result["per_size"][size]} for size in ranges]
    rows_class = [{"label": name, "n_objects": result["per_class_objects"][name],
                   "AP": result["per_class"][name], "AP50": result["per_class_AP50"][name]}
                  for name in classes]
    warnings = [f"{kind} {row['label']!r}: {row['n_objects']} test object(s), under "
                f"{MIN_CELL_OBJECTS}: its AP is not to be trusted"
                for kind, rows in (("size", rows_size), ("class", rows_class)) for row in rows
                if 0 < row["n_objects"] < MIN_CELL_OBJECTS]
    defined = [r for r in rows_class if r["AP"] == r["AP"]]  # NaN: a class with no objects
    headline = None
    if defined:
        worst = min(defined, key=lambda r: r["AP"])
        best = max(defined, key=lambda r: r["AP"])
        headline = (f"AP by class ranges from {worst['AP']:.3f} (class {worst['label']}, "
                    f"{worst['n_objects']} objects) to {best['AP']:.3f} (class "
                    f"{best['label']}, {best['n_objects']} objects)")
    coco = ", ".join(f"{size} {_fmt(result[f'AP_{size}'])}" for size in ("small", "medium",
                                                                          "large"))
    return {"sizes": rows_size, "classes": rows_class, "headline": headline,
            "warnings": warnings,
            "note": "Sizes are thirds of the test objects by box area. By COCO's fixed sizes "
                    f"(small below 32^2 px, large above 96^2) AP is {coco}. AP is not a "
                    "proportion, so no binomial interval is given; cells under "
                    f"{MIN_CELL_OBJECTS} objects are warned about."}


def _area_range(low, high):
    if high == np.inf:
        return f"> {low:.0f} px^2"
    return f"{low:.0f} to {high:.0f} px^2" if low > 0 else f"up to {high:.0f} px^2"


def _fmt(value):
    return "undefined (no objects)" if value != value else f"{value:.3f}"


def _iou_matrix(a, b):
    """(len(a), len(b)) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_detections(truth, detections, iou=MATCH_IOU, min_score=MIN_SCORED):
    """(scores, right) over every detection scored >= ``min_score``: right when it matches,
    highest score first within its image, an unmatched object of its class at IoU >= ``iou``."""
    scores, right = [], []
    for (true_boxes, true_labels), (boxes, found_scores, labels) in zip(truth, detections):
        true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
        keep = np.asarray(found_scores) >= min_score
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)[keep]
        found_scores, labels = np.asarray(found_scores)[keep], np.asarray(labels)[keep]
        overlap = _iou_matrix(boxes, true_boxes)  # (found, true)
        taken = np.zeros(len(true_boxes), bool)
        for k in np.argsort(-found_scores, kind="stable"):
            same = (np.asarray(true_labels) == labels[k]) & ~taken
            candidates = np.where(same, overlap[k], -1.0)
            best = int(candidates.argmax()) if len(candidates) else -1
            hit = best >= 0 and candidates[best] >= iou
            if hit:
                taken[best] = True
            scores.append(float(found_scores[k]))
            right.append(bool(hit))
    return np.asarray(scores, np.float64), np.asarray(right, bool)


def detection_calibration(truth, detections, n_bins=CALIBRATION_BINS):
    """ECE and reliability bins of detection scores against how often they are right."""
    scores, right = match_detections(truth, detections)
    which = _bin_of(scores, n_bins)
    ece, mce, bins = _reliability(np.bincount(which, minlength=n_bins),
                                  np.bincount(which, weights=right.astype(np.float64),
                                              minlength=n_bins),
                                  np.bincount(which, weights=scores, minlength=n_bins))
    return {"task": "detection", "ece": ece, "mce": mce, "n_bins": n_bins,
            "bins": bins, "n_detections": int(len(scores)), "temperature": None,
            "method": f"every detection scored >= {MIN_SCORED} is right when it matches, "
                      f"highest score first, an unmatched object of its class at IoU >= "
                      f"{MATCH_IOU}; ECE = sum over {n_bins} score bins of (share of detections) "
                      f"x |share right - mean score|"}


def _bin_of(confidences, n_bins):
    """The bin (k/n, (k+1)/n] of each confidence; 0 goes in the first."""
    return np.clip(np.ceil(confidences * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def _reliability(count, right, confidence):
    """(ECE, MCE, bins) from per-bin counts, sums of rightness and sums of confidence."""
    edges, bins, ece, mce = np.linspace(0, 1, len(count) + 1), [], 0.0, 0.0
    for k in range(len(count)):
        entry = {"low": float(edges[k]), "high": float(edges[k + 1]), "count": int(count[k]),
                 "accuracy": None, "confidence": None}
        if count[k]:
            entry["accuracy"] = float(right[k] / count[k])
            entry["confidence"] = float(confidence[k] / count[k])
            gap = abs(entry["accuracy"] - entry["confidence"])
            ece += count[k] / count.sum() * gap
            mce = max(mce, gap)
        bins.append(entry)
    return float(ece), float(mce), bins


def _drawn_detections(images, truth, found, classes):
    """A row of test scenes with true boxes (white) and found ones (coloured, labelled)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = min(N_DRAWN, len(images))
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.1), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(plots._as_rgb(images[k]), interpolation="nearest")
        for x1, y1, x2, y2 in truth[k][0]:
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                   edgecolor="white", lw=1.2))
        boxes, scores, labels = found[k]
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
            if score < DRAWN_SCORE:
                continue
            colour = plt.cm.tab10(int(label) % 10)
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                   edgecolor=colour, lw=1.0, ls="--"))
            ax.text(x1, y1 - 1, f"{classes[int(label)]}:{score:.2f}", color=colour, fontsize=5.5)
        ax.axis("off")
    return plots._encode(fig)


# --- segmentation ------------------------------------------------------------------------------


def audit_segmentation(run):
    """(sections, figures) of a segmentation run's card from its test split."""
    from layerwise.metrics.segmentation import iou_from_confusion
    from layerwise.train.recipes.scenes import arrays

    images, masks = arrays(run.splits["test"])
    names = ["background"] + list(run.info["classes"])
    confusion, calibration, predicted = _pixel_pass(run.model, images, masks, len(names))
    result = iou_from_confusion(confusion)
    truth_pixels = confusion.sum(axis=1)
    rows = [{"label": name, "n_pixels": int(truth_pixels[k]),
             "IoU": None if result["per_class"][k] != result["per_class"][k]
             else float(result["per_class"][k])} for k, name in enumerate(names)]
    defined = [r for r in rows[1:] if r["IoU"] is not None]
    headline = None
    if defined:
        worst, best = min(defined, key=lambda r: r["IoU"]), max(defined, key=lambda r: r["IoU"])
        headline = (f"IoU by class ranges from {worst['IoU']:.3f} (class {worst['label']}) to "
                    f"{best['IoU']:.3f} (class {best['label']})")
    n = min(N_DRAWN, len(images))
    sections = {
        "metrics": {"task": "segmentation", "mIoU": float(result["mIoU"]),
                    "pixel_accuracy": float(result["pixel_accuracy"]),
                    "n_images": int(len(images)), "n": int(masks.size), "classes": names,
                    "method": "one confusion matrix over every test pixel; IoU = TP / (TP + FP "
                              "+ FN) per class, mIoU their mean over the classes present"},
        "disaggregated": {"classes": rows, "headline": headline, "warnings": [],
                          "note": "IoU per class, background included; n is the class's pixels "
                                  "in the test masks."},
        "calibration": calibration,
        "explanations": {"kind": "masks", "examples": list(range(n)),
                         "method": f"the first {n} test scenes, their true masks and the "
                                   f"predicted masks"},
    }
    figures = {"reliability": plots.reliability_diagram(calibration),
               "masks": plots.image_grid(list(images[:n]), [list(masks[:n]), predicted],
                                         [f"scene {k}" for k in range(n)], cmap="tab20",
                                         row_labels=["input", "true mask", "predicted"])}
    return sections, figures


def _pixel_pass(model, images, masks, n_classes, n_bins=CALIBRATION_BINS):
    """One pass over the test scenes: (confusion matrix, calibration of every pixel's top class
    probability, the first N_DRAWN predicted masks)."""
    from layerwise.metrics.segmentation import confusion_matrix
    from layerwise.train.recipes.scenes import pixel_probabilities

    confusion = np.zeros((n_classes, n_classes), np.int64)
    count, hits, total = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    predicted = []
    for probs, chunk in pixel_probabilities(model, images):  # (B, K, S, S), its slice
        conf, pred = probs.max(axis=1), probs.argmax(axis=1)  # (B, S, S)
        confusion_matrix(masks[chunk], pred, n_classes, out=confusion)
        which = _bin_of(conf.ravel(), n_bins)
        count += np.bincount(which, minlength=n_bins)
        hits += np.bincount(which, weights=(pred == masks[chunk]).ravel(), minlength=n_bins)
        total += np.bincount(which, weights=conf.ravel(), minlength=n_bins)
        predicted.extend(pred[:max(0, N_DRAWN - len(predicted))])
    ece, mce, bins = _reliability(count, hits, total)
    calibration = {"task": "segmentation", "ece": ece, "mce": mce, "n_bins": n_bins,
                   "bins": bins, "temperature": None,
                   "method": f"every test pixel's top class probability against whether that "
                             f"class is right, in {n_bins} equal-width bins"}
    return confusion, calibration, predicted
