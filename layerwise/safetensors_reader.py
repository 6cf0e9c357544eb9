"""Reading a safetensors file without trusting it: every claim of the header is checked
against the file before any tensor is read.

A crafted or truncated file costs no more memory than its own size and fails with one
``BadFileError`` line naming the file. Every dtype the safetensors format defines is read except
F6_E2M3 / F6_E3M2 (see ``_read_tensor``); the ones NumPy lacks are widened to float32, exactly:
BF16 by moving its 16 bits to the top of a float32; the FP8 formats (OCP F8_E4M3 and F8_E5M2,
the FNUZ variants, the F8_E8M0 scale) and F4 (OCP MX E2M1, two per byte, the first in the low
nibble, as PyTorch's float4_e2m1fn_x2) through a table of every code's value.
"""

import functools
import json
import math
import os
import stat
import struct

from layerwise.backend import xp
from layerwise.errors import BadFileError

# Reserved metadata keys. safetensors stores tensors sorted by dtype and name, so the original
# key order travels in the header; values that are not strings travel JSON-encoded.
ORDER_KEY = "__layerwise_order__"
JSON_KEYS = "__layerwise_json__"


def read_file(path):
    """({name: array} in the order the names were saved, metadata dict) from one read."""
    path = os.fspath(path)
    with _open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        header_len, header = _read_header(f, path, size)
        data_start = 8 + header_len
        entries, raw_metadata = _parse_header(header, path)
        _check_layout(entries, size - data_start, path)
        metadata, saved_order = _layerwise_metadata(raw_metadata, path)
        arrays = {name: _read_tensor(f, data_start, name, entry, path)
                  for name, entry in entries.items()}
    order = [n for n in saved_order if n in arrays] + sorted(set(arrays) - set(saved_order))
    return {name: arrays[name] for name in order}, metadata


# The largest header the reference safetensors reader accepts.
_MAX_HEADER_BYTES = 100_000_000
_METADATA = "__metadata__"
# Longest stretch of a bad value quoted in an error message, so the message stays one line.
_QUOTE_CHARS = 60

# dtype code -> bits per element, for every dtype the safetensors format defines.
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "U16": 16, "I16": 16, "U32": 32, "I32": 32, "U64": 64,
    "I64": 64, "F16": 16, "BF16": 16, "F32": 32, "F64": 64, "C64": 64, "F8_E4M3": 8,
    "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6,
    "F6_E3M2": 6,
}
# Those NumPy holds as they are (the file is little-endian).
_NUMPY_DTYPES = {
    "U8": "<u1", "I8": "<i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
    "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "C64": "<c8",
}
# Minifloats: (exponent bits, mantissa bits, exponent bias, which codes are not numbers).
#   "ieee": all-ones exponent is inf (mantissa 0) or NaN; "fn": only S.1111.111 is NaN, no
#   inf (OCP FP8 E4M3); "fnuz": only the negative-zero code 0x80 is NaN, no inf, no -0;
#   "finite": every code is a number (OCP MX FP4).
_MINIFLOATS = {
    "F8_E4M3": (4, 3, 7, "fn"),
    "F8_E5M2": (5, 2, 15, "ieee"),
    "F8_E4M3FNUZ": (4, 3, 8, "fnuz"),
    "F8_E5M2FNUZ": (5, 2, 16, "fnuz"),
    "F4": (2, 1, 1, "finite"),
}


def _bad(path, reason):
    return BadFileError(f"{path} is not a valid safetensors file ({reason})")


def _quote(value):
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "..."


def _open_regular_file(path):
    # O_NONBLOCK so that opening a FIFO does not wait for a writer; it changes nothing for
    # the regular file that is then the only thing accepted.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:  # where the system refuses; POSIX opens it, fstat tells below
        raise IsADirectoryError(f"{path} is a directory, expected a .safetensors file") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{path} is a directory, expected a .safetensors file")
        raise BadFileError(f"{path} is not a regular file (a device, pipe or socket); "
                           "expected a .safetensors file")
    return os.fdopen(fd, "rb")


