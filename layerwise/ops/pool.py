"""Resampling over (N, C, H, W): max and average pooling, adaptive average pooling, and
nearest / bilinear interpolation.

Max and average pooling are Functions of their own: both read the windows through strided
views of the padded input and scatter the gradient back with one strided slice per kernel
position (no loop over pixels); layerwise/ops/fast/pool.py has the compiled max pool for
batches from 8 and for batch-1 inference. Adaptive average pooling and interpolation are
linear maps that act on H and W separately, so they are composed from existing ops: a
reshape-and-mean, or one matrix on each side (``out = A_h @ x @ A_w^T``) whose backward is
the matmul's.
"""

import math

from layerwise import backend
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.backend import xp
from layerwise.ops import movement, reduce
from layerwise.ops.conv import as_pair, pad2d, window_slice, windows
from layerwise.ops.matmul import matmul


def _pool_geometry(shape, kernel, stride, padding, dilation, ceil_mode, op):
    """Output size and the padded extent, with PyTorch's checks and its ceil-mode rule."""
    sizes = []
    for axis, (n, k, s, p, d) in enumerate(zip(shape[2:], kernel, stride, padding, dilation)):
        span = n + 2 * p - d * (k - 1) - 1
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input
            out -= 1
        sizes.append(out)
    if sizes[0] < 1 or sizes[1] < 1:
        raise ValueError(f"{op} of input {tuple(shape)} with kernel_size={kernel}, padding="
                         f"{padding}, dilation={dilation} gives output size {tuple(sizes)}: "
                         f"the input is too small")
    # Ceil mode may read past the bottom/right padding; that overhang is filled like padding.
    extent = tuple(max(n + 2 * p, (o - 1) * s + d * (k - 1) + 1)
                   for n, o, s, p, d, k in zip(shape[2:], sizes, stride, padding, dilation, kernel))
    return tuple(sizes), extent


def pool_arguments(kernel_size, stride, padding, dilation, op):
    """(kernel, stride, padding, dilation) as checked pairs; stride None means the kernel.
    The pooling layers call this when built, so a bad argument fails there, not at forward."""
    kernel = as_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None or stride == () else as_pair(stride, "stride", op)
    padding, dilation = as_pair(padding, "padding", op), as_pair(dilation, "dilation", op)
    for name, v in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if min(v) < 1:
            raise ValueError(f"{op} {name} must be positive, got {v}")
    if min(padding) < 0:
        raise ValueError(f"{op} padding must be non-negative, got {padding}")
    for k, p, d in zip(kernel, padding, dilation):
        if p > (d * (k - 1) + 1) // 2:  # PyTorch's rule: no window may lie wholly in padding
            raise ValueError(f"{op} padding should be at most half of the effective kernel size, "
                             f"got padding={padding}, kernel_size={kernel}, dilation={dilation}")
    return kernel, stride, padding, dilation


def _pool_args(x, kernel_size, stride, padding, dilation, op):
    if x.ndim != 4:
        raise ValueError(f"{op} expected 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    return pool_arguments(kernel_size, stride, padding, dilation, op)


# Checked geometries of calls whose arguments are all plain ints (nn.MaxPool2d(2) and the
# like), by input shape: the checks and sizes took ~4 us of each call, most of a batch-1
# pool's time besides its kernel. Bounded; other calls are checked every time.
_geometries = {}


def _checked_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, op):
    """(kernel, stride, padding, dilation, out_hw, extent) as pairs, checked."""
    check_tensor(x, op)
    plain = (type(kernel_size) is type(padding) is type(dilation) is int
             and (stride is None or type(stride) is int) and type(ceil_mode) is bool)
    key = (x.shape, kernel_size, stride, padding, dilation, ceil_mode, op) if plain else None
    found = _geometries.get(key)
    if found is None:
        pairs = _pool_args(x, kernel_size, stride, padding, dilation, op)
        found = pairs + _pool_geometry(x.shape, *pairs, ceil_mode, op)
        if plain and len(_geometries) < 256:
            _geometries[key] = found
    return found


def position_dtype(kernel):
    """The dtype of a kernel position (row-major, 0 .. KH*KW-1): one byte where it fits."""
    return xp.int8 if kernel[0] * kernel[1] < 128 else xp.int32


