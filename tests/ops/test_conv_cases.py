"""Convolution, pooling and interpolation through the op harness: forward against NumPy
float64 references written pixel by pixel (loops over output positions, straight from the
definitions), gradients against central differences on tiny shapes."""

import math

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.ops.conv import conv1d, conv2d
from layerwise.ops.pool import adaptive_avg_pool2d, avg_pool2d, interpolate, max_pool2d
from tests.harness import OpCase, harness_tests


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# --- references -----------------------------------------------------------------------------


def np_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    o, cg, kh, kw = w.shape
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    else:
        ph, pw = _pair(padding)
        pads = ((ph, ph), (pw, pw))
    xp = np.pad(x, ((0, 0), (0, 0)) + pads)
    n, _, h, wd = xp.shape
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        group = xp[:, (oc // og) * cg:(oc // og + 1) * cg]
        for i in range(oh):
            for j in range(ow):
                patch = group[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                              j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def np_pool_size(n, k, s, p, d, ceil):
    span = n + 2 * p - d * (k - 1) - 1
    out = (math.ceil if ceil else math.floor)(span / s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def np_max_pool2d(x, k, stride=None, padding=0, dilation=1, ceil_mode=False):
    (kh, kw) = _pair(k)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride or k), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    oh = np_pool_size(h, kh, sh, ph, dh, ceil_mode)
    ow = np_pool_size(w, kw, sw, pw, dw, ceil_mode)
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = [i * sh - ph + a * dh for a in range(kh)]
            cols = [j * sw - pw + b * dw for b in range(kw)]
            rows = [r for r in rows if 0 <= r < h]  # padding and ceil overhang never win
            cols = [q for q in cols if 0 <= q < w]
            out[:, :, i, j] = x[:, :, rows][:, :, :, cols].max(axis=(2, 3))
    return out


def np_avg_pool2d(x, k, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(stride or k), _pair(padding)
    n, c, h, w = x.shape
    oh, ow = np_pool_size(h, kh, sh, ph, 1, ceil_mode), np_pool_size(w, kw, sw, pw, 1, ceil_mode)
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            # PyTorch: the window clipped to the padded input counts padding; without
            # count_include_pad, only the real input elements count.
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            total = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
            out[:, :, i, j] = total / (size if count_include_pad else (h1 - h0) * (w1 - w0))
    return out


def np_adaptive_avg_pool2d(x, size):
    oh, ow = _pair(size)
    n, c, h, w = x.shape
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
            w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def np_nearest(x, size):
    # PyTorch's rule: output i copies input min(floor(i * in/out), in - 1), in float32.
    h, w = x.shape[2:]

    def source(i, n_in, n_out):
        return min(int(np.floor(np.float32(i) * np.float32(n_in / n_out))), n_in - 1)

    rows = [source(i, h, size[0]) for i in range(size[0])]
    cols = [source(j, w, size[1]) for j in range(size[1])]
    return x[:, :, rows][:, :, :, cols]


def np_bilinear(x, size, align_corners):
    h, w = x.shape[2:]
    out = np.zeros(x.shape[:2] + tuple(size))

    def source(i, n_in, n_out):
        if align_corners:
            return i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return max((i + 0.5) * n_in / n_out - 0.5, 0.0)

    for i in range(size[0]):
        sy = source(i, h, size[0])
        y0 = int(sy)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(size[1]):
            sx = source(j, w, size[1])
            x0 = int(sx)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, :, i, j] = ((1 - fy) * ((1 - fx) * x[:, :, y0, x0] + fx * x[:, :, y0, x1])
                               + fy * ((1 - fx) * x[:, :, y1, x0] + fx * x[:, :, y1, x1]))
    return out


# --- cases ----------------------------------------------------------------------------------


# 2x2 -> 4x4 by hand: each axis is the same linear map A (4, 2), out = A x A^T. Output row i
# reads source row (i + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (its upper
# neighbour clamped to row 1) without align_corners, and i / 3 with it.
BILINEAR_2_TO_4 = {
    False: np.array([[1, 0], [3 / 4, 1 / 4], [1 / 4, 3 / 4], [0, 1]]),
    True: np.array([[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]]),
}


def bilinear_2_to_4(align_corners, **size):
    a = BILINEAR_2_TO_4[align_corners]
    return OpCase(f"bilinear_2x2_to_4x4_{'corners' if align_corners else 'centres'}",
                  lambda x: interpolate(x, mode="bilinear", align_corners=align_corners, **size),
                  lambda x: a @ x @ a.T, [((2, 3, 2, 2),)])


def conv_case(name, shapes, bias=True, **kw):
    """x (N, C, H, W), weight (O, C/g, KH, KW)[, bias (O,)] as harness inputs."""
    if bias:
        shapes = [s + ((s[1][0],),) for s in shapes]
        return OpCase(name, lambda x, w, b: conv2d(x, w, b, **kw),
                      lambda x, w, b: np_conv2d(x, w, b, **kw), shapes)
    return OpCase(name, lambda x, w: conv2d(x, w, **kw), lambda x, w: np_conv2d(x, w, **kw), shapes)


def np_conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    pad = padding if isinstance(padding, str) else (0, padding)
    out = np_conv2d(x[:, :, None], w[:, :, None], b, (1, stride), pad, (1, dilation), groups)
    return out[:, :, 0]


POOL = [((2, 2, 5, 6),), ((1, 3, 7, 7),)]
# From batch 8 the compiled batch-last paths run (ops/fast/conv.py, ops/fast/pool.py); batch 1
# with no graph takes the inference paths, as POOL's (1, 3, 7, 7) and conv2d's (1, 1, 4, 4) do.
POOL_BATCH_8 = [((8, 2, 4, 6),)]

def np_batch_norm(x, weight=None, bias=None, eps=1e-5):
    """Training-mode batch norm of (N, C, ...) over every dim but 1, biased variance."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x_hat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    out = x_hat if weight is None else x_hat * weight.reshape(shape)
    return out if bias is None else out + bias.reshape(shape)


def _batch_last(x):
    """(C, H, W, N) -> an (N, C, H, W) view: batch-last memory, as a compiled conv's output."""
    return x.permute(3, 0, 1, 2)


CASES = [
    OpCase("batch_norm", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
           np_batch_norm, [((4, 3, 5, 5), (3,), (3,)), ((1, 3, 4, 5), (3,), (3,)), ((6, 2), (2,), (2,))]),
    OpCase("batch_norm_no_affine", lambda x: F.batch_norm(x, None, None, training=True),
           np_batch_norm, [((1, 2, 3, 3),), ((3, 2, 4),)]),
    OpCase("batch_norm_batch_last",
           lambda x, w, b: F.batch_norm(_batch_last(x), None, None, w, b, training=True),
           lambda x, w, b: np_batch_norm(x.transpose(3, 0, 1, 2), w, b),
           [((3, 4, 5, 6), (3,), (3,))]),
    conv_case("conv2d", [((2, 3, 5, 4), (2, 3, 3, 2)), ((1, 1, 4, 4), (3, 1, 1, 1))]),
    conv_case("conv2d_stride_pad", [((2, 2, 6, 5), (3, 2, 3, 3))], stride=2, padding=1),
    conv_case("conv2d_nonsquare", [((1, 2, 7, 5), (2, 2, 3, 2))], stride=(2, 1), padding=(1, 2)),
    conv_case("conv2d_same_even", [((1, 2, 5, 6), (2, 2, 4, 2))], bias=False, padding="same"),
    conv_case("conv2d_same_dilated", [((1, 2, 6, 6), (2, 2, 3, 3))], padding="same", dilation=2),
    conv_case("conv2d_dilation", [((2, 1, 7, 6), (2, 1, 2, 3))], dilation=(2, 1), stride=(1, 2)),
    conv_case("conv2d_groups", [((2, 4, 5, 5), (6, 2, 3, 3))], groups=2, padding=1),
    conv_case("conv2d_depthwise", [((1, 3, 5, 4), (3, 1, 2, 2))], bias=False, groups=3),
    conv_case("conv2d_batch8", [((8, 2, 5, 4), (3, 2, 3, 3))], padding=1),
    conv_case("conv2d_batch8_groups", [((8, 4, 5, 5), (4, 2, 2, 3))], bias=False, groups=2,
              stride=(2, 1), dilation=(1, 2)),
    OpCase("conv1d", lambda x, w, b: conv1d(x, w, b, stride=2, padding=1, dilation=2),
           lambda x, w, b: np_conv1d(x, w, b, stride=2, padding=1, dilation=2),
           [((2, 3, 9), (4, 3, 3), (4,))]),
    OpCase("conv1d_groups_same", lambda x, w: conv1d(x, w, padding="same", groups=2),
           lambda x, w: np_conv1d(x, w, padding="same", groups=2), [((2, 4, 6), (2, 2, 4))]),
    OpCase("max_pool2d", lambda x: max_pool2d(x, 2), lambda x: np_max_pool2d(x, 2), POOL),
    OpCase("max_pool2d_overlap_pad", lambda x: max_pool2d(x, 3, stride=2, padding=1),
           lambda x: np_max_pool2d(x, 3, 2, 1), POOL),
    OpCase("max_pool2d_overlap_s1", lambda x: max_pool2d(x, (2, 3), stride=1),
           lambda x: np_max_pool2d(x, (2, 3), 1), POOL),
    OpCase("max_pool2d_ceil_dilated", lambda x: max_pool2d(x, 2, 2, 1, dilation=2, ceil_mode=True),
           lambda x: np_max_pool2d(x, 2, 2, 1, 2, ceil_mode=True), POOL),
    OpCase("max_pool2d_batch8", lambda x: max_pool2d(x, 2), lambda x: np_max_pool2d(x, 2),
           POOL_BATCH_8),
    OpCase("max_pool2d_batch8_overlap_pad", lambda x: max_pool2d(x, 3, stride=2, padding=1),
           lambda x: np_max_pool2d(x, 3, 2, 1), POOL_BATCH_8),
    OpCase("avg_pool2d", lambda x: avg_pool2d(x, 2), lambda x: np_avg_pool2d(x, 2), POOL),
    OpCase("avg_pool2d_overlap_pad", lambda x: avg_pool2d(x, 3, stride=2, padding=1),
           lambda x: np_avg_pool2d(x, 3, 2, 1), POOL),
    OpCase("avg_pool2d_exclude_pad", lambda x: avg_pool2d(x, 3, 2, 1, count_include_pad=False),
           lambda x: np_avg_pool2d(x, 3, 2, 1, count_include_pad=False), POOL),
    OpCase("avg_pool2d_ceil", lambda x: avg_pool2d(x, (2, 3), (2, 2), (1, 0), ceil_mode=True),
           lambda x: np_avg_pool2d(x, (2, 3), (2, 2), (1, 0), ceil_mode=True), POOL),
    OpCase("adaptive_avg_divisible", lambda x: adaptive_avg_pool2d(x, (1, 3)),
           lambda x: np_adaptive_avg_pool2d(x, (1, 3)), [((2, 2, 5, 6),)]),
    OpCase("adaptive_avg_overlapping", lambda x: adaptive_avg_pool2d(x, (3, 4)),
           lambda x: np_adaptive_avg_pool2d(x, (3, 4)), POOL),
    OpCase("nearest_x2", lambda x: interpolate(x, scale_factor=2),
           lambda x: np_nearest(x, (2 * x.shape[2], 2 * x.shape[3])), [((1, 2, 3, 4),)]),
    OpCase("nearest_size", lambda x: interpolate(x, size=(5, 3)), lambda x: np_nearest(x, (5, 3)),
           [((1, 2, 3, 4),), ((2, 1, 7, 2),)]),
    OpCase("bilinear", lambda x: interpolate(x, size=(5, 7), mode="bilinear"),
           lambda x: np_bilinear(x, (5, 7), False), [((1, 2, 3, 4),), ((1, 1, 8, 9),)]),
    OpCase("bilinear_corners",
           lambda x: interpolate(x, size=(5, 2), mode="bilinear", align_corners=True),
           lambda x: np_bilinear(x, (5, 2), True), [((1, 2, 3, 4),)]),
    bilinear_2_to_4(False, size=(4, 4)),
    bilinear_2_to_4(True, scale_factor=2),
]

(test_forward_matches_numpy, test_gradient_matches_finite_differences,
 test_fast_path_matches_reference) = harness_tests(CASES)


# --- behaviour beyond the harness -----------------------------------------------------------


def test_max_pool_ties_route_gradient_to_the_first_max():
    x = lw.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 0], [0, 0]])


