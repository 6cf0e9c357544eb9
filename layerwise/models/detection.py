"""CenterNet, "Objects as Points" (Zhou, Wang and Krähenbühl 2019): a detector that finds each
object as the peak of a class heatmap at its box centre, and reads the box's size and the
centre's sub-cell offset from two more maps at that peak.

    model = CenterNet(num_classes=10)
    out = model(images)                        # (B, 1, 96, 96) -> maps at stride 4, (B, *, 24, 24)
    targets = centernet_targets(boxes, labels, 10, out_size=(24, 24), stride=4)
    loss = centernet_loss(out, targets)
    detections = decode_detections(out)        # per image: (boxes xyxy px, scores, labels)

The backbone is a small ResNet with an FPN-like top-down step: a 3x3 stem at stride 1, one
stage of BasicBlocks at each of strides 2, 4 and 8, the stride-8 features projected (1x1
conv) to the stride-4 width, upsampled 2x and added to the stride-4 features. Three heads
(3x3 conv, ReLU, 1x1 conv) read the sum: the class heatmap (logits), the box size (w, h) and
the centre offset, both in output cells (input pixels / stride), as in the paper's code.

Decoding needs no NMS: the 3x3 max-pool peak filter keeps one point per local maximum, which
is what the paper uses in its place; ``nms_iou`` adds a per-class NMS for crowded scenes.
"""

import math

from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp
from layerwise.nn import functional as F
from layerwise.nn.activation import ReLU
from layerwise.nn.batchnorm import BatchNorm2d
from layerwise.nn.container import Sequential
from layerwise.nn.conv import Conv2d
from layerwise.nn.module import Module
from layerwise.models.vision import BasicBlock
from layerwise.ops.boxes import batched_nms

STRIDE = 4  # the output maps' stride: 96 px scenes give 24 x 24 maps
HEATMAP_PRIOR = 0.1  # the heatmap bias makes sigmoid = 0.1 everywhere at the start (paper)
MIN_OVERLAP = 0.7  # a box from a corner within the radius has IoU >= 0.7 (CornerNet)
FOCAL_ALPHA, FOCAL_BETA = 2, 4  # the penalty-reduced focal loss's exponents (paper, eq. 1)
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0  # lambda_size and lambda_off (paper, eq. 4)


class CenterNet(Module):
    """CenterNet for (B, in_channels, S, S) images, S a multiple of 8.

    ``channels``: the widths of the stages at strides 2, 4 and 8, ``blocks`` their BasicBlock
    counts; ``stem_channels`` the stride-1 stem's width, ``head_channels`` each head's hidden
    width. ``forward`` returns {"heatmap": (B, num_classes, S/4, S/4) logits, "size":
    (B, 2, S/4, S/4), "offset": (B, 2, S/4, S/4)}.
    """

    def __init__(self, num_classes=10, in_channels=1, channels=(16, 32, 64), blocks=(1, 1, 1),
                 stem_channels=16, head_channels=32):
        super().__init__()
        if len(channels) != 3 or len(blocks) != 3:
            raise ValueError(f"CenterNet needs three stages (strides 2, 4, 8): got channels="
                             f"{channels} and blocks={blocks}")
        self.num_classes, self.in_channels, self.stride = num_classes, in_channels, STRIDE
        self.conv1 = Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(stem_channels)
        self.relu = ReLU()
        width = stem_channels
        for i, (n, planes) in enumerate(zip(blocks, channels)):  # each stage halves H and W
            stage = [BasicBlock(width, planes, stride=2)]
            stage += [BasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", Sequential(*stage))
            width = planes
        self.lateral = Conv2d(channels[2], channels[1], 1)  # stride-8 width -> stride-4 width
        self.heatmap = _head(channels[1], head_channels, num_classes)
        self.size = _head(channels[1], head_channels, 2)
        self.offset = _head(channels[1], head_channels, 2)
        # Every cell starts at sigmoid = HEATMAP_PRIOR, so the many background cells do not
        # swamp the first steps' loss (the paper's -2.19, from RetinaNet's prior).
        self.heatmap[2].bias.data[...] = -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CenterNet expects images (B, {self.in_channels}, S, S), got "
                             f"shape {tuple(x.shape)}")
        if x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(f"CenterNet needs H and W that are multiples of 8 (its deepest "
                             f"stride), got {tuple(x.shape[2:])}")
        x = self.relu(self.bn1(self.conv1(x)))  # (B, stem, S, S)
        c2 = self.layer1(x)  # (B, C1, S/2, S/2)
        c4 = self.layer2(c2)  # (B, C2, S/4, S/4)
        c8 = self.layer3(c4)  # (B, C3, S/8, S/8)
        up = F.interpolate(self.lateral(c8), scale_factor=2, mode="nearest")  # (B, C2, S/4, S/4)
        p4 = c4 + up
        return {"heatmap": self.heatmap(p4), "size": self.size(p4), "offset": self.offset(p4)}


