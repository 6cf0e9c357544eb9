"""Ops that draw from the global generator, and one_hot."""

import numbers

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.ops import elementwise as ew


class Dropout(Function):
    """x * keep / (1 - p), keep drawn inside the op: one node that saves the scaled mask, and a
    draw that lw.compile's replay repeats (a mask drawn outside an op would be replayed as a
    constant)."""

    def forward(self, x, p):
        keep = backend.rng().random(x.shape) >= p
        self.scale = (keep / (1 - p)).astype(x.dtype)
        return x * self.scale

    def backward(self, g):
        return g * self.scale


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout,
    Srivastava et al. 2014), so evaluation needs no rescaling."""
    check_tensor(x, "dropout")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be a number in [0, 1], got {p!r}")
    if not training or p == 0:
        return x
    if p == 1:
        return ew.mul(x, 0.0)
    return Dropout.apply(x, p=p)


def one_hot(labels, num_classes=-1):
    data = labels.data if isinstance(labels, Tensor) else xp.asarray(labels)
    if data.dtype.kind not in "iu":
        raise TypeError(f"one_hot needs integer labels, got dtype {data.dtype}")
    if num_classes < 0:
        num_classes = int(data.max()) + 1 if data.size else 0
    if data.size and (data.min() < 0 or data.max() >= num_classes):
        raise ValueError(f"one_hot labels must be in [0, {num_classes - 1}], got values from "
                         f"{int(data.min())} to {int(data.max())}")
    return Tensor((data[..., None] == xp.arange(num_classes)).astype(backend.int64))
