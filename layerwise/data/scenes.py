"""Scenes of several digits for detection and segmentation, built from the shipped 5k digits.

    splits = digit_scenes(seed=0)                        # {'train', 'val', 'test'}
    images, boxes, labels, masks = splits["train"].tensors
    # (N, 1, 96, 96) float32 in [0, 1]; (N, 6, 4) float32 xyxy pixels, padding rows 0;
    # (N, 6) int64 digit 0-9, padding -1; (N, 96, 96) int64, 0 background, digit + 1 on its ink
    boxes_i, labels_i = splits["test"].objects(i)        # scene i's objects, unpadded

Each scene is a SCENE_SIZE x SCENE_SIZE grey canvas holding MIN_DIGITS-MAX_DIGITS digits (the
number drawn uniformly), each resized by bilinear interpolation from 28 px to a side drawn
uniformly from MIN_SIDE-MAX_SIDE px and put at a uniform position, so that no two digits'
boxes have an IoU above MAX_PLACEMENT_IOU (MAX_PLACEMENT_TRIES positions are tried for each
digit; a digit that finds no place is left out, so a crowded scene may hold fewer). Digits
are pasted with max(), so where two overlap the ink stays ink.

A digit's ink is its resized pixels above INK_THRESHOLD. Its box is the tight box of its own
ink, in pixels: x1 = first ink column, x2 = last ink column + 1 (y likewise), so the box
holds all of the digit's ink even where a later digit covers part of it. The mask carries
digit + 1 on each digit's ink; where two digits' ink overlaps, the digit pasted later wins
(objects are stored in pasting order). The background is faint clutter, a few short strokes
and soft blobs plus noise, all at most CLUTTER_MAX, below INK_THRESHOLD: thresholding an
image at INK_THRESHOLD gives exactly the pixels its mask marks.

A split's scenes use only that split's digits of ``digits_splits(seed)`` (``.sources`` holds
each object's index into the 5,000 digits of ``load_digits_5k``, -1 for padding), drawn with
replacement, so a train digit appears in several train scenes. Each split has its own
generator, seeded from (seed, split), so the same arguments give the same scenes bit for bit.
"""

import functools

from layerwise.backend import xp
from layerwise.data.dataset import TensorDataset, stratified_split
from layerwise.data.digits import load_digits_5k

SCENE_SIZE = 96  # pixels a side: room for six digits of up to 40 px
MAX_OBJECTS = 6  # rows of the padded boxes and labels
N_MASK_CLASSES = 11  # background + the ten digits
MIN_DIGITS, MAX_DIGITS = 2, MAX_OBJECTS  # digits drawn for one scene
MIN_SIDE, MAX_SIDE = 18, 40  # pixels a side of a resized digit, at SCENE_SIZE
MAX_PLACEMENT_IOU = 0.1  # most IoU allowed between two digits' boxes of one scene
MAX_PLACEMENT_TRIES = 50  # positions tried for one digit before it is left out
INK_THRESHOLD = 0.5  # a resized digit's pixels above this are its ink (mask and box)
CLUTTER_MAX = 0.35  # the background never reaches INK_THRESHOLD, so clutter is never ink
NOISE_LEVEL = 0.05  # background noise, uniform in [0, NOISE_LEVEL)
STROKES_PER_SCENE = (1, 3)  # clutter strokes of one scene, inclusive range
BLOBS_PER_SCENE = (0, 2)  # clutter blobs of one scene, inclusive range
CLUTTER_INTENSITY = (0.1, 0.3)  # peak value of one stroke or blob
MIN_SCENE_SIZE, MAX_SCENE_SIZE = 32, 512  # below 32 the digits shrink under 6 px
DEFAULT_COUNTS = {"train": 4000, "val": 500, "test": 1000}
SPLITS = ("train", "val", "test")
DIGIT_FRACTIONS = (0.8, 0.1, 0.1)  # digits_splits' default, which the scenes' digits follow
CLASS_NAMES = [str(d) for d in range(10)]


# --- resizing and pasting -----------------------------------------------------------------

