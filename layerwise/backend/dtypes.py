"""Dtypes by their PyTorch names, and the default float type (float32, as in PyTorch)."""

from layerwise.backend.numpy_backend import xp

bool_ = xp.dtype(xp.bool_)
uint8 = xp.dtype(xp.uint8)
int8 = xp.dtype(xp.int8)
int32 = xp.dtype(xp.int32)
int64 = xp.dtype(xp.int64)
float16 = xp.dtype(xp.float16)
float32 = xp.dtype(xp.float32)
float64 = xp.dtype(xp.float64)

_NAMES = {
    "bool": bool_, "uint8": uint8, "int8": int8, "int32": int32, "int64": int64, "long": int64,
    "float16": float16, "half": float16, "float32": float32, "float": float32,
    "float64": float64, "double": float64,
}
_default_float = float32


def default_float():
    """The dtype that Python floats and random tensors get unless told otherwise."""
    return _default_float


def set_default_dtype(dtype):
    global _default_float
    dtype = to_dtype(dtype)
    if dtype not in (float16, float32, float64):
        raise ValueError(f"default dtype must be a floating type, got {dtype}")
    _default_float = dtype


def to_dtype(dtype):
    """Accept a dtype, a numpy type, or a name such as 'float32' and return an xp dtype."""
    if isinstance(dtype, str):
        try:
            return _NAMES[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_NAMES)}") from None
    try:
        return xp.dtype(dtype)
    except TypeError:
        raise TypeError(f"cannot interpret {dtype!r} as a dtype") from None


def is_floating(dtype):
    return xp.issubdtype(dtype, xp.floating)
