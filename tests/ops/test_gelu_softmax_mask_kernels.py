"""The compiled paths of the exact GELU (float32), softmax / log_softmax over the last dim
(float32) and masked_fill, each against its NumPy form (forced by turning the kernels off in
the op's module) and against float64 references, through the public functions."""

import math

import numpy as np
import pytest
from scipy.special import erfc

import layerwise as lw
from layerwise.ops import activation, elementwise, kernels, reduce

pytestmark = pytest.mark.skipif(kernels.kernel("gelu_erf_f32") is None,
                                reason="numba is not installed")

EPS32 = float(np.finfo(np.float32).eps)


def _gelu_and_grad(x, g, approximate="none"):
    t = lw.tensor(x, requires_grad=True)
    out = lw.gelu(t, approximate=approximate)
    (out * lw.tensor(g)).sum().backward()
    return out.detach().numpy(), t.grad.numpy()


def _exact_gelu64(x):
    """x Phi(x) and its derivative Phi(x) + x phi(x), in float64 from SciPy's erfc."""
    x = x.astype(np.float64)
    cdf = 0.5 * erfc(-x / math.sqrt(2))
    return x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def test_exact_gelu_float32_kernel_is_float32_accurate_over_a_dense_grid():
    x = np.linspace(-14, 14, 400_001).astype(np.float32)  # past where Phi underflows
    g = np.ones_like(x)
    out, dx = _gelu_and_grad(x, g)
    want, dwant = _exact_gelu64(x)
    assert out.dtype == dx.dtype == np.float32
    scale = np.maximum(np.abs(want), 1)
    assert (np.abs(out - want) / scale).max() < 2 * EPS32  # measured 1.03 eps
    assert (np.abs(dx - dwant) / np.maximum(np.abs(dwant), 1)).max() < 3 * EPS32  # 1.8 eps


def test_exact_gelu_float32_keeps_relative_accuracy_in_the_lower_tail():
    """Phi comes from erfc, not 1 + erf: at x = -5 the float32 (1 + erf) / 2 is off by 5%
    of GELU's value; here the error stays near float32 rounding down to x = -9."""
    x = -np.geomspace(1e-3, 9, 20_001).astype(np.float32)
    out, dx = _gelu_and_grad(x, np.ones_like(x))
    want, dwant = _exact_gelu64(x)
    assert (np.abs(out - want) / np.abs(want)).max() < 1e-5  # measured 2.1e-6
    np.testing.assert_allclose(dx, dwant, rtol=1e-5, atol=2 * EPS32)


def test_exact_gelu_both_float32_paths_agree_with_special_values(monkeypatch):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 300)) * 4).astype(np.float32).T  # not contiguous
    x[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, -40.0]
    g = rng.standard_normal(x.shape).astype(np.float32)
    compiled = _gelu_and_grad(x, g)
    monkeypatch.setattr(activation, "kernel", lambda name: None)
    with np.errstate(invalid="ignore"):  # -inf * 0, as in PyTorch: NaN
        plain = _gelu_and_grad(x, g)
    for a, b in zip(compiled, plain):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=4 * EPS32, atol=4 * EPS32)
    assert compiled[0][0, 1] == np.inf and compiled[0][0, 5] == 0


def test_exact_gelu_float64_stays_on_scipy_and_passes_gradcheck(monkeypatch):
    used = []
    real = activation.kernel
    monkeypatch.setattr(activation, "kernel", lambda name: used.append(name) or real(name))
    rng = np.random.default_rng(1)
    x = lw.tensor(rng.standard_normal((4, 6)) * 3, requires_grad=True)
    assert lw.autograd.gradcheck(lambda a: lw.gelu(a), [x])
    assert not [name for name in used if "erf" in name]
    out = lw.gelu(x).detach().numpy()
    np.testing.assert_allclose(out, _exact_gelu64(x.detach().numpy())[0], rtol=1e-15, atol=1e-15)


def test_large_exact_gelu_in_two_halves_gives_the_bits_of_one_pass(monkeypatch):
    from layerwise.backend import threads

    rng = np.random.default_rng(2)
    x = (rng.standard_normal(activation.MIN_VALUES_IN_HALVES + 4001) * 3).astype(np.float32)
    g = rng.standard_normal(x.size).astype(np.float32)
    runs = []
    for available in (True, False):
        monkeypatch.setattr(threads, "available", lambda available=available: available)
        runs.append(_gelu_and_grad(x, g))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


# --- softmax and log_softmax ----------------------------------------------------------------


def _scores():
    """Attention-like scores (2, 3, 6, 17): causally masked rows, and the rows where the two
    forms must agree on NaN: nothing to attend, a NaN first or later, an inf."""
    rng = np.random.default_rng(3)
    s = (rng.standard_normal((2, 3, 6, 17)) * 6).astype(np.float32)
    s[0, 0] = np.where(np.tril(np.ones((6, 17), bool), 11), s[0, 0], -np.inf)
    s[0, 1, 0] = -np.inf
    s[0, 1, 1, 0] = np.nan
    s[0, 1, 2, 9] = np.nan
    s[0, 1, 3, 4] = np.inf
    return s