class MaxPool2d(Function):
    """Window maxima; the kernel position of each window's max is kept so that backward can
    route the gradient to the one input that won (ties go to the first, as in PyTorch)."""

    def forward(self, x, kernel, stride, padding, dilation, out_hw, extent):
        h, w = x.shape[2:]
        ph, pw = padding
        xpad = pad2d(x, (ph, extent[0] - h - ph, pw, extent[1] - w - pw), -xp.inf)
        self.geometry = (x.shape, xpad.shape, kernel, stride, padding, dilation, out_hw)
        # One strided slice per kernel position, each (N, C, OH, OW) and read in place: a
        # running maximum over them, then the winning position by comparisons. Copying all
        # windows out first (N, C, K, OH, OW) and reducing over K took 3-4x longer at the CNN
        # workload's size.
        slices = [xpad[:, :, window_slice(i, dilation[0], stride[0], out_hw[0]),
                       window_slice(j, dilation[1], stride[1], out_hw[1])]
                  for i in range(kernel[0]) for j in range(kernel[1])]
        out = slices[0].copy()  # (N, C, OH, OW)
        for window in slices[1:]:
            xp.maximum(out, window, out=out)  # NaN propagates: it is its window's max
        if not self.needs_input_grad:  # no graph (inference): the winners are not needed
            return out
        # arg = how many positions come before the first one holding the max: count, position
        # by position, the windows still unmatched. Byte-wide passes; a masked copyto per
        # position (the obvious way) is ~20x slower.
        arg = xp.zeros(out.shape, dtype=position_dtype(kernel))
        unmatched = xp.ones(out.shape, dtype=bool)
        hit = xp.empty(out.shape, dtype=bool)
        for window in slices[:-1]:
            xp.equal(window, out, out=hit)
            hit &= unmatched
            unmatched ^= hit
            arg += unmatched
        if xp.isnan(out).any():  # NaN is the max of its window (as in PyTorch): the first NaN
            for i in range(len(slices) - 1, -1, -1):
                xp.copyto(arg, i, where=xp.isnan(slices[i]))
        self.arg = arg  # (N, C, OH, OW)
        return out

    def backward(self, g):
        (_, _, h, w), padded, kernel, stride, (ph, pw), dilation, (oh, ow) = self.geometry
        gpad = xp.zeros(padded, dtype=g.dtype)  # (N, C, Hp, Wp)
        # Kernel position by kernel position, each slice receives the gradient of the windows
        # whose max sits there; where windows overlap, one input gets it from several.
        for i in range(kernel[0]):
            rows = window_slice(i, dilation[0], stride[0], oh)
            for j in range(kernel[1]):
                cols = window_slice(j, dilation[1], stride[1], ow)
                gpad[:, :, rows, cols] += g * (self.arg == i * kernel[1] + j)
        return gpad[:, :, ph:ph + h, pw:pw + w]

    def positions(self):
        """(row, col) of each window's max in the padded input, each (N, C, OH, OW)."""
        _, _, kernel, stride, _, dilation, (oh, ow) = self.geometry
        row = xp.arange(oh).reshape(-1, 1) * stride[0] + (self.arg // kernel[1]) * dilation[0]
        col = xp.arange(ow) * stride[1] + (self.arg % kernel[1]) * dilation[1]
        return row, col


class AvgPool2d(Function):
    """Window means: a sum over the KH*KW kernel positions (strided slices of the padded
    input) times 1/divisor; backward spreads g/divisor back over the same slices."""

    def forward(self, x, kernel, stride, padding, out_hw, extent, divisor):
        h, w = x.shape[2:]
        ph, pw = padding
        xpad = pad2d(x, (ph, extent[0] - h - ph, pw, extent[1] - w - pw))
        view = windows(xpad, kernel, stride, (1, 1), out_hw)  # (N, C, KH, KW, OH, OW)
        self.geometry = (x.shape, xpad.shape, kernel, stride, padding, out_hw)
        self.divisor = divisor
        return (view.sum(axis=(2, 3)) / divisor).astype(x.dtype, copy=False)

    def backward(self, g):
        (_, _, h, w), padded, kernel, stride, (ph, pw), (oh, ow) = self.geometry
        gs = (g / self.divisor).astype(g.dtype, copy=False)  # (N, C, OH, OW)
        gpad = xp.zeros(padded, dtype=g.dtype)
        for i in range(kernel[0]):
            rows = window_slice(i, 1, stride[0], oh)
            for j in range(kernel[1]):
                gpad[:, :, rows, window_slice(j, 1, stride[1], ow)] += gs
        return gpad[:, :, ph:ph + h, pw:pw + w]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over KH x KW windows of (N, C, H, W); padding counts as -inf. With
    ``return_indices`` also returns, per output, the flat index h*W + w of the max in its
    input plane (PyTorch's convention, usable by max_unpool2d)."""
    kernel, stride, padding, dilation, out_hw, extent = _checked_geometry(
        input, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out = MaxPool2d.apply(input, kernel=kernel, stride=stride, padding=padding,
                          dilation=dilation, out_hw=out_hw, extent=extent)
    if not return_indices:
        return out
    node = out._ctx
    if node is None:  # no graph was recorded: run the forward again to get the positions
        node = MaxPool2d()
        node.needs_input_grad = (True,)  # so that forward keeps the positions of the maxima
        node.forward(input.data, kernel, stride, padding, dilation, out_hw, extent)
    row, col = node.positions()  # in the padded array -> flat index in the input plane
    index = (row - padding[0]) * input.shape[3] + (col - padding[1])
    return out, Tensor(xp.ascontiguousarray(index, dtype=backend.int64))


def _avg_divisor(shape, kernel, stride, padding, out_hw, count_include_pad):
    """Per-output divisor, as PyTorch counts it: the window clipped to the padded input (or,
    without count_include_pad, to the input itself). A scalar when every window is full."""
    counts = []
    for n, k, s, p, o in zip(shape[2:], kernel, stride, padding, out_hw):
        start = xp.arange(o) * s - p
        end = xp.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = xp.maximum(start, 0), xp.minimum(end, n)
        counts.append(end - start)
    divisor = counts[0].reshape(-1, 1) * counts[1]  # (OH, OW)
    if (divisor == divisor.flat[0]).all():
        return float(divisor.flat[0])
    return divisor.astype(backend.float64)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over KH x KW windows of (N, C, H, W). Zero padding is counted in the mean unless
    ``count_include_pad=False``; ``divisor_override`` replaces the count."""
    kernel, stride, padding, _, out_hw, extent = _checked_geometry(
        input, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, int) \
                or divisor_override < 1:
            raise ValueError(f"avg_pool2d divisor_override must be a positive int, got "
                             f"{divisor_override!r}")
        divisor = float(divisor_override)
    else:
        divisor = _avg_divisor(input.shape, kernel, stride, padding, out_hw, count_include_pad)
    return AvgPool2d.apply(input, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw,
                           extent=extent, divisor=divisor)


def output_pair(output_size, in_hw, op):
    """An int, a pair, or a pair with None (keep that input size) as a pair of ints."""
    pair = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else output_size
    if len(pair) != 2:
        raise ValueError(f"{op} output_size must be an int or a pair, got {output_size!r}")
    pair = tuple(n if v is None else v for v, n in zip(pair, in_hw))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{op} output_size must hold positive ints (or None), got {output_size!r}")
    return pair


def _adaptive_matrix(n_in, n_out, dtype):
    """(n_out, n_in) averaging matrix: row i averages PyTorch's bin
    [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))."""
    i = xp.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)  # ceil division
    cols = xp.arange(n_in)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return Tensor((inside / (end - start)[:, None]).astype(dtype))


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (OH, OW), with PyTorch's bins (which overlap
    when the size does not divide)."""
    check_tensor(input, "adaptive_avg_pool2d")
    if input.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d expected 4-D input (N, C, H, W), got shape "
                         f"{tuple(input.shape)}")
    n, c, h, w = input.shape
    oh, ow = output_pair(output_size, (h, w), "adaptive_avg_pool2d")
    if h % oh == 0 and w % ow == 0:  # equal, disjoint bins: a reshape and a mean
        blocks = movement.reshape(input, n, c, oh, h // oh, ow, w // ow)
        return reduce.mean(blocks, dim=(3, 5))
    rows = _adaptive_matrix(h, oh, input.dtype)  # (OH, H)
    cols = _adaptive_matrix(w, ow, input.dtype)  # (OW, W)
    return matmul(matmul(rows, input), movement.transpose(cols, 0, 1))  # (N, C, OH, OW)


# --- interpolation ------------------------------------------------------------------------

INTERPOLATE_MODES = ("nearest", "nearest-exact", "linear", "bilinear")


def _nearest_source(n_in, n_out, scale, exact):
    """Input index that each output copies: floor(i * scale) (PyTorch 'nearest', in float32
    as PyTorch's kernel computes it) or floor((i + 0.5) * scale) ('nearest-exact')."""
    if n_out == n_in and not exact:  # PyTorch's shortcut, whatever the scale factor
        return xp.arange(n_out)
    i = xp.arange(n_out, dtype=xp.float32)
    src = xp.floor((i + xp.float32(0.5) if exact else i) * xp.float32(scale)).astype(xp.int64)
    return xp.minimum(src, n_in - 1)


def _linear_matrix(n_in, n_out, scale, align_corners):
    """(n_out, n_in) linear-interpolation matrix, with PyTorch's source coordinates:
    align_corners maps the corner pixel centres onto each other, otherwise
    src = max(scale * (i + 0.5) - 0.5, 0)."""
    i = xp.arange(n_out, dtype=xp.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = xp.maximum(scale * (i + 0.5) - 0.5, 0.0)
    lo = xp.minimum(xp.floor(src).astype(xp.int64), n_in - 1)
    hi = xp.minimum(lo + 1, n_in - 1)
    frac = src - lo
    matrix = xp.zeros((n_out, n_in))
    xp.add.at(matrix, (xp.arange(n_out), lo), 1.0 - frac)
    xp.add.at(matrix, (xp.arange(n_out), hi), frac)
    return matrix


def _interp_sizes(shape, size, scale_factor, op):
    spatial = shape[2:]
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op} needs exactly one of size and scale_factor, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if size is not None:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * len(spatial)
        scales = (None,) * len(spatial)
    else:
        scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) \
            else (scale_factor,) * len(spatial)
        if len(scales) != len(spatial) or any(s <= 0 for s in scales):
            raise ValueError(f"{op} scale_factor must be positive, one per spatial dim "
                             f"{tuple(spatial)}, got {scale_factor!r}")
        sizes = tuple(math.floor(n * s) for n, s in zip(spatial, scales))
    if len(sizes) != len(spatial) or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{op} output size must be positive ints, one per spatial dim "
                         f"{tuple(spatial)}, got {sizes}")
    return sizes, scales


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize (N, C, L) or (N, C, H, W) by 'nearest', 'nearest-exact', 'linear' (3-D) or
    'bilinear' (4-D) interpolation, with PyTorch's coordinate rules."""
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f"interpolate mode must be one of {sorted(INTERPOLATE_MODES)}, got "
                         f"{mode!r}")
    linear = mode in ("linear", "bilinear")
    if align_corners is not None and not linear:
        raise ValueError("align_corners can only be set with the interpolating modes "
                         f"'linear' and 'bilinear', not mode={mode!r}")
    want = {"linear": 3, "bilinear": 4}.get(mode)
    if (want and input.ndim != want) or input.ndim not in (3, 4):
        shape = {3: "3-D (N, C, L)", 4: "4-D (N, C, H, W)"}
        expected = shape[want] if want else "3-D (N, C, L) or 4-D (N, C, H, W)"
        raise ValueError(f"interpolate mode {mode!r} expects {expected} input, got shape "
                         f"{tuple(input.shape)}")
    sizes, scales = _interp_sizes(input.shape, size, scale_factor, "interpolate")
    out = input
    # Each spatial axis is one matrix product, last axis first: x @ A_w^T, then A_h @ x.
    for axis in range(input.ndim - 1, 1, -1):
        n_in, n_out, s = input.shape[axis], sizes[axis - 2], scales[axis - 2]
        scale = 1.0 / s if s is not None else n_in / n_out  # PyTorch uses the given factor
        if linear:
            if n_in == n_out and (s is None or s == 1):
                continue
            matrix = _linear_matrix(n_in, n_out, scale, bool(align_corners))
        else:
            src = _nearest_source(n_in, n_out, scale, mode == "nearest-exact")
            if n_out % n_in == 0 and (src == xp.arange(n_out) // (n_out // n_in)).all():
                if n_out != n_in:  # integer upscaling: a copy, no matmul
                    out = _repeat(out, axis, n_out // n_in)
                continue
            matrix = (src[:, None] == xp.arange(n_in)).astype(xp.float64)  # one-hot rows
        matrix = Tensor(matrix.astype(input.dtype))  # (n_out, n_in)
        if axis == input.ndim - 1:
            out = matmul(out, movement.transpose(matrix, 0, 1))  # (..., W) @ (W, OW)
        else:
            out = matmul(matrix, out)  # (OH, H) @ (..., H, W')
    return out


def _repeat(x, axis, times):
    """Repeat each element ``times`` along ``axis`` (nearest upscaling by an integer), as an
    expand of a new axis and a reshape; the expand's backward sums the copies."""
    shape = x.shape
    x = movement.unsqueeze(x, axis + 1)
    x = movement.expand(x, *shape[:axis + 1], times, *shape[axis + 1:])
    return movement.reshape(x, *shape[:axis], shape[axis] * times, *shape[axis + 1:])


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated PyTorch spelling of interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)
