"""Fast paths of the softmax family: softmax and log_softmax over the last dim of a float32
array, each way as one compiled pass per row (fast/vecmath.py) instead of NumPy's separate
passes for the maximum, the exponentials, the sum and the division."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.reduce import LogSoftmax, Max, Prod, Softmax


def _last_dim_float32(x, axis):
    """The row kernels take float32 rows of at least one value over the last dim."""
    return x.dtype == xp.float32 and axis == x.ndim - 1 and x.size > 0


def _rows(a):
    """``a`` as C-contiguous float32 rows (M, N) over its last dim: a view where it already is."""
    return xp.ascontiguousarray(a, dtype=xp.float32).reshape(-1, a.shape[-1])


def _by_rows(kernel_fn, *inputs):
    """kernel_fn(*rows of inputs, rows of out) into a new float32 array shaped like inputs[0]."""
    out = xp.empty(inputs[0].shape, xp.float32)
    kernel_fn(*(_rows(a) for a in inputs), _rows(out))
    return out


@fast_path
class SoftmaxRows(FastPath, Softmax):
    kernels = ("softmax_rows_into", "softmax_backward_rows_into")
    why = "attention scores (16, 4, 128, 128): 2.9 -> 0.9 ms forward and backward"

    @classmethod
    def supports(cls, x, axis, *, graph):
        return _last_dim_float32(x, axis)

    def forward(self, x, axis):
        self.axis = axis
        self.out = _by_rows(self.kernel("softmax_rows_into"), x)
        return self.out

    def backward(self, g):
        return _by_rows(self.kernel("softmax_backward_rows_into"), g, self.out)


@fast_path
class LogSoftmaxRows(FastPath, LogSoftmax):
    kernels = ("log_softmax_rows_into", "log_softmax_backward_rows_into")
    why = "attention scores (16, 4, 128, 128): 3.5 -> 1.1 ms forward and backward"

    @classmethod
    def supports(cls, x, axis, *, graph):
        return _last_dim_float32(x, axis)

    def forward(self, x, axis):
        self.axis = axis
        self.out = _by_rows(self.kernel("log_softmax_rows_into"), x)
        return self.out

    def backward(self, g):
        return _by_rows(self.kernel("log_softmax_backward_rows_into"), g, self.out)


@fast_path
class ProdRows(FastPath, Prod):
    """The forward's products over the last dim compiled; the backward is the reference's."""

    kernels = ("prod_rows",)
    why = "x.prod(dim=-1) of (16, 128, 128) float32: 245 -> 18 us"

    @classmethod
    def supports(cls, x, axis, keepdim, *, graph):
        return x.ndim >= 1 and axis == x.ndim - 1 and x.dtype.char in "fd" and x.size > 0

    def forward(self, x, axis, keepdim):
        self.x, self.axis, self.keepdim = x, axis, keepdim
        rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1])  # (M, N)
        out = xp.empty(rows.shape[0], x.dtype)
        self.kernel("prod_rows")(rows, out)
        return out.reshape(x.shape[:-1] + ((1,) if keepdim else ()))


@fast_path
class MaxRows(FastPath, Max):
    """The maximum over the last dim of float32 rows compiled; the backward is the reference's."""

    kernels = ("max_rows_f32",)
    why = "x.amax(dim=-1) of (16, 128, 128) float32: 145 -> 57 us"

    @classmethod
    def supports(cls, x, axes, keepdim, *, graph):
        return x.ndim >= 1 and tuple(axes) == (x.ndim - 1,) and x.dtype == xp.float32 \
            and x.size > 0

    def forward(self, x, axes, keepdim):
        rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1])  # (M, N)
        out = xp.empty(x.shape[:-1] + (1,), x.dtype)  # keepdims, as the reference's
        self.kernel("max_rows_f32")(rows, out.reshape(-1))
        if self.needs_input_grad:
            self.mask = x == out
        self.axes, self.keepdim = axes, keepdim
        return out if keepdim else out.squeeze(axis=-1)