def _run(fn, x, g):
    t = lw.tensor(x, requires_grad=True)
    out = fn(t)
    out.backward(lw.tensor(g))
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_kernels_match_the_numpy_form_and_float64(monkeypatch, name):
    s = _scores()
    g = np.random.default_rng(4).standard_normal(s.shape).astype(np.float32)
    fn = (lambda a: lw.softmax(a, dim=-1)) if name == "softmax" else (lambda a: a.log_softmax(-1))
    compiled = _run(fn, s, g)
    monkeypatch.setattr(reduce, "kernel", lambda name: None)
    with np.errstate(invalid="ignore"):  # -inf - -inf and inf - inf: NaN rows in both forms
        plain = _run(fn, s, g)
    for a, b in zip(compiled, plain):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=4e-6, atol=1e-6)
    assert np.isnan(compiled[0][0, 1, :4]).all() and not np.isnan(compiled[0][0, 1, 4:]).any()

    x = s[1].astype(np.float64)  # finite rows against float64
    shifted = x - x.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    gx = g[1].astype(np.float64)
    if name == "softmax":
        p = np.exp(log_p)
        want, dwant = p, p * (gx - (gx * p).sum(-1, keepdims=True))
    else:
        want, dwant = log_p, gx - np.exp(log_p) * gx.sum(-1, keepdims=True)
    np.testing.assert_allclose(compiled[0][1], want, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(compiled[1][1], dwant, rtol=1e-5, atol=1e-6)


def test_softmax_kernel_takes_a_transposed_input_and_leaves_other_dims_to_numpy(monkeypatch):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((9, 4)) * 3).astype(np.float32)
    g = rng.standard_normal((4, 9)).astype(np.float32)
    used = []
    real = reduce.kernel
    monkeypatch.setattr(reduce, "kernel", lambda name: used.append(name) or real(name))
    out, dx = _run(lambda a: lw.softmax(a.T, dim=1), x, g.T.copy().T)  # rows not contiguous
    assert used == ["softmax_rows_into", "softmax_backward_rows_into"]
    x64 = x.T.astype(np.float64)
    p = np.exp(x64 - x64.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out, p, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(dx, (p * (g - (g * p).sum(1, keepdims=True))).T, rtol=1e-5,
                               atol=1e-6)
    used.clear()
    lw.softmax(lw.tensor(x), dim=0)  # not the last dim: the NumPy form
    lw.log_softmax(lw.tensor(x.astype(np.float64)), dim=-1)  # float64: the NumPy form
    assert used == []


# --- masked_fill ------------------------------------------------------------------------------


def _fill(x, mask, value, g):
    t = lw.tensor(x, requires_grad=True)
    out = t.masked_fill(lw.tensor(mask), value)
    (out * lw.tensor(g)).sum().backward()
    return out.detach().numpy(), t.grad.numpy()


MASKS = {  # x's shape, the mask's
    "causal over heads": ((2, 3, 5, 5), (1, 1, 5, 5)),
    "no leading ones": ((2, 3, 5, 5), (5, 5)),
    "full shape": ((4, 6), (4, 6)),
    "padding (NumPy's copy)": ((2, 3, 5, 5), (2, 1, 1, 5)),
    "scalar mask": ((3, 4), ()),
    "mask wider than x": ((5,), (3, 1, 5)),
}


@pytest.mark.parametrize("case", list(MASKS))
@pytest.mark.parametrize("value", [float("-inf"), 0.25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])  # float16: NumPy's copy
def test_masked_fill_paths_match_numpy_where(monkeypatch, case, value, dtype):
    x_shape, mask_shape = MASKS[case]
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(dtype)
    mask = rng.random(mask_shape) < 0.4
    out_shape = np.broadcast_shapes(x_shape, mask_shape)
    g = rng.standard_normal(out_shape).astype(dtype)
    g[np.broadcast_to(mask, out_shape)] = np.nan  # a masked place must get 0, not g * 0
    want = np.where(mask, dtype(value), x)
    dwant = np.where(mask, 0, g)
    while dwant.ndim > x.ndim:
        dwant = dwant.sum(0)
    dwant = dwant.sum(tuple(i for i, n in enumerate(x_shape) if n == 1), keepdims=True)
    compiled = _fill(x, mask, value, g)
    monkeypatch.setattr(elementwise, "kernel", lambda name: None)
    plain = _fill(x, mask, value, g)
    tol = 1e-3 if dtype == np.float16 else 1e-6
    for got in (compiled, plain):
        assert got[0].dtype == dtype and got[0].shape == out_shape
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_allclose(got[1], dwant, rtol=tol, atol=tol)


def test_masked_fill_on_a_transposed_input_and_with_a_tensor_value():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    mask = rng.random((4, 6)) < 0.5
    out = lw.tensor(x).T.masked_fill(lw.tensor(mask), -1.0).numpy()
    np.testing.assert_array_equal(out, np.where(mask, -1, x.T))

    value = lw.tensor(np.float32(2.0), requires_grad=True)  # a value that wants a gradient
    t = lw.tensor(x.T.copy(), requires_grad=True)
    t.masked_fill(lw.tensor(mask), value).sum().backward()
    assert value.grad.item() == mask.sum()
    np.testing.assert_array_equal(t.grad.numpy(), ~mask)

    ints = lw.tensor(np.arange(6).reshape(2, 3))  # as before: a float value makes a float result
    filled = ints.masked_fill(lw.tensor(np.eye(2, 3, dtype=bool)), 0.5).numpy()
    np.testing.assert_array_equal(filled, np.where(np.eye(2, 3, dtype=bool), 0.5,
                                                    np.arange(6).reshape(2, 3)))


@pytest.mark.parametrize("mask, kind, quoted", [
    (np.ones((2, 3), np.float32), TypeError, "float32"),
    (np.ones((4,), bool), ValueError, "(4,)"),
    (np.ones((3, 2), bool), ValueError, "(3, 2)"),
])
def test_masked_fill_bad_masks_give_one_line_errors(mask, kind, quoted):
    x = lw.zeros(2, 3)
    with pytest.raises(kind) as err:
        x.masked_fill(lw.tensor(mask), 1.0)
    message = str(err.value)
    assert "\n" not in message and quoted in message and "masked_fill" in message
