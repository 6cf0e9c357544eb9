"""Fast paths of the convolution: from batch 8, columns built batch-last by a compiled loop;
at batch 1 with no graph, columns read as runs of the flat plane.

Batch-last: the compiled path lays its arrays out channel-first and batch-last, (C, H, W, N),
and returns its output as an (N, C, H, W) view of that memory rather than a copy. With the
batch innermost, every window read (im2col), scatter (col2im) and pooling pass runs over
contiguous stretches of OW*N values instead of OW; elementwise ops and BatchNorm keep the
layout, so a conv -> bn -> relu -> pool -> conv chain never transposes, and the compiled
max pool (fast/pool.py) reads a conv's output as it lies. An NCHW input costs one transposing
copy at the first layer, which pads at the same time.
"""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import strided_view, threads, xp
from layerwise.ops.conv import Conv2d, out_size
from layerwise.ops.fast.path import FastPath
from layerwise.ops.gemv import ones

# The compiled loops run innermost over the batch, as the max pool's do (fast/pool.py), and
# start at the same batch size; below it their runs are short (the pool kernel at batch 1:
# 0.15 ms against NumPy's 0.07 ms).
MIN_BATCH = 8

# Elements of both operands that one block of a long reduction keeps in the L2 cache: 48 K
# float32 values, 192 KiB.
REDUCTION_BLOCK = 48 * 1024

# Past this many outputs (K * O) OpenBLAS runs the long product efficiently by itself:
# blocking measured 0.86-1.04x there.
MAX_BLOCKED_OUTPUTS = 1024

# From this many column values (C*KH*KW * OH*OW*N) the input gradient (the columns' product,
# then col2im) runs as two halves of the input channels on two cores: ResNet-8's training
# step (bench/models.py), median of 100 steps each in one process: 127 -> 119 ms.
MIN_COLUMNS_IN_HALVES = 1 << 22


# From this many column values the forward runs as two halves of the output rows on two cores,
# each copying its columns and taking its product with a one-thread BLAS: the U-Net's 8 -> 8
# conv on 8 scenes of 96x96 (5.3 M values) 7.73 -> 5.98 ms alone; 0.97x at 0.3 M values.
MIN_COLUMNS_IN_HALVES_FORWARD = 1 << 19


def batch_last(x):
    """(N, C, H, W) -> a (C, H, W, N) view (no copy)."""
    return x.transpose(1, 2, 3, 0)


def batch_first(x):
    """(C, H, W, N) -> an (N, C, H, W) view (no copy)."""
    return x.transpose(3, 0, 1, 2)


def pad_batch_last(x, pads, value=0.0):
    """x (N, C, H, W) -> (C, Hp, Wp, N) padded with ``value``: pads = (top, bottom, left,
    right); the bottom and right pads may be larger than needed (ceil-mode pooling)."""
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    out = xp.empty((c, hp, wp, n), dtype=x.dtype)
    out[:, top:top + h, left:left + w] = batch_last(x)
    # Fill only the border: writing the whole array first would touch every value twice.
    out[:, :top], out[:, top + h:] = value, value
    out[:, top:top + h, :left], out[:, top:top + h, left + w:] = value, value
    return out


def long_reduction_matmul(a, b):
    """a (G, K, M) @ b (G, M, O) -> (G, K, O), fast also when M is far longer than K and O.

    Why: the weight gradient of a convolution with few input channels is such a product (the
    CNN workload's first conv: K=9, O=32, M=50176), and OpenBLAS runs it at a fraction of its
    speed: 1.0-2.0 ms for 29 MFLOP alone on the 2-core machine. The same product as a batch of
    products over blocks of M, each block small enough to stay in the L2 cache, summed after,
    took 0.39-0.46 ms alone, and 1.26 -> 0.92 ms inside the training step (where its operands
    come from memory, not cache).
    """
    groups, k, m = a.shape
    o = b.shape[2]
    block = REDUCTION_BLOCK // (k + o)
    if k * o > MAX_BLOCKED_OUTPUTS or m < 2 * block:
        return xp.matmul(a, b)
    n_blocks = m // block
    whole = n_blocks * block
    a4 = a[..., :whole].reshape(groups, k, n_blocks, block).transpose(0, 2, 1, 3)
    b4 = b[:, :whole].reshape(groups, n_blocks, block, o)
    out = xp.matmul(a4, b4).sum(axis=1)  # (G, n_blocks, K, O) -> (G, K, O)
    if whole < m:  # the remainder, shorter than a block
        out += xp.matmul(a[..., whole:], b[:, whole:])
    return out


