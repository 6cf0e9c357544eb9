"""A user's labelled images in COCO's format, as the same kind of dataset as ``digit_scenes``.

    ds = read_coco("annotations/instances_train.json", "images/", size=96)
    images, boxes, labels, masks = ds.tensors   # (N, C, S, S), (N, M, 4), (N, M), (N, S, S)
    ds.class_names, ds.category_ids             # ['dog', 'cat'], [3, 7]: label k is id [k]
    ds.image_ids, ds.file_names                 # the file's images, in its order
    boxes_i, labels_i = ds.objects(i)           # image i's objects, unpadded

The file's ``images`` (``id``, ``file_name``, optionally ``width`` and ``height``),
``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in pixels, ``segmentation``
as polygons or RLE, with its counts as a list or COCO's compressed string, ``iscrowd``) and
``categories`` (``id``, ``name``) are read as pycocotools reads them. Category ids become labels
0..K-1 in increasing id order, with the categories' names as class names.

Each image is decoded by Pillow as stored (no EXIF rotation: the annotations' coordinates are
the stored pixels', as torchvision's CocoDetection reads them), grey or RGB as the files are
(all must agree), and resized to size x size by Pillow's bilinear filter; boxes are scaled by
the same factors and clipped to the image. Masks are label + 1 on each object's pixels, 0
elsewhere, painted in the file's order so that where objects overlap the later one wins,
then resized by nearest-neighbour sampling at pixel centres. Crowd objects (``iscrowd`` 1)
paint the mask but are left out of boxes and labels, as COCO's evaluation leaves them out of
the objects to find. An object without a segmentation has a box and no mask pixels; polygons
of fewer than 3 points are left out of the masks with one warning, as detectron2 leaves them.

Boxes and labels are padded to the file's most non-crowd objects in one image (at least 1):
padding rows 0 and -1, as in ``digit_scenes``.
"""

import io
import json
import math
import os
import warnings

from layerwise.backend import xp
from layerwise.data.dataset import TensorDataset
from layerwise.data.image_folder import (
    GREY_MODES,
    PIL_FORMATS,
    _decode_errors,
    _pillow,
    _undecodable,
)
from layerwise.data.scenes import SCENE_SIZE, _objects
from layerwise.data.tables import MissingDependencyError
from layerwise.errors import BadFileError
from layerwise.limits import MAX_IMAGE_FOLDER_BYTES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, shown

_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# Polygon vertices this many image sizes beyond an edge are a mistake, not a clipped object
# (and would overflow pycocotools' int arithmetic when far larger).
_POLYGON_MARGIN = 1.0


def _number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _load(path):
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadFileError(f"{path} is not JSON ({err}); give a COCO instances_*.json file")
    if not isinstance(data, dict):
        raise BadFileError(f"{path} holds a JSON {type(data).__name__}, not a COCO object with "
                           f"'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            found = "is missing" if key not in data else f"is a {type(data[key]).__name__}"
            raise BadFileError(f"{path}: the list {key!r} {found}; a COCO file has 'images', "
                               f"'annotations' and 'categories' lists")
    return data


def _entry(path, table, i, entry, keys):
    """Check ``entry`` (``table[i]`` of the file) is an object with every one of ``keys``."""
    if not isinstance(entry, dict):
        raise BadFileError(f"{path}: {table}[{i}] is {shown(entry)}, not an object")
    for key, kind in keys.items():
        value = entry.get(key)
        if key not in entry or isinstance(value, bool) or not isinstance(value, kind):
            what = "is missing" if key not in entry else f"is {shown(value)}"
            name = {int: "an integer", str: "a string"}[kind]
            raise BadFileError(f"{path}: {table}[{i}] {key!r} {what}; it must be {name}")


def _read_entries(path, data):
    """(images, categories sorted by id, annotations per image index) checked, in file order."""
    images = data["images"]
    if not images:
        raise BadFileError(f"{path} lists no images; add at least one entry to 'images'")
    where = {}
    for i, image in enumerate(images):
        _entry(path, "images", i, image, {"id": int, "file_name": str})
        if image["id"] in where:
            raise BadFileError(f"{path}: images[{i}] repeats id {image['id']} of "
                               f"images[{where[image['id']]}]; image ids must be unique")
        where[image["id"]] = i
    categories = {}
    for i, category in enumerate(data["categories"]):
        _entry(path, "categories", i, category, {"id": int, "name": str})
        if category["id"] in categories:
            raise BadFileError(f"{path}: categories[{i}] repeats id {category['id']}; "
                               f"category ids must be unique")
        categories[category["id"]] = category["name"]
    if not categories:
        raise BadFileError(f"{path} lists no categories; add one entry per class to "
                           f"'categories'")
    per_image = [[] for _ in images]
    for i, ann in enumerate(data["annotations"]):
        _entry(path, "annotations", i, ann, {"image_id": int, "category_id": int})
        if ann["image_id"] not in where:
            raise BadFileError(f"{path}: annotations[{i}] has image_id {ann['image_id']}, "
                               f"which is not the id of any entry of 'images'")
        if ann["category_id"] not in categories:
            raise BadFileError(f"{path}: annotations[{i}] has category_id "
                               f"{ann['category_id']}, which is not in 'categories' (ids "
                               f"{shown(sorted(categories))})")
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise BadFileError(f"{path}: annotations[{i}] 'iscrowd' is {shown(crowd)}; it "
                               f"must be 0 or 1")
        bbox = ann.get("bbox")
        if not crowd or bbox is not None:
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_number, bbox))):
                raise BadFileError(f"{path}: annotations[{i}] 'bbox' is {shown(bbox)}; it "
                                   f"must be 4 numbers [x, y, width, height]")
            if bbox[2] < 0 or bbox[3] < 0:
                raise BadFileError(f"{path}: annotations[{i}] 'bbox' {shown(bbox)} has a "
                                   f"negative width or height")
        per_image[where[ann["image_id"]]].append(i)
    return images, dict(sorted(categories.items())), per_image


