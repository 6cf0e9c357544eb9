"""Fast path of gather along the last dim (picking per row, as from logits): one compiled
loop each way instead of take_along_axis's fancy indexing and add.at's scatter."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.movement import Gather


@fast_path
class GatherRows(FastPath, Gather):
    kernels = ("gather_rows", "gather_rows_backward")
    why = "x.gather(-1, i) over (16, 128, 128) float32, forward and backward: 4.4 -> 0.43 ms"

    @classmethod
    def supports(cls, x, index, axis, *, graph):
        return (x.ndim >= 1 and axis == x.ndim - 1 and x.dtype.char in "fd"
                and index.dtype.kind in "iu" and index.shape[:-1] == x.shape[:-1])

    def forward(self, x, index, axis):
        self.in_shape = x.shape
        self.index = xp.ascontiguousarray(index, dtype=xp.int64).reshape(-1, index.shape[-1])
        out = xp.empty(index.shape, x.dtype)
        rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1])  # (M, N)
        self.kernel("gather_rows")(rows, self.index, out.reshape(self.index.shape))
        return out

    def backward(self, g):
        grad = xp.zeros(self.in_shape, g.dtype)
        self.kernel("gather_rows_backward")(xp.ascontiguousarray(g).reshape(self.index.shape),
                                            self.index, grad.reshape(-1, self.in_shape[-1]))
        return grad
