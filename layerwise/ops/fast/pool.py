"""Fast paths of the max pool: compiled loops over batch-last arrays (see fast/conv.py) from
batch 8, and over whole output rows at batch 1 with no graph (inference)."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.conv import batch_first, batch_last, pad_batch_last
from layerwise.ops.fast.path import FastPath
from layerwise.ops.pool import MaxPool2d, position_dtype

# The batch-last kernel's inner loop runs over the batch: at batch 1 NumPy's strided slices
# take 0.07 ms, the kernel 0.15 ms.
MIN_BATCH = 8


def _one_plane(x, padding, extent):
    """The one sample of x (1, C, H, W) padded with -inf to ``extent``: (C, Hp, Wp)."""
    h, w = x.shape[2:]
    ph, pw = padding
    pads = (ph, extent[0] - h - ph, pw, extent[1] - w - pw)
    return pad_batch_last(x, pads, -xp.inf)[..., 0] if any(pads) else x[0]


@fast_path
class MaxPoolPlane2x2(FastPath, MaxPool2d):
    """The usual 2x2 window at stride 2, batch 1, no graph: with the window and stride fixed
    the compiler knows every load's offset and vectorises the loop over OW."""

    kernels = ("max_pool_plane_2x2",)
    why = "CNN workload at batch 1, 32x28x28 input, alone: 18.3 -> 4.5 us"

    @classmethod
    def supports(cls, x, kernel, stride, padding, dilation, out_hw, extent, *, graph):
        return (not graph and x.shape[0] == 1 and x.dtype.char in "fd"
                and kernel == stride == (2, 2) and dilation == (1, 1))

    def forward(self, x, kernel, stride, padding, dilation, out_hw, extent):
        out = xp.empty((x.shape[1],) + tuple(out_hw), dtype=x.dtype)  # (C, OH, OW)
        self.kernel("max_pool_plane_2x2")(_one_plane(x, padding, extent), out)
        return out[None]  # (1, C, OH, OW)


@fast_path
class MaxPoolPlane(FastPath, MaxPool2d):
    """Batch 1, no graph, any window: the maximum built a kernel position at a time over a
    whole output row, a loop over OW that the batch-innermost kernel cannot have at batch 1;
    no positions kept."""

    kernels = ("max_pool_plane",)
    why = "CNN workload at batch 1, 64x14x14 input, alone: 23 -> 12 us"

    @classmethod
    def supports(cls, x, kernel, stride, padding, dilation, out_hw, extent, *, graph):
        return not graph and x.shape[0] == 1 and x.dtype.char in "fd"

    def forward(self, x, kernel, stride, padding, dilation, out_hw, extent):
        out = xp.empty((x.shape[1],) + tuple(out_hw), dtype=x.dtype)  # (C, OH, OW)
        self.kernel("max_pool_plane")(_one_plane(x, padding, extent), *kernel, *stride,
                                      *dilation, out)
        return out[None]  # (1, C, OH, OW)


@fast_path
class MaxPoolBatchLast(FastPath, MaxPool2d):
    """The maxima and their positions in one compiled pass over a batch-last input (a conv's
    output is one already); backward writes each window position once where windows do not
    overlap, and is the reference's elsewhere."""

    kernels = ("max_pool_forward", "max_pool_backward_disjoint")
    why = "CNN workload's pools: forward 2.9 -> 1.1 ms, backward 2.7 -> 1.1 ms"

    @classmethod
    def supports(cls, x, kernel, stride, padding, dilation, out_hw, extent, *, graph):
        return x.dtype.char in "fd"  # the kernels' dtypes

    @classmethod
    def worth_it(cls, x, kernel, stride, padding, dilation, out_hw, extent, *, graph):
        return x.shape[0] >= MIN_BATCH

    def forward(self, x, kernel, stride, padding, dilation, out_hw, extent):
        n, c, h, w = x.shape
        ph, pw = padding
        pads = (ph, extent[0] - h - ph, pw, extent[1] - w - pw)
        xc = pad_batch_last(x, pads, -xp.inf) if any(pads) else batch_last(x)  # (C, Hp, Wp, N)
        out = xp.empty((c,) + tuple(out_hw) + (n,), dtype=x.dtype)  # (C, OH, OW, N)
        arg = xp.empty(out.shape, dtype=position_dtype(kernel))
        self.kernel("max_pool_forward")(xc, *kernel, *stride, *dilation, out, arg)
        # what the reference keeps, in its (N, C, ...) order, as views of batch-last memory
        self.geometry = (x.shape, (n, c) + xc.shape[1:3], kernel, stride, padding, dilation,
                         out_hw)
        self.arg = batch_first(arg)  # (N, C, OH, OW)
        return batch_first(out)

    def backward(self, g):
        (_, _, h, w), (n, c, hp, wp), kernel, stride, (ph, pw), dilation, out_hw = self.geometry
        if any(s < d * (k - 1) + 1 for s, d, k in zip(stride, dilation, kernel)):
            return super().backward(g)  # overlapping windows: gradients add up
        # windows that tile the padded input exactly cover every position; else zero first
        tiled = all(s == k and d == 1 and o * s == p for s, k, d, o, p in
                    zip(stride, kernel, dilation, out_hw, (hp, wp)))
        gpad = (xp.empty if tiled else xp.zeros)((c, hp, wp, n), dtype=g.dtype)
        self.kernel("max_pool_backward_disjoint")(
            xp.ascontiguousarray(batch_last(g)), batch_last(self.arg), *kernel, *stride,
            *dilation, gpad)
        return batch_first(gpad[:, ph:ph + h, pw:pw + w])  # (N, C, H, W) view
