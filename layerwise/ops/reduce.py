"""Reductions over ``dim`` (an int, a tuple, or None for all), with ``keepdim``.

The softmax family lives here too: each normalises along a dim and has a fused backward,
because composing exp/sum/div would save three arrays and lose the max-subtraction that
keeps exp from overflowing. Over the last dim in float32 they run as compiled row loops
(fast/reduce.py).
"""

from collections import namedtuple

from layerwise.backend import xp
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor
from layerwise.ops._convert import normalize_dim
from layerwise.ops import elementwise as ew

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _expand_back(g, axes, keepdim):
    """Put back the reduced axes of ``g`` as size 1, so it broadcasts against the input."""
    return g if keepdim else xp.expand_dims(g, axes)


class Sum(Function):
    def forward(self, x, axes, keepdim):
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim)

    def backward(self, g):
        return xp.broadcast_to(_expand_back(g, self.axes, self.keepdim), self.shape)


class Max(Function):
    """Ties share the gradient evenly (PyTorch's amax rule)."""

    def forward(self, x, axes, keepdim):
        out = x.max(axis=axes, keepdims=True)
        if self.needs_input_grad:  # the maxima's places, for backward only
            self.mask = x == out
        self.axes, self.keepdim = axes, keepdim
        return out if keepdim else out.squeeze(axis=axes)

    def backward(self, g):
        share = self.mask / self.mask.sum(axis=self.axes, keepdims=True)
        return _expand_back(g, self.axes, self.keepdim) * share


class Prod(Function):
    """d prod / d x_i = product of all the others: exclusive cumulative products from both
    sides, which stays exact when some x_i are zero (out / x_i would divide by zero)."""

    def forward(self, x, axis, keepdim):
        self.x, self.axis, self.keepdim = x, axis, keepdim
        return x.prod(axis=axis, keepdims=keepdim)

    def backward(self, g):
        x = xp.moveaxis(self.x, self.axis, -1)
        ones = xp.ones(x.shape[:-1] + (1,), dtype=x.dtype)
        left = xp.cumprod(xp.concatenate([ones, x[..., :-1]], axis=-1), axis=-1)
        right = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(x, -1)[..., :-1]], axis=-1), axis=-1), -1)
        others = xp.moveaxis(left * right, -1, self.axis)
        return _expand_back(g, (self.axis,), self.keepdim) * others


class Softmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        e = xp.exp(x - x.max(axis=axis, keepdims=True))  # the max subtracted: exp never overflows
        self.out = e / e.sum(axis=axis, keepdims=True)
        return self.out

    def backward(self, g):
        y = self.out
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        shifted = x - x.max(axis=axis, keepdims=True)
        self.out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        return self.out

    def backward(self, g):
        return g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class LogSumExp(Function):
    """log sum exp(x) = m + log sum exp(x - m), m the max; the gradient is softmax(x).

    The backward is the softmax from the shifted exponentials, exp(x - m) / sum, not
    exp(x - out): out = m + log(sum) rounds to the spacing of m, so at x = [a, a] in float32
    that read 0.4989 for a = 1e5 and 1.0 for a = 1e8 instead of 0.5.
    """

    def forward(self, x, axes, keepdim):
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf rows give -inf, not nan
        e = xp.exp(x - m)
        total = e.sum(axis=axes, keepdims=True)
        with xp.errstate(divide="ignore"):  # log(0) = -inf for all -inf rows, as intended
            out = xp.log(total) + m
        self.e, self.total, self.axes, self.keepdim = e, total, axes, keepdim
        return out if keepdim else out.squeeze(axis=axes)

    def backward(self, g):
        with xp.errstate(invalid="ignore", divide="ignore"):  # all -inf rows: nan, as PyTorch
            softmax = self.e / self.total
        return _expand_back(g, self.axes, self.keepdim) * softmax


# --- functional forms -------------------------------------------------------------------


def sum(x, dim=None, keepdim=False):
    return Sum.apply(x, axes=normalize_dim(dim, x.ndim), keepdim=keepdim)


def mean(x, dim=None, keepdim=False):
    axes = normalize_dim(dim, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    return ew.div(sum(x, axes, keepdim), count)


def amax(x, dim=None, keepdim=False):
    return Max.apply(x, axes=normalize_dim(dim, x.ndim), keepdim=keepdim)


def amin(x, dim=None, keepdim=False):
    return ew.neg(amax(ew.neg(x), dim, keepdim))


def max(x, dim=None, keepdim=False):
    """``max(x)`` is the largest element; ``max(x, dim)`` is (values, indices), as in PyTorch."""
    if dim is None:
        return amax(x)
    return ValuesIndices(amax(x, dim, keepdim), argmax(x, dim, keepdim))


def min(x, dim=None, keepdim=False):
    if dim is None:
        return amin(x)
    return ValuesIndices(amin(x, dim, keepdim), argmin(x, dim, keepdim))


def argmax(x, dim=None, keepdim=False):
    if dim is None:
        return Tensor(xp.asarray(x.data.argmax()))
    (axis,) = normalize_dim(dim, x.ndim)
    return Tensor(x.data.argmax(axis=axis, keepdims=keepdim))


def argmin(x, dim=None, keepdim=False):
    if dim is None:
        return Tensor(xp.asarray(x.data.argmin()))
    (axis,) = normalize_dim(dim, x.ndim)
    return Tensor(x.data.argmin(axis=axis, keepdims=keepdim))


def prod(x, dim=None, keepdim=False):
    if dim is None:
        return Prod.apply(x.reshape(-1), axis=0, keepdim=False)
    (axis,) = normalize_dim(dim, x.ndim)
    return Prod.apply(x, axis=axis, keepdim=keepdim)


def var(x, dim=None, keepdim=False, correction=1, unbiased=None):
    """Variance with Bessel's correction by default (``correction=1``), as in PyTorch."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    axes = normalize_dim(dim, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    centred = ew.sub(x, mean(x, axes, keepdim=True))
    return ew.div(sum(ew.mul(centred, centred), axes, keepdim), builtins_max(count - correction, 0))


def std(x, dim=None, keepdim=False, correction=1, unbiased=None):
    return ew.sqrt(var(x, dim, keepdim, correction, unbiased))


def softmax(x, dim=-1):
    (axis,) = normalize_dim(dim, x.ndim)
    return Softmax.apply(x, axis=axis)


def log_softmax(x, dim=-1):
    (axis,) = normalize_dim(dim, x.ndim)
    return LogSoftmax.apply(x, axis=axis)


def logsumexp(x, dim=None, keepdim=False):
    return LogSumExp.apply(x, axes=normalize_dim(dim, x.ndim), keepdim=keepdim)


def all(x, dim=None, keepdim=False):
    return Tensor(xp.asarray(x.data.all(axis=None if dim is None else normalize_dim(dim, x.ndim), keepdims=keepdim)))


def any(x, dim=None, keepdim=False):
    return Tensor(xp.asarray(x.data.any(axis=None if dim is None else normalize_dim(dim, x.ndim), keepdims=keepdim)))


import builtins  # noqa: E402  (sum/max/min above shadow the builtins in this module)

builtins_max = builtins.max
