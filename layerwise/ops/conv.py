"""Convolution: conv2d as one fused Function (im2col + one GEMM per group), conv1d composed
from it.

Why im2col: NumPy has no convolution primitive, but it has a fast matrix product. Every
output pixel of a convolution is a dot product between the kernel and the patch under it, so
laying all patches out as columns turns the whole layer into one GEMM per group. The patches
are read through a strided view of the (padded) input, without a Python loop over pixels;
the only copy is the one that lays the columns out contiguously for the GEMM.

Columns are arranged (groups, Cg*KH*KW, OH*OW*N), so that with the weight seen as
(groups, Og, Cg*KH*KW) each group is a single large matmul.

Memory layout. The arrays here are kept channel-first and batch-last, (C, H, W, N), and
outputs are returned as (N, C, H, W) views of that memory rather than copied. With the batch
innermost, every strided window read (im2col), slice-add (col2im) and pooling pass runs over
contiguous stretches of OW*N values instead of OW, which made those passes 2-4x faster at
LeNet/ResNet sizes. Elementwise ops and BatchNorm keep the layout, so a conv -> bn -> relu ->
pool -> conv chain never transposes; an NCHW input costs one transposing copy at the first
layer (which pads anyway).

Batch-1 inference (no graph, stride 1) lays its columns out differently: see _one_sample.
"""

from layerwise.backend import strided_view, xp
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import check_tensor
from layerwise.ops import movement
from layerwise.ops.gemv import ones
from layerwise.ops.fast.kernels import kernel

_as_strided = xp.lib.stride_tricks.as_strided


def as_pair(value, name, op):
    """An int or a pair of ints as a pair of ints, checked."""
    # The common cases first, by exact type (a bool is not an int here): this runs several
    # times per conv and pool call, and the general check below took ~2 us of each.
    if type(value) is int:
        return (value, value)
    if type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int:
        return value
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
        raise ValueError(f"{op} {name} must be an int or a pair of ints, got {value!r}")
    return tuple(pair)