def _out_hw(x, weight, stride, pads, dilation):
    top, bottom, left, right = pads
    return (out_size(x.shape[2], weight.shape[2], stride[0], top + bottom, dilation[0]),
            out_size(x.shape[3], weight.shape[3], stride[1], left + right, dilation[1]))


@fast_path
class Conv2dOneSample(FastPath, Conv2d):
    """One sample at stride 1 with no graph (batch-1 inference), its columns laid out so that
    each kernel position's row of them is one run of the flat padded plane (see one_sample)."""

    why = "CNN workload's second conv (64x32x3x3 on 14x14) at batch 1, alone: 140 -> 88-102 us"

    @classmethod
    def supports(cls, x, weight, bias=None, *, graph, stride=(1, 1), **geometry):
        return not graph and x.shape[0] == 1 and stride == (1, 1)

    def forward(self, x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                groups=1):
        out_hw = _out_hw(x, weight, stride, pads, dilation)
        return one_sample(x[0], weight, bias, pads, dilation, groups, out_hw)[None]


def one_sample(x, weight, bias, pads, dilation, groups, out_hw):
    """Convolution of one sample x (C, H, W) at stride 1: -> (O, OH, OW).

    Why not the columns used for a batch: at batch 1 their rows are short runs of OW values,
    and copying 288 x 14 runs of 14 values (the CNN workload's second conv) cost more than its
    GEMM. Here each channel's plane is stored flat, in rows R = max(W, OW) long, with zero
    rows above and below. Output (oy, ox), at flat position oy*R + ox, reads for kernel
    position (ky, kx) flat position (oy*R + ox) + (ky*dh*R + kx*dw - left): so each kernel
    position's row of columns is one run of OH*R values from one offset. Where
    ox + kx*dw - left falls outside [0, W) that read lands in a neighbouring row, and is
    zeroed afterwards. With 'same' padding R = W = OW, so the product computes exactly the
    outputs, contiguous.
    """
    c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    top, _, left, _ = pads
    (dh, dw), (oh, ow) = dilation, out_hw
    row = max(w, ow)
    k = cg * kh * kw
    m = oh * row  # outputs computed per channel: OW kept of each row of R
    # `left` zeros in front, so that the first kernel position's run starts at 0; the last
    # position's run ends (kw - 1) * dw - left values past the plane
    length = max(left + (oh + dh * (kh - 1)) * row, m + dh * (kh - 1) * row + dw * (kw - 1))
    flat = xp.zeros((c, length), dtype=x.dtype)
    flat[:, left + top * row:left + (top + h) * row].reshape(c, h, row)[:, :, :w] = x
    item = flat.itemsize
    runs = strided_view(flat, (c, kh, kw, m), (length * item, dh * row * item, dw * item, item))
    # The bias rides in the product, as a row of ones under the columns, when there is one
    # group. The rows are a prefix of a C-contiguous array, so the reshapes below are views.
    bias_row = int(bias is not None and groups == 1)
    cols = xp.empty((c * kh * kw + bias_row, m), dtype=x.dtype)  # (G*K (+1), OH*R)
    cols[:c * kh * kw].reshape(c, kh, kw, m)[...] = runs
    by_column = cols[:c * kh * kw].reshape(c, kh, kw, oh, row)
    for kx in range(kw):  # zero the reads that wrapped into a neighbouring row
        shift = kx * dw - left  # output column ox reads input column ox + shift
        if shift < 0:
            by_column[:, :, kx, :, :-shift] = 0
        if w - shift < row:
            by_column[:, :, kx, :, max(w - shift, 0):] = 0
    if bias_row:
        cols[-1] = 1
        w_and_b = xp.empty((o, k + 1), dtype=x.dtype)
        w_and_b[:, :k], w_and_b[:, k] = weight.reshape(o, k), bias
        wide = w_and_b @ cols  # (O, OH*R)
    else:
        wide = xp.matmul(weight.reshape(groups, o // groups, k),
                         cols.reshape(groups, k, m))  # (G, Og, OH*R)
    wide = wide.reshape(o, oh, row)
    bias_after = bias is not None and not bias_row  # groups: added per output channel here
    if row == ow and not bias_after:
        return wide  # (O, OH, OW), contiguous
    out = xp.empty((o, oh, ow), dtype=x.dtype)
    if bias_after:
        xp.add(wide[:, :, :ow], bias.reshape(o, 1, 1), out=out)
    else:
        out[...] = wide[:, :, :ow]  # the outputs past OW dropped
    return out


@fast_path
class Conv2dBatchLast(FastPath, Conv2d):
    """The columns (G, K, OH*OW*N) copied by a compiled loop out of a padded batch-last copy
    of the input, one product per group, and the output an (N, O, OH, OW) view of
    (O, OH, OW, N) memory; backward scatters the columns' gradient by a compiled loop too, and
    takes the weight gradient in cache-sized blocks (long_reduction_matmul)."""

    kernels = ("im2col", "col2im")
    why = "CNN workload's second conv alone, the columns: 1.33 -> 0.46 ms"

    @classmethod
    def supports(cls, x, weight, bias=None, *, graph, **geometry):
        return x.dtype.char in "fd"  # the kernels' dtypes

    @classmethod
    def worth_it(cls, x, weight, bias=None, *, graph, **geometry):
        return x.shape[0] >= MIN_BATCH

    def forward(self, x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                groups=1):
        n = x.shape[0]
        o, cg, kh, kw = weight.shape
        oh, ow = _out_hw(x, weight, stride, pads, dilation)
        k = cg * kh * kw
        # (C, Hp, Wp, N): a view when x is already batch-last in memory and needs no padding
        xc = pad_batch_last(x, pads) if any(pads) else xp.ascontiguousarray(batch_last(x))
        cols = xp.empty((groups, k, oh * ow * n), dtype=x.dtype)  # (G, K, M)
        w3 = weight.reshape(groups, o // groups, k)  # (G, Og, K)
        out = xp.empty((groups, o // groups, oh * ow * n), dtype=x.dtype)  # (G, Og, M)
        im2col = self.kernel("im2col")

        def output_rows(start, stop):  # the columns and the product for output rows start:stop
            im2col(xc, kh, kw, *stride, *dilation, start, stop, ow, cols.reshape(groups * k, -1))
            part = slice(start * ow * n, stop * ow * n)
            xp.matmul(w3, cols[:, :, part], out=out[:, :, part])
            if bias is not None:
                out[:, :, part] += bias.reshape(groups, o // groups, 1)

        if oh >= 2 and cols.size >= MIN_COLUMNS_IN_HALVES_FORWARD:
            threads.run_pair(lambda: output_rows(0, oh // 2), lambda: output_rows(oh // 2, oh))
        else:
            output_rows(0, oh)
        needs = self.needs_input_grad
        if needs:  # keep only what backward will use
            self.cols = cols if needs[1] else None
            self.w3 = w3 if needs[0] else None
            self.geometry = (x.shape, weight.shape, stride, pads, dilation, groups, xc.shape)
        return batch_first(out.reshape(o, oh, ow, n))  # (N, O, OH, OW) view

    def backward(self, g):
        (n, c, h, w), wshape, stride, (top, _, left, _), dilation, groups, padded = self.geometry
        o, _, kh, kw = wshape
        oh, ow = g.shape[2:]
        needs = self.needs_input_grad
        g3 = batch_last(g).reshape(groups, o // groups, oh * ow * n)  # (G, Og, M)
        gx = gw = gb = None
        if needs[1]:
            # (cols @ g^T)^T rather than g @ cols^T: the same product, but OpenBLAS runs this
            # operand order 2-3x faster for these shapes (long reduction over M, small output).
            gw = long_reduction_matmul(self.cols, g3.transpose(0, 2, 1))  # (G, K, Og)
            gw = gw.transpose(0, 2, 1).reshape(wshape)  # (O, Cg, KH, KW)
            if not self.retains_graph:
                # Let the columns go before the input gradient's columns, the same size, are
                # made: they can reuse the memory (CNN step peak 63.8 -> 49.8 MB).
                self.cols = None
        if len(needs) > 2 and needs[2]:
            gb = (g3 @ ones(g3.shape[2], g3.dtype)).reshape(o)  # row sums by the BLAS (gemv.py)
        if needs[0]:
            gpad = xp.zeros(padded, dtype=g.dtype)  # (C, Hp, Wp, N)
            w3t = self.w3.transpose(0, 2, 1)  # (G, K, Og)
            col2im = self.kernel("col2im")

            def input_gradient(channels):  # the columns' gradient, scattered, for channels
                rows = slice(channels.start * kh * kw, channels.stop * kh * kw)
                gcols = xp.matmul(w3t[0, rows], g3[0])  # (K part, M)
                col2im(gcols.reshape(-1, kh, kw, oh, ow, n), *stride, *dilation, gpad[channels])

            if groups == 1 and c >= 2 and c * kh * kw * g3.shape[2] >= MIN_COLUMNS_IN_HALVES:
                threads.run_pair(lambda: input_gradient(slice(0, c // 2)),
                                 lambda: input_gradient(slice(c // 2, c)))
            else:
                gcols = xp.matmul(w3t, g3)  # (G, K, M)
                col2im(gcols.reshape(c, kh, kw, oh, ow, n), *stride, *dilation, gpad)
            gx = batch_first(gpad[:, top:top + h, left:left + w])  # (N, C, H, W) view
        return gx, gw, gb