def _rle_string_counts(text):
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString): each count
    is a little-endian base-32 number, 5 bits a character from '0', and counts after the
    second are stored as the difference from the count two before."""
    counts, p = [], 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("it ends inside a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} is outside '0'..'o'")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _object_mask(mask_utils, path, i, segmentation, height, width, degenerate):
    """(H, W) uint8 mask of annotations[i]'s segmentation through pycocotools, or None when it
    has only polygons of fewer than 3 points (their indices are appended to ``degenerate``).
    The input is checked first, since pycocotools' C code trusts it: run lengths that overrun
    the image write past its buffer, and a 4-number polygon is read as a box."""
    where = f"{path}: annotations[{i}] 'segmentation'"
    if isinstance(segmentation, list):
        limit = _POLYGON_MARGIN * max(height, width)
        polygons = []
        for poly in segmentation:
            if not (isinstance(poly, list) and len(poly) % 2 == 0 and all(map(_number, poly))):
                raise BadFileError(f"{where} has the polygon {shown(poly)}; each polygon must "
                                   f"be a list of (x, y) pairs of numbers")
            if not all(-limit <= v <= limit + edge for v, edge in
                       zip(poly, [width, height] * (len(poly) // 2))):
                raise BadFileError(f"{where} has the polygon {shown(poly)}, far outside the "
                                   f"{width}x{height} image")
            if len(poly) >= 6:
                polygons.append(poly)
        if len(polygons) < len(segmentation):
            degenerate.append(i)
        if not polygons:
            return None
        rles = mask_utils.frPyObjects(polygons, height, width)
        return mask_utils.decode(mask_utils.merge(rles))
    if not (isinstance(segmentation, dict) and "counts" in segmentation):
        raise BadFileError(f"{where} is {shown(segmentation)}; it must be a list of polygons "
                           f"or an RLE object with 'counts' and 'size'")
    size, counts = segmentation.get("size"), segmentation["counts"]
    if size != [height, width]:
        raise BadFileError(f"{where} has size {shown(size)}, but the image is [height, width] "
                           f"= [{height}, {width}]")
    if isinstance(counts, str):
        try:
            runs = _rle_string_counts(counts)
        except ValueError as err:
            raise BadFileError(f"{where} is not a COCO compressed RLE string ({err})") from None
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                          for c in counts):
        runs = counts
    else:
        raise BadFileError(f"{where} 'counts' is {shown(counts)}; it must be a list of "
                           f"integers or COCO's compressed string")
    if any(c < 0 for c in runs) or sum(runs) != height * width:
        raise BadFileError(f"{where} has run lengths that sum to {sum(runs)} (or are "
                           f"negative); they must cover the {height}x{width} = "
                           f"{height * width} pixels")
    if isinstance(counts, str):
        return mask_utils.decode({"size": size, "counts": counts.encode("ascii")})
    return mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))


def _header(path, table_path, i, file_name):
    """(grey, (width, height)) of an image file, from its header."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{table_path}: images[{i}] names {file_name!r}, which is not "
                                f"a file ({path!r})")
    try:
        with _pillow().open(path, formats=PIL_FORMATS) as im:
            return im.mode in GREY_MODES, im.size
    except _decode_errors() as err:
        raise _undecodable(path, err) from None


def _pixels(path, grey, size):
    """(C, size, size) float32 in [0, 1] of one image, as stored (no EXIF rotation)."""
    Image = _pillow()
    bilinear = Image.Resampling.BILINEAR
    try:
        with open(path, "rb") as f:
            content = f.read()
        with Image.open(io.BytesIO(content), formats=PIL_FORMATS) as im:
            im.load()
            if im.mode in _SIXTEEN_BIT:  # as floats: converting to "L" clips at 255
                im = Image.fromarray(xp.asarray(im, dtype=xp.float32) / 65535)
                return xp.asarray(im.resize((size, size), bilinear), dtype=xp.float32)[None]
            if not grey and im.mode in ("P", "PA"):  # transparency goes through RGBA
                im = im.convert("RGBA")
            im = im.convert("L" if grey else "RGB").resize((size, size), bilinear)
    except _decode_errors() as err:
        raise _undecodable(path, err) from None
    pixels = xp.asarray(im, dtype=xp.float32) / 255  # (S, S) or (S, S, 3)
    return pixels[None] if grey else pixels.transpose(2, 0, 1)  # (C, S, S)


