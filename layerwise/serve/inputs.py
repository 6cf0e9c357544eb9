"""Checks of what a request sends, each failing with a one-line InputError and an HTTP status.

Images come as nested lists of floats in [0, 1] or as {"b64": base64 PNG or JPEG}; an encoded
image is decoded, converted and resized exactly as the run's training images were
(``layerwise.data.image_folder``), so what the model sees matches what it learned from. Table
cells come as JSON values and are read as the table reader reads a file's cells.
"""

import base64
import binascii
import io
import math

from layerwise.backend import xp
from layerwise.data.table_encoding import MISSING_TOKENS
from layerwise.errors import LayerwiseError
from layerwise.limits import shown

MAX_ENCODED_IMAGE_PIXELS = 4096 * 4096  # width x height of an encoded image before resizing


class InputError(LayerwiseError, ValueError):
    """A request the model cannot take; ``status`` is the HTTP status to answer with (422:
    well-formed JSON whose content is wrong; 400, 404, 413 for the other cases)."""

    def __init__(self, message, status=422):
        super().__init__(message)
        self.status = status


def kind_of(value):
    """What a JSON value is, as a message names it: "an object", "a list", ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


# --- images -----------------------------------------------------------------------------------


def parse_image(instance, shape):
    """(C, H, W) float32 in [0, 1] from a nested list of that shape ((H, W) also for a
    one-channel model) or from {"b64": ...}."""
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise InputError(f'an encoded image is {{"b64": "<base64 PNG or JPEG>"}}; got an '
                             f"object with keys {shown(sorted(instance))}")
        return decode_image(instance["b64"], shape)
    expected = _shape_text(shape)
    if not isinstance(instance, list):
        raise InputError(f'an image is a nested list of shape {expected} or {{"b64": "<base64 '
                         f'PNG>"}}; got {shown(instance)}')
    try:
        array = xp.asarray(instance)
    except (ValueError, TypeError, OverflowError):  # rows of different lengths
        raise InputError(f"the image's nested lists are not rectangular (rows of different "
                         f"lengths); expected shape {expected}") from None
    if array.dtype.kind not in "iuf":
        what = {"b": "booleans", "U": "strings"}.get(array.dtype.kind, "null or mixed values")
        raise InputError(f"an image's values must be numbers in [0, 1]; got {what}")
    channels = shape[0]
    if channels == 1 and array.shape == tuple(shape[1:]):
        array = array[None]  # (H, W) -> (1, H, W)
    if array.shape != tuple(shape):
        raise InputError(f"image of shape {_shape_text(array.shape)}; this model takes "
                         f"{expected}")
    array = array.astype(xp.float32)
    if not xp.isfinite(array).all():
        raise InputError("an image's values must be finite numbers in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        hint = " (divide 0-255 pixel values by 255)" if high > 1 else ""
        raise InputError(f"an image's values must be in [0, 1]; got values from {low:g} to "
                         f"{high:g}{hint}")
    return array


def decode_image(text, shape):
    """A base64 PNG or JPEG (a data: URL too) -> (C, H, W) float32, resized and converted to
    the run's size and channels as its training images were."""
    from PIL import Image

    from layerwise.data.image_folder import PIL_FORMATS, _pixels

    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # data:image/png;base64,....
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("b64 is not valid base64 (A-Z, a-z, 0-9, + and /, padded with =)") \
            from None
    channels, height, width = shape
    if height != width:  # the image recipes make square inputs only
        raise InputError(f"this model's images are {height} x {width}; send them as nested "
                         f"lists, not encoded")
    try:
        with Image.open(io.BytesIO(raw), formats=PIL_FORMATS) as im:
            if im.width * im.height > MAX_ENCODED_IMAGE_PIXELS:
                raise InputError(f"the image is {im.width} x {im.height} pixels; at most "
                                 f"{MAX_ENCODED_IMAGE_PIXELS:,} pixels are decoded (resize it "
                                 f"to {width} x {height} first)", status=413)
            im.load()
            return _pixels(im, channels == 1, height)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:80]
        if isinstance(err, Image.UnidentifiedImageError):
            reason = "not a PNG or JPEG image"
        raise InputError(f"b64 does not decode to an image: {reason}") from None


def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ")"


# --- table cells --------------------------------------------------------------------------------


def table_number(column, value):
    """A numeric column's cell as float (NaN for a missing value: null, or a string the table
    reader reads as missing, such as "" or "NA")."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if text in MISSING_TOKENS:
            return math.nan
        try:
            number = float(text)
        except ValueError:
            number = math.nan
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer past the largest float
            number = math.inf
    else:
        raise InputError(f"column {column!r} is numeric; got {shown(value)} (give a number, "
                         f"or null for a missing value)")
    if not math.isfinite(number):
        raise InputError(f"column {column!r} is numeric; got {shown(value)} (give a finite "
                         f"number, or null for a missing value)")
    return number


def table_category(column, value):
    """A categorical column's cell as the text the file would hold ('' for null: missing)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    raise InputError(f"column {column!r} holds categories; got {shown(value)} (give text, or "
                     f"null for a missing value)")