def _read_exactly(f, offset, n, path):
    """n bytes from ``offset`` into a writable buffer; a short read means the file shrank."""
    buffer = bytearray(n)
    f.seek(offset)
    got = f.readinto(buffer)
    if got != n:
        raise _bad(path, f"truncated: {n} bytes expected at byte {offset}, found {got}")
    return buffer


def _read_header(f, path, size):
    """(header length, header bytes), the length checked against the file's size first."""
    if size < 8:
        raise _bad(path, f"truncated or foreign: {size} bytes, fewer than the 8-byte header "
                         "length every safetensors file starts with")
    (header_len,) = struct.unpack("<Q", _read_exactly(f, 0, 8, path))
    if header_len > size - 8:
        raise _bad(path, f"truncated or foreign: the header claims {header_len} bytes but the "
                         f"file has {size - 8} after the length")
    if header_len > _MAX_HEADER_BYTES:
        raise _bad(path, f"the header claims {header_len} bytes, more than the "
                         f"{_MAX_HEADER_BYTES} safetensors allows")
    return header_len, _read_exactly(f, 8, header_len, path)


def _parse_header(header, path):
    """({name: (dtype, shape, begin, end)}, raw metadata dict of str -> str), all checked."""
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(path, "its header is not UTF-8 JSON; truncated or foreign file") from None
    if not isinstance(parsed, dict):
        raise _bad(path, f"its header is a JSON {type(parsed).__name__}, expected an object")
    raw_metadata = parsed.pop(_METADATA, None)
    if raw_metadata is None:
        raw_metadata = {}
    if not isinstance(raw_metadata, dict) or not all(
            isinstance(v, str) for v in raw_metadata.values()):
        raise _bad(path, f"{_METADATA} must map names to strings, got {_quote(raw_metadata)}")
    return {name: _tensor_entry(name, entry, path) for name, entry in parsed.items()}, \
        raw_metadata


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(name, entry, path):
    where = f"tensor {_quote(name)}"
    if not isinstance(entry, dict):
        raise _bad(path, f"{where} is described by {_quote(entry)}, expected "
                         "{dtype, shape, data_offsets}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BITS:
        raise _bad(path, f"{where} has dtype {_quote(dtype)}, expected one of "
                         f"{', '.join(_DTYPE_BITS)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(path, f"{where} has shape {_quote(shape)}, expected a list of sizes >= 0")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]):
        raise _bad(path, f"{where} has data_offsets {_quote(offsets)}, expected "
                         "[begin, end] with 0 <= begin <= end")
    bits = math.prod(shape) * _DTYPE_BITS[dtype]
    if bits % 8 or offsets[1] - offsets[0] != bits // 8:
        raise _bad(path, f"{where} is {dtype} of shape {tuple(shape)}, {bits} bits, but its "
                         f"data_offsets {offsets} span {offsets[1] - offsets[0]} bytes")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _check_layout(entries, data_len, path):
    """The tensors must tile the data section exactly, as the format requires."""
    ordered = sorted(entries.items(), key=lambda item: item[1][2:])
    for name, (_, _, _, end) in ordered:
        if end > data_len:
            raise _bad(path, f"truncated: tensor {_quote(name)} ends at byte {end} of the data "
                             f"section, which holds {data_len} bytes")
    expected = 0
    for name, (_, _, begin, end) in ordered:
        if begin != expected:
            raise _bad(path, f"tensor {_quote(name)} starts at byte {begin} of the data, "
                             f"expected {expected}: tensors overlap or leave a gap")
        expected = end
    if expected != data_len:
        raise _bad(path, f"{data_len - expected} bytes follow the last tensor")


def _layerwise_metadata(raw, path):
    """(metadata with JSON values decoded, saved key order), each layerwise key checked."""
    json_keys = _json_string_list(raw, JSON_KEYS, path) if JSON_KEYS in raw else []
    order = _json_string_list(raw, ORDER_KEY, path) if ORDER_KEY in raw else []
    metadata = {}
    for key, value in raw.items():
        if key in (ORDER_KEY, JSON_KEYS):
            continue
        if key in json_keys:
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise _bad(path, f"metadata {key!r} is listed as JSON but is "
                                 f"{_quote(value)}") from None
        metadata[key] = value
    return metadata, order


def _json_string_list(raw, key, path):
    try:
        value = json.loads(raw[key])
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(path, f"metadata {key!r} is {_quote(raw[key])}, expected a JSON list of "
                         "names")
    return value


def _read_tensor(f, data_start, name, entry, path):
    dtype, shape, begin, end = entry
    buffer = _read_exactly(f, data_start + begin, end - begin, path)
    if dtype in _NUMPY_DTYPES:
        little = xp.frombuffer(buffer, dtype=_NUMPY_DTYPES[dtype])
        array = little.astype(little.dtype.newbyteorder("="), copy=False)
    elif dtype == "BOOL":
        array = xp.frombuffer(buffer, dtype=xp.uint8) != 0
    elif dtype == "BF16":
        array = _bf16_to_float32(xp.frombuffer(buffer, dtype="<u2"))
    elif dtype == "F8_E8M0":
        array = _e8m0_table()[xp.frombuffer(buffer, dtype=xp.uint8)]
    elif dtype == "F4":
        packed = xp.frombuffer(buffer, dtype=xp.uint8)
        codes = xp.stack([packed & 0xF, packed >> 4], axis=-1)  # first element: low nibble
        array = _minifloat_table(*_MINIFLOATS[dtype])[codes.reshape(-1)]
    elif dtype in _MINIFLOATS:
        array = _minifloat_table(*_MINIFLOATS[dtype])[xp.frombuffer(buffer, dtype=xp.uint8)]
    else:
        # F6: four 6-bit values in three bytes, in a bit order the format does not define
        # and no safetensors reader decodes; guessing would load wrong weights silently.
        raise BadFileError(f"{path}: tensor {_quote(name)} is {dtype}, whose bit packing the "
                           "safetensors format leaves undefined; convert it to F16, BF16 or "
                           "F32 with the tool that wrote it")
    return array.reshape(shape)


def _bf16_to_float32(bits16):
    """bfloat16 is the top half of a float32: put its bits there, exactly."""
    return (bits16.astype(xp.uint32) << 16).view(xp.float32)


@functools.lru_cache(maxsize=None)
def _minifloat_table(exponent_bits, mantissa_bits, bias, non_numbers):
    """float32 value of every code of a small float format (all exactly representable)."""
    codes = xp.arange(2 ** (1 + exponent_bits + mantissa_bits))
    sign = xp.where(codes >> (exponent_bits + mantissa_bits), -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & (2 ** exponent_bits - 1)
    fraction = (codes & (2 ** mantissa_bits - 1)) / 2.0 ** mantissa_bits
    normal = exponent > 0
    # subnormals (exponent field 0) have no implicit 1 and the exponent of the smallest normal
    values = sign * xp.where(normal, 1.0 + fraction, fraction) * xp.exp2(
        xp.where(normal, exponent, 1) - bias)
    top = exponent == 2 ** exponent_bits - 1
    if non_numbers == "ieee":
        values[top & (fraction == 0)] = sign[top & (fraction == 0)] * xp.inf
        values[top & (fraction > 0)] = xp.nan
    elif non_numbers == "fn":
        values[top & (fraction == 1 - 2.0 ** -mantissa_bits)] = xp.nan
    elif non_numbers == "fnuz":
        values[2 ** (exponent_bits + mantissa_bits)] = xp.nan  # the code of -0
    return values.astype(xp.float32)


@functools.lru_cache(maxsize=None)
def _e8m0_table():
    """OCP MX E8M0 scale: 2 ** (code - 127), unsigned, no zero; code 255 is NaN."""
    values = xp.exp2(xp.arange(256, dtype=xp.float64) - 127)
    values[255] = xp.nan
    return values.astype(xp.float32)