@functools.cache
def _bilinear_matrix(n_in, n_out):
    """(n_out, n_in) float32 bilinear weights with half-pixel centres (PyTorch's
    align_corners=False, no antialiasing): src = max((i + 0.5) * n_in / n_out - 0.5, 0)."""
    src = xp.maximum((xp.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = xp.minimum(xp.floor(src).astype(xp.int64), n_in - 1)
    hi = xp.minimum(lo + 1, n_in - 1)
    frac = src - lo
    matrix = xp.zeros((n_out, n_in))
    xp.add.at(matrix, (xp.arange(n_out), lo), 1.0 - frac)
    xp.add.at(matrix, (xp.arange(n_out), hi), frac)
    return matrix.astype(xp.float32)


def resize_bilinear(images, side):
    """(n, h, w) -> (n, side, side) float32 by bilinear interpolation, as
    ``F.interpolate(x, (side, side), mode="bilinear", align_corners=False)``."""
    images = xp.asarray(images, dtype=xp.float32)
    rows = _bilinear_matrix(images.shape[1], side)  # (side, h)
    cols = _bilinear_matrix(images.shape[2], side)  # (side, w)
    return rows @ images @ cols.T  # (side, h) @ (n, h, w) @ (w, side) -> (n, side, side)


def ink_boxes(patches):
    """(n, s, s) resized digits -> (n, 4) int64 xyxy tight boxes of the pixels above
    INK_THRESHOLD (x2, y2 one past the last ink column, row), and (n,) bool: has any ink."""
    ink = patches > INK_THRESHOLD
    rows, cols = ink.any(axis=2), ink.any(axis=1)  # (n, s) each
    s = patches.shape[1]
    y1, y2 = rows.argmax(axis=1), s - rows[:, ::-1].argmax(axis=1)
    x1, x2 = cols.argmax(axis=1), s - cols[:, ::-1].argmax(axis=1)
    return xp.stack([x1, y1, x2, y2], axis=1).astype(xp.int64), rows.any(axis=1)


def _paste(canvas, instances, patch, top, left, value):
    """Paste ``patch`` at (top, left) with max(); mark its ink ``value`` in ``instances``."""
    s = patch.shape[0]
    region = canvas[top:top + s, left:left + s]
    xp.maximum(region, patch, out=region)
    instances[top:top + s, left:left + s][patch > INK_THRESHOLD] = value


def place_digits(canvas_size, digits, positions, sides, background=None):
    """Paste ``digits`` (k, h, w) in [0, 1], each resized to ``sides[j]`` px, with the top-left
    corner of its sides[j] x sides[j] frame at ``positions[j]`` = (row, col).

    Returns (canvas (S, S) float32, instances (S, S) int64: j + 1 on digit j's ink, the later
    digit winning where ink overlaps, 0 elsewhere, boxes (k, 4) float32 xyxy of each digit's
    own ink). ``background`` (S, S) is the canvas to paste on (zeros when None).
    """
    digits = xp.asarray(digits, dtype=xp.float32)
    positions = xp.asarray(positions, dtype=xp.int64).reshape(-1, 2)
    sides = [int(s) for s in sides]
    if digits.ndim != 3 or not (len(digits) == len(positions) == len(sides)):
        raise ValueError(f"place_digits needs digits (k, h, w), positions (k, 2) and sides (k,) "
                         f"of one k, got shapes {digits.shape}, {positions.shape}, {len(sides)}")
    canvas = (xp.zeros((canvas_size, canvas_size), dtype=xp.float32) if background is None
              else xp.array(background, dtype=xp.float32))
    instances = xp.zeros((canvas_size, canvas_size), dtype=xp.int64)
    boxes = xp.zeros((len(sides), 4), dtype=xp.float32)
    for j, (digit, (top, left), side) in enumerate(zip(digits, positions.tolist(), sides)):
        if side < 1 or top < 0 or left < 0 or top + side > canvas_size \
                or left + side > canvas_size:
            raise ValueError(f"digit {j}: a {side} px frame at (row, col) = ({top}, {left}) "
                             f"does not fit a {canvas_size} px canvas")
        patch = resize_bilinear(digit[None], side)  # (1, side, side)
        box, has_ink = ink_boxes(patch)
        if not has_ink[0]:
            raise ValueError(f"digit {j} has no pixel above INK_THRESHOLD={INK_THRESHOLD} at "
                             f"{side} px; give a digit with ink")
        _paste(canvas, instances, patch[0], top, left, j + 1)
        boxes[j] = box[0] + xp.asarray([left, top, left, top])
    return canvas, instances, boxes


# --- clutter ------------------------------------------------------------------------------

def _clutter(rng, n, size):
    """(n, size, size) float32 background in [0, CLUTTER_MAX]: strokes, blobs and noise."""
    flat = xp.zeros(n * size * size, dtype=xp.float32)
    scale = size / SCENE_SIZE
    # Strokes: short straight segments, rasterised as 2 * length points rounded to pixels.
    per = rng.integers(STROKES_PER_SCENE[0], STROKES_PER_SCENE[1] + 1, n)
    scene = xp.repeat(xp.arange(n), per)  # (M,) the scene of each stroke
    m = len(scene)
    start = rng.random((m, 2)) * size
    angle = rng.random(m) * 2 * xp.pi
    length = (6 + rng.random(m) * 10) * scale
    level = rng.uniform(*CLUTTER_INTENSITY, m).astype(xp.float32)
    t = xp.linspace(0.0, 1.0, max(2, int(32 * scale)))  # (P,)
    r = start[:, :1] + t * (length * xp.sin(angle))[:, None]  # (M, P)
    c = start[:, 1:] + t * (length * xp.cos(angle))[:, None]
    r = xp.clip(xp.rint(r), 0, size - 1).astype(xp.int64)
    c = xp.clip(xp.rint(c), 0, size - 1).astype(xp.int64)
    index = (scene[:, None] * size + r) * size + c
    xp.maximum.at(flat, index.ravel(), xp.repeat(level, r.shape[1]))
    # Blobs: soft Gaussian spots, stamped in a 9 x 9 window.
    per = rng.integers(BLOBS_PER_SCENE[0], BLOBS_PER_SCENE[1] + 1, n)
    scene = xp.repeat(xp.arange(n), per)
    m = len(scene)
    centre = xp.floor(rng.random((m, 2)) * size).astype(xp.int64)
    sigma = (1.0 + rng.random(m) * 1.5) * scale
    level = rng.uniform(*CLUTTER_INTENSITY, m)
    d = xp.arange(-4, 5)
    dr, dc = d[:, None, None], d[None, :, None]  # (9, 1, 1), (1, 9, 1)
    value = level * xp.exp(-(dr ** 2 + dc ** 2) / (2 * sigma ** 2))  # (9, 9, M)
    r, c = centre[:, 0] + dr, centre[:, 1] + dc  # (9, 1, M), (1, 9, M)
    r, c = xp.broadcast_arrays(r, c)
    inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
    index = (xp.broadcast_to(scene, inside.shape) * size + r) * size + c
    xp.maximum.at(flat, index[inside], value[inside].astype(xp.float32))
    background = flat.reshape(n, size, size)
    background += rng.random((n, size, size), dtype=xp.float32) * xp.float32(NOISE_LEVEL)
    return xp.minimum(background, xp.float32(CLUTTER_MAX), out=background)


# --- scenes -------------------------------------------------------------------------------

def _area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(candidates, placed):
    """(T, 4) candidate boxes against (k, 4) placed boxes -> (T, k) IoU (xyxy). The data
    package sits below ops, so this is not ``ops.box_iou`` (which the tests check it by)."""
    lt = xp.maximum(candidates[:, None, :2], placed[None, :, :2])
    rb = xp.minimum(candidates[:, None, 2:], placed[None, :, 2:])
    inter = xp.maximum(rb - lt, 0).prod(axis=2)
    return inter / (_area(candidates)[:, None] + _area(placed)[None, :] - inter)


def _build_split(digits, digit_labels, digit_index, count, size, rng):
    """Arrays (images, boxes, labels, masks, sources, positions, sides) of ``count`` scenes
    made from ``digits`` (n, 28, 28), whose indices in the 5k set are ``digit_index``."""
    n_drawn = rng.integers(MIN_DIGITS, MAX_DIGITS + 1, count)
    total = int(n_drawn.sum())
    pick = rng.integers(0, len(digits), total)
    low = max(1, round(MIN_SIDE * size / SCENE_SIZE))
    high = max(low, round(MAX_SIDE * size / SCENE_SIZE))
    sides = rng.integers(low, high + 1, total)
    tries = rng.random((total, MAX_PLACEMENT_TRIES, 2))  # (T, tries, 2) fractions of the room
    canvas = _clutter(rng, count, size)  # (N, S, S)

    # Resize one side at a time: one batched matrix product per side length.
    patches = [None] * total
    rel_boxes = xp.zeros((total, 4), dtype=xp.int64)
    has_ink = xp.zeros(total, dtype=bool)
    for side in xp.unique(sides).tolist():
        which = xp.flatnonzero(sides == side)
        resized = resize_bilinear(digits[pick[which]], side)  # (m, side, side)
        rel_boxes[which], has_ink[which] = ink_boxes(resized)
        for j, patch in zip(which.tolist(), resized):
            patches[j] = patch
    corner = xp.floor(tries * (size - sides + 1)[:, None, None]).astype(xp.int64)  # (row, col)
    candidates = rel_boxes[:, None, :] + corner[:, :, [1, 0, 1, 0]]  # (T, tries, 4) xyxy

    masks = xp.zeros((count, size, size), dtype=xp.int64)
    boxes = xp.zeros((count, MAX_OBJECTS, 4), dtype=xp.float32)
    labels = xp.full((count, MAX_OBJECTS), -1, dtype=xp.int64)
    sources = xp.full((count, MAX_OBJECTS), -1, dtype=xp.int64)
    positions = xp.zeros((count, MAX_OBJECTS, 2), dtype=xp.int64)
    placed_sides = xp.zeros((count, MAX_OBJECTS), dtype=xp.int64)
    first = xp.concatenate([[0], xp.cumsum(n_drawn)])
    for i in range(count):
        k = 0
        for j in range(first[i], first[i + 1]):
            if not has_ink[j]:
                continue
            t = 0  # the first try that overlaps no placed box beyond the threshold
            if k > 0:
                ok = (_iou(candidates[j], boxes[i, :k]) <= MAX_PLACEMENT_IOU).all(axis=1)
                if not ok.any():
                    continue
                t = int(ok.argmax())
            top, left = corner[j, t].tolist()
            label = digit_labels[pick[j]]
            _paste(canvas[i], masks[i], patches[j], top, left, label + 1)
            boxes[i, k], labels[i, k] = candidates[j, t], label
            sources[i, k], positions[i, k], placed_sides[i, k] = \
                digit_index[pick[j]], (top, left), sides[j]
            k += 1
    return canvas[:, None], boxes, labels, masks, sources, positions, placed_sides


def _objects(boxes, labels):
    def objects(i):
        """(boxes (k, 4) float32 xyxy pixels, labels (k,) int64) of sample i, unpadded."""
        keep = labels[i] >= 0
        return boxes[i][keep].copy(), labels[i][keep].copy()
    return objects


@functools.lru_cache(maxsize=2)
def _build(seed, counts, size):
    images, labels = load_digits_5k()
    parts = stratified_split(labels, DIGIT_FRACTIONS, seed=seed)  # as digits_splits(seed)
    out = {}
    for name, count in counts:
        code = SPLITS.index(name)
        index = parts[code]
        rng = xp.random.default_rng([seed, code])  # one stream per split
        arrays = _build_split(images[index, 0], labels[index], index, count, size, rng)
        ds = TensorDataset(*arrays[:4])
        ds.class_names = list(CLASS_NAMES)
        ds.objects = _objects(arrays[1], arrays[2])
        ds.sources, ds.positions, ds.sides = arrays[4:]
        out[name] = ds
    return out


def _check_counts(counts):
    if counts is None:
        return dict(DEFAULT_COUNTS)
    if not isinstance(counts, dict) or set(counts) - set(SPLITS):
        raise ValueError(f"counts must be a dict with keys among {', '.join(SPLITS)}, got "
                         f"{counts!r}")
    merged = dict(DEFAULT_COUNTS, **counts)
    for name, n in merged.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"counts[{name!r}] must be an int >= 0, got {n!r}")
    return merged


def digit_scenes(seed=0, counts=None, size=SCENE_SIZE):
    """{'train', 'val', 'test'} TensorDatasets of (images, boxes, labels, masks) scenes.

    ``counts`` maps split names to scene counts (missing ones take DEFAULT_COUNTS: train 4000,
    val 500, test 1000); ``size`` is the canvas side in pixels (digit sides scale with it).
    Each dataset also carries ``class_names``, ``objects(i)``, and per object ``sources``
    (index into ``load_digits_5k``), ``positions`` (row, col of the resized digit's frame) and
    ``sides``, -1 / 0 for padding. The default counts take 0.61 GB (the int64 masks 0.41 GB)
    and about 3 s to build on one core; the last two (seed, counts, size) built are kept in
    the process, and their arrays are shared between calls, so copy before changing them.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, xp.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    seed = int(seed)
    if isinstance(size, bool) or not isinstance(size, int) \
            or not MIN_SCENE_SIZE <= size <= MAX_SCENE_SIZE:
        raise ValueError(f"size must be an int from {MIN_SCENE_SIZE} to {MAX_SCENE_SIZE} "
                         f"pixels, got {size!r}")
    counts = _check_counts(counts)
    return dict(_build(seed, tuple((name, counts[name]) for name in SPLITS), size))