def test_overlapping_max_windows_accumulate_gradient():
    # One dominant value sits in all four 2x2 windows of a 3x3 input with stride 1.
    data = np.zeros((1, 1, 3, 3))
    data[0, 0, 1, 1] = 5.0
    x = lw.tensor(data, requires_grad=True)
    max_pool2d(x, 2, stride=1).sum().backward()
    assert x.grad.numpy()[0, 0, 1, 1] == 4.0 and x.grad.numpy().sum() == 4.0


@pytest.mark.parametrize("requires_grad", [False, True])  # no graph / a recorded node
@pytest.mark.parametrize("batch", [2, 8])  # 8: the compiled path's node, positions batch-last
def test_max_pool_return_indices_are_flat_positions_in_the_input_plane(requires_grad, batch):
    x = np.random.default_rng(0).standard_normal((batch, 3, 5, 6))
    out, index = max_pool2d(lw.tensor(x, requires_grad=requires_grad), 3, stride=2, padding=1,
                            return_indices=True)
    out = out.detach()
    assert index.dtype == lw.int64 and index.shape == out.shape
    picked = np.take_along_axis(x.reshape(batch, 3, -1), index.numpy().reshape(batch, 3, -1),
                                axis=2)
    np.testing.assert_array_equal(picked.reshape(out.shape), out.numpy())