def _head(in_channels, hidden, out_channels):
    """3x3 conv, ReLU, 1x1 conv: one of CenterNet's output heads."""
    return Sequential(Conv2d(in_channels, hidden, 3, padding=1), ReLU(),
                      Conv2d(hidden, out_channels, 1))


# --- targets ------------------------------------------------------------------------------

def gaussian_radius(height, width, min_overlap=MIN_OVERLAP):
    """The Gaussian radius (in cells) for a (height, width) box, by CornerNet's formula as its
    and CenterNet's code compute it: the least of three quadratics' roots, each bounding how
    far a corner may move with the box keeping IoU >= ``min_overlap``. Arrays broadcast."""
    hw, s = height * width, height + width
    r1 = (s + xp.sqrt(s ** 2 - 4 * hw * (1 - min_overlap) / (1 + min_overlap))) / 2
    r2 = (2 * s + xp.sqrt(4 * s ** 2 - 16 * (1 - min_overlap) * hw)) / 2
    r3 = (-2 * min_overlap * s
          + xp.sqrt(4 * min_overlap ** 2 * s ** 2 - 16 * min_overlap * (min_overlap - 1) * hw)) / 2
    return xp.minimum(xp.minimum(r1, r2), r3)


def _draw_gaussian(heatmap, cx, cy, radius):
    """Max a (2r+1)^2 Gaussian with sigma (2r+1)/6, peak 1 at (cy, cx), into (H, W) heatmap."""
    d = xp.arange(-radius, radius + 1)
    sigma = (2 * radius + 1) / 6
    g = xp.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma ** 2))  # (2r+1, 2r+1)
    h, w = heatmap.shape
    top, bottom = min(cy, radius), min(h - cy, radius + 1)  # the window clipped to the map
    left, right = min(cx, radius), min(w - cx, radius + 1)
    window = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    xp.maximum(window, g[radius - top:radius + bottom, radius - left:radius + right], out=window)


def centernet_targets(boxes, labels, num_classes, out_size, stride=STRIDE):
    """Training targets from a padded batch: boxes (B, K, 4) xyxy input pixels, labels (B, K)
    with -1 for padding rows; ``out_size`` (H, W) of the output maps.

    Returns arrays: "heatmap" (B, num_classes, H, W) float32, a Gaussian per object on its
    class's map with peak 1.0 at the cell holding its centre / stride, its radius
    ``gaussian_radius`` of its size in cells rounded up, then floored (at least 0), the max
    where Gaussians meet; "size" (B, K, 2) the box (w, h) in cells; "offset" (B, K, 2)
    centre / stride minus its cell; "index" (B, K) int64 that cell as y * W + x; "mask"
    (B, K) float32, 1 for objects.
    """
    boxes = xp.asarray(boxes, dtype=xp.float64)
    labels = xp.asarray(labels)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or labels.shape != boxes.shape[:2]:
        raise ValueError(f"centernet_targets needs boxes (B, K, 4) and labels (B, K), got "
                         f"shapes {boxes.shape} and {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"centernet_targets labels must be integers (-1 for padding), got "
                        f"dtype {labels.dtype}")
    if (labels >= num_classes).any() or (labels < -1).any():
        bad = labels[(labels >= num_classes) | (labels < -1)][0]
        raise ValueError(f"centernet_targets label {int(bad)} is outside 0..{num_classes - 1} "
                         f"(or -1 for padding)")
    h, w = out_size
    b, k = labels.shape
    heatmap = xp.zeros((b, num_classes, h, w), dtype=xp.float32)
    size = xp.zeros((b, k, 2), dtype=xp.float32)
    offset = xp.zeros((b, k, 2), dtype=xp.float32)
    index = xp.zeros((b, k), dtype=xp.int64)
    mask = (labels >= 0).astype(xp.float32)
    cells = boxes / stride  # (B, K, 4) in output cells
    wh = cells[..., 2:] - cells[..., :2]  # (B, K, 2)
    centre = (cells[..., :2] + cells[..., 2:]) / 2
    cell = xp.clip(xp.floor(centre).astype(xp.int64), 0, [w - 1, h - 1])
    # the sizes rounded up, then the radius down, as the paper's code does
    radius = xp.maximum(gaussian_radius(xp.ceil(wh[..., 1]), xp.ceil(wh[..., 0])), 0)
    radius = radius.astype(xp.int64)
    for i, j in zip(*xp.nonzero(labels >= 0)):
        cx, cy = int(cell[i, j, 0]), int(cell[i, j, 1])
        _draw_gaussian(heatmap[i, labels[i, j]], cx, cy, int(radius[i, j]))
        size[i, j], offset[i, j], index[i, j] = wh[i, j], centre[i, j] - cell[i, j], cy * w + cx
    return {"heatmap": heatmap, "size": size, "offset": offset, "index": index, "mask": mask}


# --- loss ---------------------------------------------------------------------------------

