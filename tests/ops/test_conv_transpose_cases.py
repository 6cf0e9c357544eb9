"""conv_transpose2d through the op harness: forward against a NumPy float64 reference that
scatters each input pixel into the output (loops over input positions and kernel taps, straight
from the definition), gradients against central differences on tiny shapes; then the geometry
rules and errors."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.ops.conv import conv2d, conv_transpose2d
from tests.harness import OpCase, harness_tests


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def np_conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                        dilation=1):
    """Input pixel (i, j) of channel c adds x[:, c, i, j] * w[c, :, a, b] at output position
    (i * sh + a * dh - ph, j * sw + b * dw - pw), in the output channels of c's group."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    (oph, opw), (dh, dw) = _pair(output_padding), _pair(dilation)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // groups
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    out = np.zeros((n, og * groups, oh, ow))
    for ci in range(c):
        group = slice((ci // cg) * og, (ci // cg + 1) * og)
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for bb in range(kw):
                        y, z = i * sh + a * dh - ph, j * sw + bb * dw - pw
                        if 0 <= y < oh and 0 <= z < ow:  # taps landing in the padding drop
                            out[:, group, y, z] += x[:, ci, i, j][:, None] * w[ci, :, a, bb]
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def case(name, shapes, bias=True, **kw):
    """x (N, C, H, W), weight (C, O/g, KH, KW)[, bias (O,)] as harness inputs."""
    if bias:
        groups = kw.get("groups", 1)
        shapes = [s + ((s[1][1] * groups,),) for s in shapes]
        return OpCase(name, lambda x, w, b: conv_transpose2d(x, w, b, **kw),
                      lambda x, w, b: np_conv_transpose2d(x, w, b, **kw), shapes)
    return OpCase(name, lambda x, w: conv_transpose2d(x, w, **kw),
                  lambda x, w: np_conv_transpose2d(x, w, **kw), shapes)


CASES = [
    case("conv_transpose2d", [((2, 3, 4, 3), (3, 2, 3, 2)), ((1, 1, 3, 3), (1, 3, 1, 1))]),
    case("conv_transpose2d_unet", [((2, 4, 3, 3), (4, 2, 2, 2))], stride=2),  # exactly x2
    case("conv_transpose2d_stride_pad_outpad", [((2, 2, 3, 4), (2, 3, 3, 3))], stride=2,
         padding=1, output_padding=1),
    case("conv_transpose2d_nonsquare", [((1, 2, 3, 3), (2, 2, 2, 3))], bias=False,
         stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    # output_padding 1 at stride 1 is allowed because it is below the dilation
    case("conv_transpose2d_dilation", [((1, 2, 4, 3), (2, 2, 2, 3))], dilation=2,
         output_padding=1),
    case("conv_transpose2d_groups", [((2, 4, 3, 3), (4, 3, 2, 2))], groups=2, stride=2,
         padding=(1, 0)),
    case("conv_transpose2d_depthwise", [((1, 3, 3, 4), (3, 1, 3, 3))], bias=False, groups=3,
         padding=1, dilation=(1, 2)),
    case("conv_transpose2d_pad_crops_past_kernel", [((1, 2, 4, 4), (2, 2, 3, 3))], padding=2),
    OpCase("conv_transpose2d_unbatched",
           lambda x, w: conv_transpose2d(x, w, stride=2, output_padding=1),
           lambda x, w: np_conv_transpose2d(x[None], w, stride=2, output_padding=1)[0],
           [((2, 3, 2), (2, 2, 2, 2))]),
]

(test_forward_matches_numpy, test_gradient_matches_finite_differences,
 test_fast_path_matches_reference) = harness_tests(CASES)


# --- behaviour beyond the harness -----------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1),
                                dict(stride=(1, 3), dilation=(2, 1), groups=2)])
def test_it_is_the_adjoint_of_conv2d(kw):
    """<conv_transpose2d(x, W), y> = <x, conv2d(y, W)> for every x and y, with the same
    weight and geometry (output_padding only adds rows the conv never reads)."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 4, 3, 4)), rng.standard_normal((4, 3, 3, 2))
    out = conv_transpose2d(lw.tensor(x), lw.tensor(w), **kw).numpy()
    y = rng.standard_normal(out.shape)
    conv_kw = {k: v for k, v in kw.items() if k != "output_padding"}
    back = conv2d(lw.tensor(y), lw.tensor(w), **conv_kw).numpy()
    assert back.shape == x.shape
    np.testing.assert_allclose((out * y).sum(), (x * back).sum(), rtol=1e-10)


def test_output_keeps_float32_and_grads_have_input_layout():
    x = lw.randn(2, 3, 5, 5, requires_grad=True)
    w = lw.randn(3, 4, 2, 2, requires_grad=True)
    b = lw.randn(4, requires_grad=True)
    out = conv_transpose2d(x, w, b, stride=2)
    (out * out).sum().backward()
    assert out.shape == (2, 4, 10, 10) and out.dtype == lw.float32
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == (4,)
    assert x.grad.dtype == w.grad.dtype == lw.float32


def test_only_the_weight_needs_a_gradient():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 3, 2, 2))
    weight = lw.tensor(w, requires_grad=True)
    probe = rng.standard_normal((2, 3, 6, 6))
    (conv_transpose2d(lw.tensor(x), weight, stride=2) * lw.tensor(probe)).sum().backward()
    # stride == kernel: output pixel (2i + a, 2j + b) = sum_c x[c, i, j] w[c, :, a, b]
    blocks = probe.reshape(2, 3, 3, 2, 3, 2)  # (N, O, i, a, j, b)
    np.testing.assert_allclose(weight.grad.numpy(), np.einsum("ncij,noiajb->coab", x, blocks),
                               atol=1e-12)


def _x(*shape):
    return lw.randn(*shape)


@pytest.mark.parametrize("call,message", [
    (lambda: conv_transpose2d(_x(1, 4, 5, 5), _x(3, 2, 3, 3)), "expected input with 3 channels"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), groups=2), "divisible by groups"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), stride=2, output_padding=2),
     "output_padding must be smaller than either stride or dilation"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), output_padding=1),
     r"output_padding=\(1, 1\), stride=\(1, 1\), dilation=\(1, 1\)"),
    (lambda: conv_transpose2d(_x(5, 5), _x(3, 2, 3, 3)), "3-D .* or 4-D .* got shape"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3)), "weight must be 4-D"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), _x(3)),
     r"bias must have shape \(2,\)"),
    (lambda: conv_transpose2d(_x(1, 3, 1, 1), _x(3, 2, 1, 1), padding=1), "reduce the padding"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), padding="same"), "pair of ints"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), stride=0), "stride must be positive"),
])
def test_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_dtype_mismatch_is_an_error():
    with pytest.raises(TypeError, match="dtype"):
        conv_transpose2d(lw.randn(1, 3, 5, 5), lw.randn(3, 2, 3, 3, dtype=lw.float64))