def test_unbatched_conv_matches_batched():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    got = conv2d(lw.tensor(x), lw.tensor(w), padding=1)
    np.testing.assert_allclose(got.numpy(), np_conv2d(x[None], w, padding=1)[0], atol=1e-12)


def test_conv_output_keeps_float32_and_grads_have_input_layout():
    x = lw.randn(2, 3, 6, 6, requires_grad=True)
    w = lw.randn(4, 3, 3, 3, requires_grad=True)
    out = conv2d(x, w, stride=2)
    out.sum().backward()
    assert out.dtype == lw.float32 and x.grad.dtype == lw.float32
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


def _x(*shape):
    return lw.randn(*shape)


@pytest.mark.parametrize("call,message", [
    (lambda: conv2d(_x(1, 4, 5, 5), _x(2, 3, 3, 3)), "expected input with 3 channels"),
    (lambda: conv2d(_x(1, 4, 5, 5), _x(3, 2, 3, 3), groups=2), "divisible by groups"),
    (lambda: conv2d(_x(1, 3, 2, 2), _x(2, 3, 3, 3)), "smaller than the (dilated) kernel"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(2, 3, 2, 2), dilation=5), "smaller than"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(2, 3, 3, 3), stride=2, padding="same"), "stride 1"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(2, 3, 3, 3), padding="full"), "'valid' or 'same'"),
    (lambda: conv2d(_x(3, 5, 5), _x(2, 3, 3)), "must be 4-D"),
    (lambda: max_pool2d(lw.randn(1, 1, 4, 4), 2, padding=2), "at most half"),
    (lambda: max_pool2d(lw.randn(1, 1, 2, 2), 3), "too small"),
    (lambda: avg_pool2d(lw.randn(4, 4), 2), "expected 4-D input"),
    (lambda: interpolate(lw.randn(1, 1, 4, 4), scale_factor=2, size=3), "exactly one"),
    (lambda: interpolate(_x(1, 1, 4, 4), scale_factor=2, align_corners=True), "align_corners"),
    (lambda: interpolate(lw.randn(1, 1, 4), scale_factor=2, mode="bilinear"), "4-D"),
])
def test_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_pool_geometry_remembered_for_plain_ints_still_checks_every_call():
    """Geometries of all-int pool arguments are remembered by input shape; a call with the
    same values as floats or bools, another shape, or a 3-D input is still checked."""
    x = lw.randn(1, 2, 6, 6)
    for _ in range(2):  # the second call reads the remembered geometry
        out = max_pool2d(x, 2)
        np.testing.assert_array_equal(out.numpy(), np_max_pool2d(x.numpy(), 2))
        np.testing.assert_allclose(avg_pool2d(x, 3, 1, 1).numpy(),
                                   np_avg_pool2d(x.numpy(), 3, 1, 1), atol=1e-6)
    for bad in (2.0, True):
        with pytest.raises(ValueError, match="kernel_size must be an int"):
            max_pool2d(x, bad)
    with pytest.raises(ValueError, match="expected 4-D input"):
        max_pool2d(lw.randn(2, 6, 6), 2)
    with pytest.raises(ValueError, match="too small"):
        max_pool2d(lw.randn(1, 2, 1, 1), 2)
    assert max_pool2d(lw.randn(1, 2, 8, 4), 2).shape == (1, 2, 4, 2)


