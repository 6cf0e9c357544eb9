"""Box utilities for detectors, with torchvision.ops' names and semantics.

    iou = box_iou(boxes1, boxes2)              # (N, 4), (M, 4) -> (N, M)
    keep = nms(boxes, scores, iou_threshold=0.5)  # indices kept, by decreasing score
    keep = batched_nms(boxes, scores, classes, 0.5)  # NMS within each class only

Boxes are (x1, y1, x2, y2) with 0 <= x1 < x2 and 0 <= y1 < y2 unless converted with
``box_convert``. They are not differentiable: a detector's losses work on its heads' outputs,
and these run on its decoded predictions. Tensors or arrays in; Tensors out.
"""

from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _boxes(boxes, name="boxes"):
    """``boxes`` as a float (N, 4) array; a one-line ValueError for another shape."""
    array = boxes.data if isinstance(boxes, Tensor) else xp.asarray(boxes)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) boxes (x1, y1, x2, y2), got shape "
                         f"{tuple(array.shape)}")
    if array.dtype.kind != "f":
        array = array.astype(xp.float32)
    return array


def box_area(boxes):
    """(N,) areas (x2 - x1) * (y2 - y1) of (N, 4) xyxy boxes."""
    b = _boxes(boxes)
    return Tensor((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


def _iou(a, b):
    """(N, M) intersection over union of xyxy arrays a (N, 4) and b (M, 4)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (N,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (M,)
    top_left = xp.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = xp.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = xp.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    with xp.errstate(divide="ignore", invalid="ignore"):  # two empty boxes: 0 / 0, as torch
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def box_iou(boxes1, boxes2):
    """(N, M) intersection over union of every pair of xyxy boxes (N, 4) and (M, 4)."""
    return Tensor(_iou(_boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")))


def box_convert(boxes, in_fmt, out_fmt):
    """(N, 4) boxes from ``in_fmt`` to ``out_fmt``: "xyxy" (corners), "xywh" (top-left corner,
    width, height) or "cxcywh" (centre, width, height)."""
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {', '.join(BOX_FORMATS)}, got {fmt!r}")
    b = _boxes(boxes)
    if in_fmt == "xywh":
        b = xp.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    elif in_fmt == "cxcywh":
        b = xp.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    if out_fmt == "xywh":
        b = xp.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    elif out_fmt == "cxcywh":
        b = xp.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)
    return Tensor(xp.ascontiguousarray(b))


def _scores(scores, n):
    array = scores.data if isinstance(scores, Tensor) else xp.asarray(scores)
    if array.shape != (n,):
        raise ValueError(f"scores must be (N,) = ({n},), one per box, got shape "
                         f"{tuple(array.shape)}")
    return array


def nms(boxes, scores, iou_threshold):
    """Indices (int64) of the boxes kept by non-maximum suppression, by decreasing score: a
    box is dropped when its IoU with a higher-scoring kept box is above ``iou_threshold``."""
    b = _boxes(boxes)
    s = _scores(scores, len(b))
    order = xp.argsort(-s, kind="stable")  # equal scores keep their input order
    iou = _iou(b[order], b[order])  # (N, N) in score order
    suppressed = xp.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):  # greedy: each kept box suppresses the later ones it overlaps
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[i + 1:] |= iou[i, i + 1:] > iou_threshold
    return Tensor(order[xp.asarray(keep, dtype=xp.int64)].astype(xp.int64))


def batched_nms(boxes, scores, idxs, iou_threshold):
    """``nms`` within each category of ``idxs`` (N,) separately: boxes of different
    categories never suppress each other. Indices by decreasing score."""
    b = _boxes(boxes)
    s = _scores(scores, len(b))
    cats = idxs.data if isinstance(idxs, Tensor) else xp.asarray(idxs)
    if cats.shape != (len(b),):
        raise ValueError(f"idxs must be (N,) = ({len(b)},), one category per box, got shape "
                         f"{tuple(cats.shape)}")
    keep = [xp.flatnonzero(cats == c)[nms(b[cats == c], s[cats == c], iou_threshold).data]
            for c in xp.unique(cats)]
    kept = xp.concatenate(keep) if keep else xp.zeros(0, dtype=xp.int64)
    return Tensor(kept[xp.argsort(-s[kept], kind="stable")].astype(xp.int64))
