"""Convolution: conv2d as one Function (im2col and one matrix product per group), conv1d
composed from it, and the transposed convolution as the conv's adjoint.

Why im2col: NumPy has no convolution primitive, but it has a fast matrix product. Every
output pixel of a convolution is a dot product between the kernel and the patch under it, so
laying all patches out as columns turns the whole layer into matrix products. The patches are
read through a strided view of the padded input, without a Python loop over pixels; the only
copy is the one that lays the columns out contiguously for the product.

A transposed convolution maps each input pixel to a kernel-sized patch of the output: it is
the input-gradient of the convolution with the same weight and geometry, so its forward is
Conv2d's backward for x (a product, then col2im) and its input-gradient is a convolution
(windows, then a product).

This is the reference: plain (N, C, H, W) arrays. layerwise/ops/fast/conv.py has the compiled
batch-last form of conv2d that runs from batch 8 and the batch-1 inference form; the
transposed convolution has no fast path.
"""

from layerwise.autograd.function import Function
from layerwise.autograd.tensor import check_tensor
from layerwise.backend import xp
from layerwise.ops import movement


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


def pad2d(x, pads, value=0.0):
    """x (N, C, H, W) padded with ``value``: pads = (top, bottom, left, right)."""
    if not any(pads):
        return x
    top, bottom, left, right = pads
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def window_slice(k, dilation, stride, n_out):
    """The slice of a padded axis that kernel position k reads for all n_out outputs."""
    start = k * dilation
    return slice(start, start + stride * (n_out - 1) + 1, stride)