def test_conv_dtype_mismatch_is_an_error():
    with pytest.raises(TypeError, match="dtype"):
        conv2d(lw.randn(1, 3, 5, 5), lw.randn(2, 3, 3, 3, dtype=lw.float64))


def test_conv_backward_twice_with_retain_graph_gives_the_same_gradients():
    """Backward drops the saved columns early only when the graph is not retained."""
    rng = np.random.default_rng(3)
    x = lw.tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    w = lw.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    loss = (conv2d(x, w, padding=1) ** 2).sum()
    loss.backward(retain_graph=True)
    first_x, first_w = x.grad.numpy().copy(), w.grad.numpy().copy()
    x.grad = w.grad = None
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), first_x)
    np.testing.assert_array_equal(w.grad.numpy(), first_w)


@pytest.mark.parametrize("trainable", ["weight", "bias", "weight and bias"])
def test_batched_conv_with_bias_matches_numpy(trainable):
    """From batch 8 the compiled batch-last path runs (its weight gradient in blocks, its bias
    gradient from the batch-last gradient): checked against float64 sums, with either
    parameter frozen."""
    rng = np.random.default_rng(8)
    x, w, b = (rng.standard_normal(s) for s in [(8, 3, 7, 6), (5, 3, 3, 3), (5,)])
    probe = rng.standard_normal((8, 5, 7, 6))
    weight = lw.tensor(w, requires_grad="weight" in trainable)
    bias = lw.tensor(b, requires_grad="bias" in trainable)
    out = conv2d(lw.tensor(x), weight, bias, padding=1)
    (out * lw.tensor(probe)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), np_conv2d(x, w, b, padding=1), atol=1e-12)
    # d/dw[o, c, i, j] = sum over n, y, x of probe[n, o, y, x] * padded x[n, c, y + i, x + j]
    patches = np.lib.stride_tricks.sliding_window_view(
        np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))  # (N, C, 7, 6, 3, 3)
    if "weight" in trainable:
        want = np.einsum("noyx,ncyxij->ocij", probe, patches)
        np.testing.assert_allclose(weight.grad.numpy(), want, atol=1e-10)
    else:
        assert weight.grad is None
    if "bias" in trainable:
        np.testing.assert_allclose(bias.grad.numpy(), probe.sum(axis=(0, 2, 3)), atol=1e-10)
    else:
        assert bias.grad is None


