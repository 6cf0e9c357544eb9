"""Turning the Python numbers, lists and arrays that users mix with tensors into Tensors."""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor


def as_tensor_like(value, like):
    """``value`` as a Tensor that can meet ``like`` in an op, keeping ``like``'s float dtype.

    A Python scalar takes the tensor's dtype (``x * 2`` stays float32), except that a float
    meeting an integer tensor gives the default float, as in PyTorch.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float)):
        dtype = like.dtype
        if isinstance(value, float) and not backend.is_floating(dtype):
            dtype = backend.default_float()
        return Tensor(xp.asarray(value, dtype=dtype))
    array = xp.asarray(value)
    if array.dtype.kind not in "biufc":
        text = " ".join(repr(value).split())
        raise TypeError(f"a Tensor can meet numbers, bools or numeric arrays in an op, not "
                        f"{type(value).__name__} {text[:60]}")
    return Tensor(array)


def normalize_dim(dim, ndim, name="dim"):
    """A dim (or tuple of dims), possibly negative, as a tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(
                f"{name}={d} is out of range for a tensor with {ndim} dimension(s); "
                f"expected a value in [{-max(ndim, 1)}, {max(ndim, 1) - 1}]"
            )
        out.append(d % ndim if ndim else 0)
    return tuple(out)
