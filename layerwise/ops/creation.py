"""Making tensors: from data, filled, random, ranges."""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor


def _finish(data, dtype, requires_grad):
    if dtype is not None:
        data = data.astype(backend.to_dtype(dtype), copy=False)
    t = Tensor(data)
    return t.requires_grad_() if requires_grad else t


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"sizes must be non-negative ints, got {size}")
    return tuple(size)


def _preview(value, limit=60):
    """``repr(value)`` on one line, cut to ``limit`` characters, for an error message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of ``data`` (a number, nested list, array or tensor).

    Python floats become float32 (the default float); NumPy arrays keep their dtype, as in
    PyTorch; ints become int64 and bools stay bool.
    """
    if isinstance(data, Tensor):
        data = data.data
    is_array = hasattr(data, "dtype")
    try:
        array = xp.array(data)
    except (ValueError, TypeError):
        raise ValueError(
            f"cannot make a tensor from {type(data).__name__} {_preview(data)}: expected a "
            "number or a nested list of numbers with the same length at each level"
        ) from None
    if array.dtype == object or array.dtype.kind not in "biufc":
        raise TypeError(
            f"cannot make a tensor from {type(data).__name__} {_preview(data)}: expected numbers "
            f"or bools (got dtype {array.dtype})"
        )
    if dtype is None:
        if array.dtype.kind == "f" and not is_array:
            array = array.astype(backend.default_float())
        elif array.dtype.kind in "iu" and not is_array:
            array = array.astype(backend.int64)
    return _finish(array, dtype, requires_grad)


def as_tensor(data, dtype=None):
    return data if isinstance(data, Tensor) and dtype is None else tensor(data, dtype)


def from_numpy(array):
    return Tensor(array)


def zeros(*size, dtype=None, requires_grad=False):
    return _finish(xp.zeros(_shape(size), dtype=backend.to_dtype(dtype or backend.default_float())), None, requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return _finish(xp.ones(_shape(size), dtype=backend.to_dtype(dtype or backend.default_float())), None, requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        dtype = backend.default_float() if isinstance(fill_value, float) else backend.int64
        dtype = backend.bool_ if isinstance(fill_value, bool) else dtype
    return _finish(xp.full(_shape((size,)), fill_value, dtype=backend.to_dtype(dtype)), None, requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    data = backend.rng().standard_normal(_shape(size))
    return _finish(data.astype(backend.to_dtype(dtype or backend.default_float())), None, requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    data = backend.rng().random(_shape(size))
    return _finish(data.astype(backend.to_dtype(dtype or backend.default_float())), None, requires_grad)


def randint(low, high=None, size=(), dtype=None):
    if high is None:
        low, high = 0, low
    if not high > low:
        raise ValueError(f"randint needs low < high (draws from [low, high)), got low={low!r}, "
                         f"high={high!r}")
    data = backend.rng().integers(low, high, size=_shape((size,)))
    return Tensor(data.astype(backend.to_dtype(dtype or backend.int64)))


def randperm(n):
    return Tensor(backend.rng().permutation(n).astype(backend.int64))


def randn_like(t):
    return randn(t.shape, dtype=t.dtype)


def rand_like(t):
    return rand(t.shape, dtype=t.dtype)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError(f"arange step must be non-zero, got step={step!r}")
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = backend.default_float() if is_float else backend.int64
    return _finish(xp.arange(start, end, step, dtype=backend.to_dtype(dtype)), None, requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    return _finish(xp.linspace(start, end, steps, dtype=backend.to_dtype(dtype or backend.default_float())),
                   None, requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    return _finish(xp.eye(n, m, dtype=backend.to_dtype(dtype or backend.default_float())), None, requires_grad)