@pytest.mark.parametrize("kwargs", [
    dict(kernel=(3, 3), padding=1),  # 'same': rows of W, reads wrapped at both edges zeroed
    dict(kernel=(3, 3), padding=(1, 2), dilation=2),
    dict(kernel=(1, 1)),
    dict(padding=1),  # a 3x2 kernel: OW = W + 1, rows of OW
    dict(padding=0),  # OW < W: rows of W, the outputs past OW dropped
    dict(padding="same", dilation=(2, 1)),  # uneven 'same' padding, taller dilated windows
    dict(padding=(0, 2), dilation=(1, 3)),
    dict(padding=1, groups=3),  # the bias added after the product, per group
    dict(padding=1, bias=False),
    dict(padding=2, stride=2),  # stride 2: the batch path, as a control
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_one_inference_conv_matches_numpy(kwargs, dtype):
    """At batch 1 with no graph, a stride-1 conv reads each kernel position's columns as one
    run of the flat plane and zeroes the reads that wrapped into a neighbouring row: checked
    against float64 sums, and against the same conv with a graph (the batch path)."""
    kwargs = dict(kwargs)
    use_bias = kwargs.pop("bias", True)
    kernel = kwargs.pop("kernel", (3, 2))
    groups = kwargs.get("groups", 1)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 6, 7, 9)).astype(dtype)
    w = rng.standard_normal((9, 6 // groups) + kernel).astype(dtype)
    b = rng.standard_normal(9).astype(dtype) if use_bias else None
    want = np_conv2d(x.astype(np.float64), w, b, **kwargs)
    tensors = [lw.tensor(x), lw.tensor(w)] + ([lw.tensor(b)] if use_bias else [])
    with lw.no_grad():
        got = conv2d(*tensors, **kwargs).numpy()
    tensors[1].requires_grad = True
    with_graph = conv2d(*tensors, **kwargs).detach().numpy()
    assert got.dtype == dtype and got.shape == want.shape and got.flags.c_contiguous
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(got, with_graph, rtol=tol, atol=tol)