def out_size(size, kernel, stride, pad_total, dilation):
    """Output length along one axis: floor((size + pad - dilation*(kernel-1) - 1)/stride) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def batch_last(x):
    """(N, C, H, W) -> a (C, H, W, N) view (no copy)."""
    return x.transpose(1, 2, 3, 0)


def batch_first(x):
    """(C, H, W, N) -> an (N, C, H, W) view (no copy)."""
    return x.transpose(3, 0, 1, 2)


def windows(x, kernel, stride, dilation, out_hw):
    """Strided view (C, KH, KW, OH, OW, N) of x (C, H, W, N), any strides: element
    [c, kh, kw, oh, ow, n] = x[c, oh*sh + kh*dh, ow*sw + kw*dw, n]. No copy; the caller
    reshapes it (which copies) or reduces over it."""
    sc, sh, sw, sn = x.strides
    (kh, kw), (st_h, st_w), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    return _as_strided(x, shape=(x.shape[0], kh, kw, oh, ow, x.shape[3]),
                       strides=(sc, sh * dh, sw * dw, sh * st_h, sw * st_w, sn), writeable=False)


def window_slice(k, dilation, stride, n_out):
    """The slice of a padded axis that kernel position k reads for all n_out outputs."""
    start = k * dilation
    return slice(start, start + stride * (n_out - 1) + 1, stride)


def _col2im(gcols, gpad, kernel_hw, stride, dilation, out_hw):
    """gcols (C, KH, KW, OH, OW, N) added into gpad (C, Hp, Wp, N) where im2col read them: each
    kernel position scatters into a strided slice; slices of different positions overlap when
    stride < kernel, so they are added one position at a time."""
    for i in range(kernel_hw[0]):
        rows = window_slice(i, dilation[0], stride[0], out_hw[0])
        for j in range(kernel_hw[1]):
            gpad[:, rows, window_slice(j, dilation[1], stride[1], out_hw[1])] += gcols[:, i, j]


# Elements of both operands that one block of a long reduction keeps in the L2 cache: 48 K
# float32 values, 192 KiB.
REDUCTION_BLOCK = 48 * 1024


def long_reduction_matmul(a, b):
    """a (G, K, M) @ b (G, M, O) -> (G, K, O), fast also when M is far longer than K and O.

    Why: the weight gradient of a convolution with few input channels is such a product (the
    CNN workload's first conv: K=9, O=32, M=50176), and OpenBLAS runs it at a fraction of its
    speed: 1.0-2.0 ms for 29 MFLOP alone on the 2-core machine. The same product as a batch of
    products over blocks of M, each block small enough to stay in the L2 cache, summed after,
    took 0.39-0.46 ms alone, and 1.26 -> 0.92 ms inside the training step (where its operands
    come from memory, not cache). Once K*O passes ~1000 blocking gains nothing (0.86-1.04x
    alone), as OpenBLAS is efficient there, so larger outputs take the plain product.
    """
    groups, k, m = a.shape
    o = b.shape[2]
    block = REDUCTION_BLOCK // (k + o)
    if k * o > 1024 or m < 2 * block:
        return xp.matmul(a, b)
    n_blocks = m // block
    whole = n_blocks * block
    a4 = a[..., :whole].reshape(groups, k, n_blocks, block).transpose(0, 2, 1, 3)
    b4 = b[:, :whole].reshape(groups, n_blocks, block, o)
    out = xp.matmul(a4, b4).sum(axis=1)  # (G, n_blocks, K, O) -> (G, K, O)
    if whole < m:  # the remainder, shorter than a block
        out += xp.matmul(a[..., whole:], b[:, whole:])
    return out


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


def _one_sample(x, weight, bias, pads, dilation, groups, out_hw):
    """Convolution of one sample x (C, H, W) at stride 1 with no graph (batch-1 inference):
    -> (O, OH, OW).

    Why not the columns used for a batch: at batch 1 their rows are short runs of OW values,
    and copying 288 x 14 runs of 14 values (the CNN workload's second conv) cost more than its
    GEMM. Here each channel's plane is stored flat, in rows R = max(W, OW) long, with zero
    rows above and below. Output (oy, ox), at flat position oy*R + ox, reads for kernel
    position (ky, kx) flat position (oy*R + ox) + (ky*dh*R + kx*dw - left): so each kernel
    position's row of columns is one run of OH*R values from one offset. Where
    ox + kx*dw - left falls outside [0, W) that read lands in a neighbouring row, and is
    zeroed afterwards. With 'same' padding R = W = OW, so the product computes exactly the
    outputs, contiguous. CNN workload's second conv (64x32x3x3 on 14x14), alone: 140 us as
    batch columns, 88-102 us this way (first conv 24 -> 19.5 us).
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


class Conv2d(Function):
    """out = W * x + b over (N, C, H, W), one node for the convolution and its bias.

    Fused rather than composed from unfold + matmul + add: the columns are the one large array
    backward needs (for the weight gradient), and building them inside the node keeps the
    graph at one node and one saved array per layer.
    """

    def forward(self, x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                groups=1):
        n, _, h, w = x.shape
        o, cg, kh, kw = weight.shape
        top, bottom, left, right = pads
        oh = out_size(h, kh, stride[0], top + bottom, dilation[0])
        ow = out_size(w, kw, stride[1], left + right, dilation[1])
        k = cg * kh * kw
        if n == 1 and stride == (1, 1) and not self.needs_input_grad:
            return _one_sample(x[0], weight, bias, pads, dilation, groups, (oh, ow))[None]
        fused = kernel("im2col") if n >= 8 else None
        xb = batch_last(x)  # (C, H, W, N) view
        if fused is not None and xb.flags.c_contiguous:
            # Already batch-last in memory (a conv's or pool's output): the compiled kernels
            # read its padding as zeros instead of copying it into a padded array, and the
            # input gradient comes out contiguous, so the pool before it need not copy it
            # (CNN workload step 1.014x on average over six in-process A/B runs, 0.98-1.04x).
            xc, skip = xb, (top, left)
        else:  # an NCHW input needs one transposing copy anyway, which pads at the same time
            xc, skip = (pad_batch_last(x, pads) if any(pads) else xb), (0, 0)  # (C, Hp, Wp, N)
            fused = fused if xc.flags.c_contiguous else None
        # The bias rides in the product as one more column of the weight against a row of ones
        # under the columns: it saves a pass over the output here and one over the gradient in
        # backward, where the bias gradient comes out of the weight gradient's product. With the
        # blocked weight gradient below: CNN workload step 1.028x and 1.046x (in-process A/B).
        self.bias_row = fused is not None and bias is not None and groups == 1
        k_rows = k + 1 if self.bias_row else k  # rows of columns per group
        if fused is not None:  # the same copy, compiled (kernels.py)
            cols = xp.empty((groups * k_rows, oh * ow * n), dtype=x.dtype)
            fused(xc, *skip, kh, kw, *stride, *dilation, oh, ow, cols)
            if self.bias_row:
                cols[k] = 1
        else:
            cols = windows(xc, (kh, kw), stride, dilation, (oh, ow))  # (C, KH, KW, OH, OW, N)
        # (G, K, M): a view of the kernel's columns, or the one copy out of the strided view
        cols = cols.reshape(groups, k_rows, oh * ow * n)
        w3 = weight.reshape(groups, o // groups, k)  # (G, Og, K)
        if self.bias_row:
            w_and_b = xp.empty((1, o, k + 1), dtype=x.dtype)  # (1, O, K+1)
            w_and_b[0, :, :k], w_and_b[0, :, k] = w3[0], bias
            out = xp.matmul(w_and_b, cols)  # (1, O, M)
        else:
            out = xp.matmul(w3, cols)  # (G, Og, M)
            if bias is not None:
                out += bias.reshape(groups, o // groups, 1)
        needs = self.needs_input_grad
        if needs:  # keep only what backward will use
            wants_bias = len(needs) > 2 and needs[2]
            self.cols = cols if needs[1] or (wants_bias and self.bias_row) else None
            self.w3 = w3 if needs[0] else None
            self.geometry = (x.shape, weight.shape, stride, pads, dilation, groups, (oh, ow),
                             xc.shape, skip)
        return batch_first(out.reshape(o, oh, ow, n))  # (N, O, OH, OW) view

    def backward(self, g):
        (n, c, h, w), wshape, stride, pads, dilation, groups, (oh, ow), source, skip = (
            self.geometry)
        o, _, kh, kw = wshape
        needs = self.needs_input_grad
        g3 = batch_last(g).reshape(groups, o // groups, oh * ow * n)  # (G, Og, M)
        gw = gb = gx = None
        wants_bias = len(needs) > 2 and needs[2]
        if needs[1] or (wants_bias and self.bias_row):
            # (cols @ g^T)^T rather than g @ cols^T: the same product, but OpenBLAS runs this
            # operand order 2-3x faster for these shapes (long reduction over M, small output).
            gw = long_reduction_matmul(self.cols, g3.transpose(0, 2, 1))  # (G, K(+1), Og)
            if self.bias_row:  # the ones row's entries: the bias gradient
                gw, gb = gw[:, :-1], gw[0, -1]
            gw = gw.transpose(0, 2, 1).reshape(wshape) if needs[1] else None  # (O, Cg, KH, KW)
            if not self.retains_graph:
                # Let the columns go before the input gradient's columns, the same size, are
                # made: they can reuse the memory, and the step's peak drops by one such array.
                self.cols = None
        if wants_bias and not self.bias_row:
            gb = (g3 @ ones(g3.shape[2], g3.dtype)).reshape(o)  # row sums by the BLAS
        if needs[0]:
            gcols = xp.matmul(self.w3.transpose(0, 2, 1), g3)  # (G, K, M)
            gcols = gcols.reshape(c, kh, kw, oh, ow, n)
            top, bottom, left, right = pads
            fused = kernel("col2im") if n >= 8 else None  # batch-innermost loop (kernels.py)
            if fused is not None:
                # into the shape the columns were read from: x's, or x padded
                gsource = xp.zeros(source, dtype=g.dtype)  # (C, H(p), W(p), N)
                fused(gcols, *skip, *stride, *dilation, gsource)
                top, left = top - skip[0], left - skip[1]  # the padding gsource holds
            else:
                gsource = xp.zeros((c, h + top + bottom, w + left + right, n), dtype=g.dtype)
                _col2im(gcols, gsource, (kh, kw), stride, dilation, (oh, ow))
            gx = batch_first(gsource[:, top:top + h, left:left + w])  # (N, C, H, W) view
        return gx, gw, gb


# --- functional forms -------------------------------------------------------------------


def _conv_padding(padding, kernel, dilation, stride, op):
    """(top, bottom, left, right) from an int, a pair, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"{op} padding must be an int, a pair, 'valid' or 'same', got "
                             f"{padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{op} padding='same' is only supported with stride 1, got "
                             f"stride={stride}")
        pads = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]  # PyTorch puts the odd extra on the right
        return tuple(pads)
    ph, pw = as_pair(padding, "padding", op)
    if ph < 0 or pw < 0:
        raise ValueError(f"{op} padding must be non-negative, got {padding!r}")
    return (ph, ph, pw, pw)


def _check_positive(values, name, op):
    if any(v < 1 for v in values):
        raise ValueError(f"{op} {name} must be positive, got {values}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as in PyTorch) of input (N, C, H, W) or (C, H, W)
    with weight (O, C/groups, KH, KW); returns (N, O, OH, OW)."""
    check_tensor(input, "conv2d")
    if weight.ndim != 4:
        raise ValueError(f"conv2d weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {tuple(weight.shape)}")
    if input.ndim == 3:  # unbatched (C, H, W)
        return movement.squeeze(conv2d(movement.unsqueeze(input, 0), weight, bias, stride,
                                       padding, dilation, groups), 0)
    if input.ndim != 4:
        raise ValueError(f"conv2d expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    o, cg, kh, kw = weight.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d groups must be a positive int, got {groups!r}")
    if o % groups:
        raise ValueError(f"conv2d out_channels ({o}) must be divisible by groups ({groups})")
    if input.shape[1] != cg * groups:
        raise ValueError(f"conv2d expected input with {cg * groups} channels (weight of shape "
                         f"{tuple(weight.shape)}, groups={groups}), got input of shape "
                         f"{tuple(input.shape)}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"conv2d bias must have shape ({o},), got {tuple(bias.shape)}")
    if input.dtype != weight.dtype:
        raise TypeError(f"conv2d got input of dtype {input.dtype} but weight of dtype "
                        f"{weight.dtype}; convert one of them (e.g. x.float())")
    stride = as_pair(stride, "stride", "conv2d")
    dilation = as_pair(dilation, "dilation", "conv2d")
    _check_positive(stride, "stride", "conv2d")
    _check_positive(dilation, "dilation", "conv2d")
    pads = _conv_padding(padding, (kh, kw), dilation, stride, "conv2d")
    h = input.shape[2] + pads[0] + pads[1]
    w = input.shape[3] + pads[2] + pads[3]
    eff = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    if h < eff[0] or w < eff[1]:
        raise ValueError(f"conv2d input of shape {tuple(input.shape)} is {h}x{w} after padding "
                         f"{padding!r}, smaller than the (dilated) kernel {eff[0]}x{eff[1]}")
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*tensors, stride=stride, pads=pads, dilation=dilation, groups=groups)


def _single(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"conv1d {name} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    return value


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of input (N, C, L) or (C, L) with weight (O, C/groups, K), as conv2d over
    an image of height 1."""
    check_tensor(input, "conv1d")
    if weight.ndim != 3:
        raise ValueError(f"conv1d weight must be 3-D (out_channels, in_channels/groups, kL), got "
                         f"shape {tuple(weight.shape)}")
    if input.ndim == 2:  # unbatched (C, L)
        return movement.squeeze(conv1d(movement.unsqueeze(input, 0), weight, bias, stride,
                                       padding, dilation, groups), 0)
    if input.ndim != 3:
        raise ValueError(f"conv1d expected 2-D (C, L) or 3-D (N, C, L) input, got shape "
                         f"{tuple(input.shape)}")
    if input.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"conv1d expected input with {weight.shape[1] * groups} channels "
                         f"(weight of shape {tuple(weight.shape)}, groups={groups}), got input "
                         f"of shape {tuple(input.shape)}")
    padding = _single(padding, "padding")
    stride, dilation = _single(stride, "stride"), _single(dilation, "dilation")
    # Checked here rather than by conv2d, whose messages would name conv2d and a height of 1.
    for name, value, minimum in (("stride", stride, 1), ("dilation", dilation, 1),
                                 ("padding", padding, 0)):
        if name == "padding" and isinstance(padding, str):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"conv1d {name} must be an int >= {minimum}, got {value!r}")
    if not isinstance(padding, str):
        length, span = input.shape[2] + 2 * padding, dilation * (weight.shape[2] - 1) + 1
        if length < span:
            raise ValueError(f"conv1d input of shape {tuple(input.shape)} is {length} long after "
                             f"padding {padding}, shorter than the (dilated) kernel {span}")
    pad2 = padding if isinstance(padding, str) else (0, padding)
    out = conv2d(movement.unsqueeze(input, 2), movement.unsqueeze(weight, 2), bias,
                 stride=(1, stride), padding=pad2,
                 dilation=(1, dilation), groups=groups)  # (N, O, 1, L')
    return movement.squeeze(out, 2)
