"""Ops that move, copy or select elements without arithmetic.

Primitives with a backward: reshape, permute, expand, getitem, cat, pad, gather. The rest
(view, flatten, squeeze, unsqueeze, transpose, stack, split, chunk) are compositions.
"""

import builtins

from layerwise.backend import xp
from layerwise.autograd.engine import unbroadcast
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor
from layerwise.ops._convert import normalize_dim


class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return g.reshape(self.in_shape)


class Permute(Function):
    def forward(self, x, axes):
        self.axes = axes
        return x.transpose(axes)

    def backward(self, g):
        return g.transpose(xp.argsort(self.axes))


class Expand(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        return xp.broadcast_to(x, shape)

    def backward(self, g):
        return unbroadcast(g, self.in_shape)


class GetItem(Function):
    """x[index]. Integer-array indices may repeat an element, so their backward scatter-adds
    (``add.at``); slices, ints and masks select each element at most once and assign."""

    def forward(self, x, index):
        self.in_shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, g):
        grad = xp.zeros(self.in_shape, dtype=self.dtype)
        if _has_integer_array(self.index):
            xp.add.at(grad, self.index, g)
        else:
            grad[self.index] = g
        return grad


def _has_integer_array(index):
    parts = index if isinstance(index, tuple) else (index,)
    return builtins.any(hasattr(p, "dtype") and p.dtype.kind in "iu" and p.ndim > 0 for p in parts)


class Cat(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.bounds = xp.cumsum([a.shape[axis] for a in arrays])[:-1]
        return xp.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(xp.split(g, self.bounds, axis=self.axis))


class Pad(Function):
    def forward(self, x, widths, value):
        self.slices = tuple(slice(before, before + n) for (before, _), n in zip(widths, x.shape))
        return xp.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.slices]


class Gather(Function):
    """out[i][j][k] = x[i][index[i][j][k]][k] for dim=1 (torch.gather); backward scatter-adds."""

    def forward(self, x, index, axis):
        self.in_shape, self.index, self.axis = x.shape, index, axis
        return xp.take_along_axis(x, index, axis=axis)

    def backward(self, g):
        grad = xp.zeros(self.in_shape, dtype=g.dtype)
        where = list(xp.indices(self.index.shape, sparse=True))
        where[self.axis] = self.index
        xp.add.at(grad, tuple(where), g)
        return grad


# --- functional forms -------------------------------------------------------------------


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    shape = _shape_arg(shape)
    # numpy reads any negative size as "infer this one"; PyTorch allows only a single -1.
    if builtins.min(shape, default=0) < -1 or shape.count(-1) > 1:
        raise ValueError(f"cannot reshape tensor of shape {tuple(x.shape)} into shape {shape}: "
                         "sizes must be ints >= 0, with at most one -1 (inferred)")
    try:
        return Reshape.apply(x, shape=shape)
    except ValueError:
        raise ValueError(f"cannot reshape tensor of shape {tuple(x.shape)} ({x.numel()} elements) "
                         f"into shape {shape}") from None


view = reshape


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = normalize_dim((start_dim, end_dim), x.ndim)
    merged = 1
    for n in x.shape[start:end + 1]:
        merged *= n
    return reshape(x, x.shape[:start] + (merged,) + x.shape[end + 1:])


def permute(x, *dims):
    dims = normalize_dim(_shape_arg(dims), x.ndim)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute needs each of the {x.ndim} dims once, got {dims}")
    return Permute.apply(x, axes=dims)


def transpose(x, dim0, dim1):
    d0, d1 = normalize_dim((dim0, dim1), x.ndim)
    axes = list(range(x.ndim))
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return Permute.apply(x, axes=tuple(axes))


def unsqueeze(x, dim):
    (axis,) = normalize_dim(dim, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    axes = normalize_dim(dim, x.ndim)
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def expand(x, *shape):
    shape = _shape_arg(shape)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand to {shape} has fewer dims than the tensor's shape {tuple(x.shape)}")
    full = tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
    try:
        xp.broadcast_shapes(x.shape, full)
    except ValueError:
        raise ValueError(f"cannot expand shape {tuple(x.shape)} to {shape}; only size-1 dims can grow") from None
    return Expand.apply(x, shape=full)


def broadcast_to(x, shape):
    return expand(x, shape)


def _index_arrays(index):
    """Tensors inside an index become arrays; lists become integer or boolean arrays."""
    if isinstance(index, tuple):
        return tuple(_index_arrays(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return xp.asarray(index)
    return index


def getitem(x, index):
    return GetItem.apply(x, index=_index_arrays(index))


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat() needs at least one tensor")
    (axis,) = normalize_dim(dim, tensors[0].ndim)
    rest = [t.shape[:axis] + t.shape[axis + 1:] for t in tensors]
    if builtins.any(r != rest[0] or t.ndim != tensors[0].ndim for r, t in zip(rest, tensors)):
        raise ValueError(f"cat along dim {dim} needs equal sizes in the other dims, got shapes "
                         f"{[tuple(t.shape) for t in tensors]}")
    return Cat.apply(*tensors, axis=axis)


concat = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack() needs at least one tensor")
    if builtins.any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack needs tensors of one shape, got {[tuple(t.shape) for t in tensors]}")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the given sizes."""
    (axis,) = normalize_dim(dim, x.ndim)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split size must be positive, got {step}")
        sizes = [builtins.min(step, n - s) for s in range(0, n, step)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} add up to {builtins.sum(sizes)}, not dim {dim}'s size {n}")
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(x, index))
        start += size
    return tuple(pieces)


def chunk(x, chunks, dim=0):
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunk needs a positive int number of chunks, got {chunks!r}")
    (axis,) = normalize_dim(dim, x.ndim)
    return split(x, -(-x.shape[axis] // chunks), dim)


def pad(x, pad, value=0.0):
    """PyTorch's ``F.pad`` order: (left, right) of the last dim, then of the one before, ..."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad needs pairs for at most {x.ndim} dims, got {pad}")
    if builtins.any(p < 0 for p in pad):
        raise ValueError(f"pad widths must be non-negative, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad.apply(x, widths=tuple(widths), value=value)


def gather(x, dim, index):
    (axis,) = normalize_dim(dim, x.ndim)
    idx = index.data if isinstance(index, Tensor) else xp.asarray(index)
    if idx.ndim != x.ndim:
        raise ValueError(f"gather index needs {x.ndim} dims like the input, got shape {idx.shape}")
    if idx.size and (idx.min() < -x.shape[axis] or idx.max() >= x.shape[axis]):
        bad = int(idx.min()) if idx.min() < -x.shape[axis] else int(idx.max())
        raise IndexError(f"gather index {bad} is out of range for dim {dim} of size "
                         f"{x.shape[axis]}; indices must be in [{-x.shape[axis]}, "
                         f"{x.shape[axis] - 1}]")
    return Gather.apply(x, index=idx, axis=axis)
