"""Fast path of dropout: the mask's bits, the multipliers and the product in one compiled
pass, the same bits as the reference (ops/random.py's counter-based generator)."""

import sys

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.random import Dropout, draw_seed, drop_threshold


@fast_path
class DropoutOnePass(FastPath, Dropout):
    kernels = ("dropout_forward",)
    why = "(32, 64, 2048) float32, p = 0.1, forward: 25 -> 2.0 ms, the same mask"

    @classmethod
    def supports(cls, x, p, *, graph):
        return x.dtype.char in "fd" and sys.byteorder == "little"  # see the kernel

    def forward(self, x, p):
        out = xp.empty(x.shape, x.dtype)
        self.scale = xp.empty(x.shape, x.dtype)
        bits = xp.empty(-(-x.size // 4), xp.uint64)
        self.kernel("dropout_forward")(xp.ascontiguousarray(x).reshape(-1), draw_seed(),
                                       xp.uint32(drop_threshold(p)), x.dtype.type(1 / (1 - p)),
                                       bits, out.reshape(-1), self.scale.reshape(-1))
        return out