def windows(x, kernel, stride, dilation, out_hw):
    """A view (N, C, KH, KW, OH, OW) of the padded x (N, C, Hp, Wp): element
    [n, c, i, j, y, x] = x[n, c, y*sh + i*dh, x*sw + j*dw]. No copy."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)  # the dilated kernel
    view = xp.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))  # (N, C, ., ., *span)
    view = view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]  # (N, C, OH, OW, KH, KW)
    return view.transpose(0, 1, 4, 5, 2, 3)


def col2im(gcols, gpad, stride, dilation):
    """The adjoint of ``windows``: gcols (N, C, KH, KW, OH, OW) added into gpad (N, C, Hp, Wp)
    where the windows read them. Each kernel position is one strided slice; the slices of
    different positions overlap when stride < kernel, so they are added one at a time."""
    _, _, kh, kw, oh, ow = gcols.shape
    for i in range(kh):
        rows = window_slice(i, dilation[0], stride[0], oh)
        for j in range(kw):
            gpad[:, :, rows, window_slice(j, dilation[1], stride[1], ow)] += gcols[:, :, i, j]
    return gpad


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
        view = windows(pad2d(x, pads), (kh, kw), stride, dilation, (oh, ow))
        cols = view.reshape(n, groups, cg * kh * kw, oh * ow)  # (N, G, K, M): the one copy
        w3 = weight.reshape(groups, o // groups, cg * kh * kw)  # (G, Og, K)
        out = (w3 @ cols).reshape(n, o, oh, ow)  # (N, G, Og, M) -> (N, O, OH, OW)
        if bias is not None:
            out += bias.reshape(o, 1, 1)
        needs = self.needs_input_grad
        if needs:  # keep only what backward will use
            self.cols = cols if needs[1] else None
            self.w3 = w3 if needs[0] else None
            self.geometry = (x.shape, weight.shape, stride, pads, dilation, groups)
        return out

    def backward(self, g):
        (n, c, h, w), wshape, stride, (top, bottom, left, right), dilation, groups = self.geometry
        o, _, kh, kw = wshape
        oh, ow = g.shape[2:]
        needs = self.needs_input_grad
        g4 = g.reshape(n, groups, o // groups, oh * ow)  # (N, G, Og, M)
        gx = gw = gb = None
        if needs[1]:  # sum over the batch of g @ cols^T: (N, G, Og, K) -> (O, Cg, KH, KW)
            gw = (g4 @ self.cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(wshape)
        if len(needs) > 2 and needs[2]:
            gb = g.sum(axis=(0, 2, 3))
        if needs[0]:
            gcols = self.w3.transpose(0, 2, 1) @ g4  # (N, G, K, M)
            gpad = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=g.dtype)
            col2im(gcols.reshape(n, c, kh, kw, oh, ow), gpad, stride, dilation)
            gx = gpad[:, :, top:top + h, left:left + w]
        return gx, gw, gb


def transposed_size(size, kernel, stride, padding, output_padding, dilation):
    """Output length along one axis of a transposed convolution (PyTorch's formula)."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


class ConvTranspose2d(Function):
    """out = W^T * x + b over (N, C, H, W), the adjoint of Conv2d, with weight (C, O/G, KH, KW).

    Input pixel (i, j) of channel c adds x[n, c, i, j] * weight[c] into the output patch of its
    group's channels that starts at (i * stride - padding, j * stride - padding), its taps
    ``dilation`` apart; output_padding only lengthens the bottom and right edges.
    """

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0),
                output_padding=(0, 0), dilation=(1, 1), groups=1):
        n, c, h, w = x.shape
        _, og, kh, kw = weight.shape
        (ph, pw), (oph, opw) = padding, output_padding
        oh = transposed_size(h, kh, stride[0], ph, oph, dilation[0])
        ow = transposed_size(w, kw, stride[1], pw, opw, dilation[1])
        w3 = weight.reshape(groups, c // groups, og * kh * kw)  # (G, Cg, K)
        x4 = x.reshape(n, groups, c // groups, h * w)  # (N, G, Cg, L)
        cols = w3.transpose(0, 2, 1) @ x4  # (N, G, K, L): each input pixel's output patch
        full = xp.zeros((n, groups * og, oh + 2 * ph, ow + 2 * pw), dtype=x.dtype)
        col2im(cols.reshape(n, groups * og, kh, kw, h, w), full, stride, dilation)
        out = xp.ascontiguousarray(full[:, :, ph:ph + oh, pw:pw + ow])  # (N, O, OH, OW)
        if bias is not None:
            out += bias.reshape(-1, 1, 1)
        needs = self.needs_input_grad
        if needs:  # keep only what backward will use
            self.w3 = w3 if needs[0] else None
            self.x4 = x4 if needs[1] else None
            self.geometry = (x.shape, weight.shape, stride, padding, dilation, groups)
        return out

    def backward(self, g):
        (n, c, h, w), wshape, stride, (ph, pw), dilation, groups = self.geometry
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0] or needs[1]:  # the conv's columns of g: what each input pixel wrote to
            view = windows(pad2d(g, (ph, ph, pw, pw)), wshape[2:], stride, dilation, (h, w))
            gcols = view.reshape(n, groups, -1, h * w)  # (N, O, KH, KW, H, W) -> (N, G, K, L)
            if needs[0]:
                gx = (self.w3 @ gcols).reshape(n, c, h, w)  # (N, G, Cg, L) -> (N, C, H, W)
            if needs[1]:  # sum over the batch of x @ gcols^T: (N, G, Cg, K) -> (C, O/G, KH, KW)
                gw = (self.x4 @ gcols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(wshape)
        if len(needs) > 2 and needs[2]:
            gb = g.sum(axis=(0, 2, 3))
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


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-D convolution (the adjoint of conv2d) of input (N, C, H, W) or (C, H, W)
    with weight (C, O/groups, KH, KW); returns (N, O, OH, OW) with
    OH = (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1."""
    op = "conv_transpose2d"
    check_tensor(input, op)
    if weight.ndim != 4:
        raise ValueError(f"{op} weight must be 4-D (in_channels, out_channels/groups, kH, kW), "
                         f"got shape {tuple(weight.shape)}")
    if input.ndim == 3:  # unbatched (C, H, W)
        return movement.squeeze(conv_transpose2d(movement.unsqueeze(input, 0), weight, bias,
                                                 stride, padding, output_padding, groups,
                                                 dilation), 0)
    if input.ndim != 4:
        raise ValueError(f"{op} expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    c, og, kh, kw = weight.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op} groups must be a positive int, got {groups!r}")
    if c % groups:
        raise ValueError(f"{op} in_channels ({c}, weight of shape {tuple(weight.shape)}) must be "
                         f"divisible by groups ({groups})")
    if input.shape[1] != c:
        raise ValueError(f"{op} expected input with {c} channels (weight of shape "
                         f"{tuple(weight.shape)}), got input of shape {tuple(input.shape)}")
    if bias is not None and tuple(bias.shape) != (og * groups,):
        raise ValueError(f"{op} bias must have shape ({og * groups},), got {tuple(bias.shape)}")
    if input.dtype != weight.dtype:
        raise TypeError(f"{op} got input of dtype {input.dtype} but weight of dtype "
                        f"{weight.dtype}; convert one of them (e.g. x.float())")
    stride, dilation = as_pair(stride, "stride", op), as_pair(dilation, "dilation", op)
    padding = as_pair(padding, "padding", op)
    output_padding = as_pair(output_padding, "output_padding", op)
    _check_positive(stride, "stride", op)
    _check_positive(dilation, "dilation", op)
    if min(padding) < 0 or min(output_padding) < 0:
        raise ValueError(f"{op} padding and output_padding must be non-negative, got "
                         f"padding={padding}, output_padding={output_padding}")
    if any(p >= s and p >= d for p, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{op} output_padding must be smaller than either stride or dilation, "
                         f"got output_padding={output_padding}, stride={stride}, "
                         f"dilation={dilation}")
    size = tuple(transposed_size(n, k, s, p, q, d) for n, k, s, p, q, d in zip(
        input.shape[2:], (kh, kw), stride, padding, output_padding, dilation))
    if min(size) < 1:
        raise ValueError(f"{op} of input {tuple(input.shape)} with kernel ({kh}, {kw}), "
                         f"stride={stride}, padding={padding}, dilation={dilation} gives output "
                         f"size {size}: reduce the padding")
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return ConvTranspose2d.apply(*tensors, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation, groups=groups)