def _nearest(n_in, n_out):
    """Source index of each of n_out samples at pixel centres: floor((i + 0.5) * n_in / n_out)."""
    return xp.minimum(((xp.arange(n_out) + 0.5) * (n_in / n_out)).astype(xp.int64), n_in - 1)


def read_coco(annotations, image_dir, size=SCENE_SIZE):
    """TensorDataset (images, boxes, labels, masks) of a COCO file's images, resized to size x
    size, with ``class_names``, ``category_ids``, ``image_ids``, ``file_names``, ``objects(i)``.

    Mistakes in the file or the folder are a BadFileError (or FileNotFoundError) of one line
    naming the file and the entry.
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise MissingDependencyError(
            "reading COCO annotations needs pycocotools: install layerwise[vision] "
            "(`pip install 'layerwise[vision]'`) or `pip install pycocotools`") from None
    if isinstance(size, bool) or not isinstance(size, int) \
            or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE:,} "
                         f"(pixels a side), got {shown(size)}")
    path, image_dir = os.fspath(annotations), os.fspath(image_dir)
    data = _load(path)
    images, categories, per_image = _read_entries(path, data)
    label_of = {cid: k for k, cid in enumerate(categories)}
    anns = data["annotations"]

    # Headers first: a missing file or mixed grey / colour is found before any decoding.
    files = [os.path.join(image_dir, image["file_name"]) for image in images]
    headers = [_header(f, path, i, image["file_name"])
               for i, (f, image) in enumerate(zip(files, images))]
    grey = headers[0][0]
    for i, (f, (g, (w, h))) in enumerate(zip(files, headers)):
        if g != grey:
            kinds = ("grey", "colour") if grey else ("colour", "grey")
            raise BadFileError(f"{f} is {kinds[1]} but {files[0]} is {kinds[0]}; the images of "
                               f"one COCO file must all be grey or all colour")
        for key, actual in (("width", w), ("height", h)):
            if key in images[i] and images[i][key] != actual:
                raise BadFileError(f"{path}: images[{i}] has {key} {shown(images[i][key])} "
                                   f"but {f} is {w}x{h} pixels")
    n, channels = len(images), 1 if grey else 3
    n_objects = [sum(1 for a in per_image[i] if not anns[a].get("iscrowd", 0))
                 for i in range(n)]
    max_objects = max(1, max(n_objects))
    need = n * (channels * 4 + 8) * size * size
    if need > MAX_IMAGE_FOLDER_BYTES:
        raise BadFileError(f"{path}: {n:,} images at {size} x {size} would take "
                           f"{need / 1e9:.2f} GB with their masks, more than "
                           f"MAX_IMAGE_FOLDER_BYTES = {MAX_IMAGE_FOLDER_BYTES / 1e9:g} GB; use "
                           f"a smaller size or fewer images")

    pixels = xp.empty((n, channels, size, size), dtype=xp.float32)  # (N, C, S, S)
    boxes = xp.zeros((n, max_objects, 4), dtype=xp.float32)
    labels = xp.full((n, max_objects), -1, dtype=xp.int64)
    masks = xp.zeros((n, size, size), dtype=xp.int64)
    degenerate = []  # annotations with polygons of fewer than 3 points
    for i, (f, (_, (width, height))) in enumerate(zip(files, headers)):
        pixels[i] = _pixels(f, grey, size)
        full = xp.zeros((height, width), dtype=xp.int64)  # (H, W) labels + 1, later wins
        scale = xp.asarray([size / width, size / height] * 2)
        k = 0
        for a in per_image[i]:
            ann, label = anns[a], label_of[anns[a]["category_id"]]
            segmentation = ann.get("segmentation")
            mask = _object_mask(mask_utils, path, a, segmentation, height, width,
                                degenerate) if segmentation else None
            if mask is not None:
                full[mask > 0] = label + 1
            if not ann.get("iscrowd", 0):
                x, y, w, h = ann["bbox"]
                boxes[i, k] = xp.clip(xp.asarray([x, y, x + w, y + h]) * scale, 0, size)
                labels[i, k] = label
                k += 1
        masks[i] = full[_nearest(height, size)[:, None], _nearest(width, size)[None, :]]
    if degenerate:  # dropped, as detectron2 drops them, rather than refusing the whole file
        warnings.warn(f"{path}: left polygons of fewer than 3 points out of the masks of "
                      f"{len(degenerate)} annotation(s), e.g. annotations[{degenerate[0]}]",
                      stacklevel=2)
    ds = TensorDataset(pixels, boxes, labels, masks)
    ds.class_names = list(categories.values())
    ds.category_ids = list(categories)
    ds.image_ids = [image["id"] for image in images]
    ds.file_names = [image["file_name"] for image in images]
    ds.objects = _objects(boxes, labels)
    return ds
