"""Ops that draw from the global generator, and one_hot."""

import numbers

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.ops import elementwise as ew


# splitmix64 (Steele, Lea & Flood 2014): a counter-based generator, so that the compiled
# dropout of ops/fast/ draws the same bits from the same seed, element by element.
_GOLDEN = xp.uint64(0x9E3779B97F4A7C15)
_MIX_1 = xp.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = xp.uint64(0x94D049BB133111EB)
DROP_STEPS = 1 << 16  # dropout's p is applied in steps of 1 / 65536: each element gets 16 bits


def draw_seed():
    """One 64-bit seed from the global generator: a dropout mask's only draw from it."""
    return int(backend.rng().integers(1 << 63))


def drop_threshold(p):
    """Elements whose 16 random bits fall below this are dropped: round(p * 65536)."""
    return int(round(p * DROP_STEPS))


def random_bits16(seed, n):
    """n pseudo-random 16-bit values (as uint64): splitmix64 of seed + k * golden for
    k = 1, 2, ..., each 64-bit output giving four values, its lowest 16 bits first."""
    count = -(-n // 4)
    with xp.errstate(over="ignore"):  # the arithmetic is modulo 2^64
        z = xp.uint64(seed) + xp.arange(1, count + 1, dtype=xp.uint64) * _GOLDEN
        z = (z ^ (z >> xp.uint64(30))) * _MIX_1
        z = (z ^ (z >> xp.uint64(27))) * _MIX_2
        z ^= z >> xp.uint64(31)
    lanes = (z[:, None] >> xp.array([0, 16, 32, 48], dtype=xp.uint64)) & xp.uint64(0xFFFF)
    return lanes.reshape(-1)[:n]


def keep_multipliers(shape, p, dtype, seed):
    """Inverted dropout's multipliers: 1 / (1 - p) where an element is kept (its 16 random
    bits at or above drop_threshold(p)), else 0."""
    n = 1
    for size in shape:
        n *= size
    keep = random_bits16(seed, n).reshape(shape) >= drop_threshold(p)
    return keep * xp.asarray(1 / (1 - p), dtype=dtype)


class Dropout(Function):
    """x * keep / (1 - p), keep drawn inside the op: one node that saves the multipliers, and
    a draw that lw.compile's replay repeats (a mask drawn outside an op would be replayed as
    a constant)."""

    def forward(self, x, p):
        self.scale = keep_multipliers(x.shape, p, x.dtype, draw_seed())
        return x * self.scale

    def backward(self, g):
        return g * self.scale


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p (in steps of 1 / 65536) and scale the rest by
    1/(1-p) (inverted dropout, Srivastava et al. 2014), so evaluation needs no rescaling."""
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