def _at_centres(maps, index):
    """(B, 2, H, W) maps read at (B, K) flat cell indices -> (B, K, 2)."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)  # (B, 2, H*W)
    picked = flat.gather(2, xp.broadcast_to(index[:, None, :], (b, c, index.shape[1])))
    return picked.permute(0, 2, 1)  # (B, 2, K) -> (B, K, 2)


def centernet_loss(outputs, targets):
    """The paper's training loss (eq. 4): focal + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset.

    focal = -1/N sum (1 - p)^alpha log p                       at cells with target 1
                   + (1 - y)^beta p^alpha log(1 - p)           everywhere else
    size = 1/N sum_k |s_hat_k - s_k|_1, offset likewise, both read at each object's centre
    cell, with N the batch's object count (1 when there are none) and alpha 2, beta 4. The
    L1 terms follow the paper's eq. 2 (sum over w and h, over N); the paper's code divides
    by 2N, halving lambda_size and lambda_off in effect.
    """
    logits = outputs["heatmap"]
    y = xp.asarray(targets["heatmap"], dtype=logits.dtype)
    if tuple(logits.shape) != y.shape:
        raise ValueError(f"centernet_loss heatmap logits {tuple(logits.shape)} and target "
                         f"{y.shape} differ in shape")
    mask = xp.asarray(targets["mask"], dtype=logits.dtype)
    n = max(float(mask.sum()), 1.0)
    positive = Tensor((y == 1).astype(logits.dtype))
    negative = Tensor((1 - y) ** FOCAL_BETA)  # 0 at the peaks, where y is 1
    p = F.sigmoid(logits)
    # log p = -softplus(-x) and log(1 - p) = -softplus(x): finite for any logit, no clamp.
    pos = positive * (1 - p) ** FOCAL_ALPHA * F.softplus(-logits)
    neg = negative * p ** FOCAL_ALPHA * F.softplus(logits)
    focal = (pos + neg).sum() / n

    index = xp.asarray(targets["index"], dtype=xp.int64)
    weight = Tensor(mask[..., None])  # (B, K, 1): padding rows count nothing

    def l1(name):
        target = Tensor(xp.asarray(targets[name], dtype=logits.dtype))  # (B, K, 2)
        return (weight * (_at_centres(outputs[name], index) - target).abs()).sum() / n

    return focal + SIZE_WEIGHT * l1("size") + OFFSET_WEIGHT * l1("offset")


# --- decoding -----------------------------------------------------------------------------

def _array(value):
    return value.data if isinstance(value, Tensor) else xp.asarray(value)


def decode_detections(outputs, stride=STRIDE, max_detections=100, score_threshold=0.05,
                      nms_iou=None):
    """Boxes from CenterNet's maps: sigmoid, keep the cells that are the max of their 3x3
    neighbourhood, take the ``max_detections`` best over all classes, drop those under
    ``score_threshold``, and make (cx +- w/2, cy +- h/2) * stride boxes clipped to the image.

    ``nms_iou``: None (CenterNet's peaks need no NMS) or an IoU above which a lower-scoring box
    of the same class is dropped (``batched_nms``). Returns a list, one per image, of (boxes
    (k, 4) float32 xyxy input pixels, scores (k,) float32, labels (k,) int64), best first.
    """
    heat = _array(outputs["heatmap"])
    size, offset = _array(outputs["size"]), _array(outputs["offset"])
    if heat.ndim != 4 or size.shape != (heat.shape[0], 2) + heat.shape[2:] \
            or offset.shape != size.shape:
        raise ValueError(f"decode_detections needs heatmap (B, C, H, W), size and offset "
                         f"(B, 2, H, W), got {heat.shape}, {size.shape}, {offset.shape}")
    b, _, h, w = heat.shape
    scores = 0.5 + 0.5 * xp.tanh(0.5 * heat.astype(xp.float32))  # sigmoid; no exp overflow
    peaks = F.max_pool2d(Tensor(scores), 3, stride=1, padding=1).data == scores
    scores = xp.where(peaks, scores, 0).reshape(b, -1)  # (B, C*H*W)
    k = min(max_detections, scores.shape[1])
    results = []
    for i in range(b):
        top = xp.argpartition(-scores[i], k - 1)[:k] if k < scores.shape[1] else \
            xp.arange(scores.shape[1])
        top = top[xp.argsort(-scores[i, top], kind="stable")]
        top = top[scores[i, top] >= score_threshold]
        label, cell = top // (h * w), top % (h * w)
        y, x = cell // w, cell % w
        cx, cy = x + offset[i, 0, y, x], y + offset[i, 1, y, x]
        # an untrained size head can predict negative sizes: an empty box, not x2 < x1
        half_w, half_h = xp.maximum(size[i, :, y, x], 0).T / 2  # (k, 2) -> two (k,)
        boxes = xp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1) * stride
        boxes = xp.clip(boxes, 0, [w * stride, h * stride, w * stride, h * stride])
        found = (boxes.astype(xp.float32), scores[i, top].astype(xp.float32),
                 label.astype(xp.int64))
        if nms_iou is not None and len(top):
            keep = batched_nms(found[0], found[1], found[2], nms_iou).data
            found = tuple(part[keep] for part in found)
        results.append(found)
    return results
