"""The activations' fast paths (layerwise/ops/fast/activation.py) against their reference ops
and float64, on inputs that reach them, with the special values."""

import math

import numpy as np
import pytest
from scipy.special import erfc

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.backend import threads
from layerwise.ops.fast import activation as fast
from tests.ops.fast.common import assert_close, needs, path_and_reference

EPS32 = float(np.finfo(np.float32).eps)


@needs(fast.ReluOnePass)
@pytest.mark.parametrize("layout", ["C", "transposed", "strided", "reversed"])
def test_relu_one_pass_gives_the_reference_bits_in_any_layout(layout):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((16, 20, 30))
    base[0, 0, :3] = [np.nan, 0.0, -0.0]
    x = {"C": base, "transposed": base.transpose(2, 0, 1), "strided": base[:, ::2, 1::3],
         "reversed": base[::-1, :, ::-1]}[layout]
    probe = rng.standard_normal(x.shape)
    got, reference = path_and_reference(fast.ReluOnePass, lw.relu, [x], probe)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


@needs(fast.ReluOnePass)
def test_relu_one_pass_is_chosen_from_its_size_with_or_without_a_graph():
    big, small = np.ones(fast.MIN_RELU_VALUES), np.ones(fast.MIN_RELU_VALUES - 1)
    assert _chosen(lw.relu, big, grad=True) is fast.ReluOnePass
    assert _chosen(lw.relu, small, grad=True) is lw.ops.activation.ReLU
    assert _chosen(lw.relu, big, grad=False) is fast.ReluOnePass
    assert _chosen(lw.relu, small, grad=False) is lw.ops.activation.ReLU


def _chosen(fn, x, grad):
    out = fn(lw.tensor(x, requires_grad=grad))
    return type(out._ctx) if grad else _traced_choice(fn, x)


def _traced_choice(fn, x):
    with dispatch.traced() as calls:
        fn(lw.tensor(x))
    (reference, arrays, params, graph), = calls
    return dispatch.choose(reference, arrays, params, graph)


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


@needs(fast.GeluFloat32)
def test_exact_gelu_float32_is_float32_accurate_over_a_dense_grid():
    x = np.linspace(-14, 14, 400_001).astype(np.float32)  # past where Phi underflows
    out, dx = _gelu_and_grad(x, np.ones_like(x))
    want, dwant = _exact_gelu64(x)
    assert out.dtype == dx.dtype == np.float32
    assert (np.abs(out - want) / np.maximum(np.abs(want), 1)).max() < 2 * EPS32  # 1.03 eps
    assert (np.abs(dx - dwant) / np.maximum(np.abs(dwant), 1)).max() < 3 * EPS32  # 1.8 eps


@needs(fast.GeluFloat32)
def test_exact_gelu_float32_keeps_relative_accuracy_in_the_lower_tail():
    """Phi comes from erfc, not 1 + erf: at x = -5 the float32 (1 + erf) / 2 is off by 5%
    of GELU's value; here the error stays near float32 rounding down to x = -9."""
    x = -np.geomspace(1e-3, 9, 20_001).astype(np.float32)
    out, dx = _gelu_and_grad(x, np.ones_like(x))
    want, dwant = _exact_gelu64(x)
    assert (np.abs(out - want) / np.abs(want)).max() < 1e-5  # measured 2.1e-6
    np.testing.assert_allclose(dx, dwant, rtol=1e-5, atol=2 * EPS32)


@needs(fast.GeluFloat32)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_matches_the_reference_with_special_values(approximate):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 300)) * 4).astype(np.float32).T  # not contiguous
    x[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, -40.0]
    g = rng.standard_normal(x.shape).astype(np.float32)
    with np.errstate(invalid="ignore"):  # -inf * 0, as in PyTorch: NaN
        got, reference = path_and_reference(fast.GeluFloat32,
                                            lambda t: lw.gelu(t, approximate=approximate), [x], g)
    # the reference's tanh form loses digits to 1 + t where t is near -1; the kernel's does not
    tolerance = 4 * EPS32 if approximate == "none" else 1e-5
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    assert got[0][0, 1] == np.inf and got[0][0, 5] == 0


@needs(fast.GeluFloat32)
def test_gelu_tanh_float32_matches_the_float64_formula_far_into_the_tails():
    x = np.concatenate([np.linspace(-30, 30, 6001), [np.nan, np.inf, -np.inf]]).astype(np.float32)
    g = np.linspace(-2, 2, x.size).astype(np.float32)
    got, dgot = _gelu_and_grad(x, g, approximate="tanh")
    x64 = x[:-3].astype(np.float64)
    c = np.sqrt(2 / np.pi)
    th = np.tanh(c * (x64 + 0.044715 * x64 ** 3))
    dinner = c * (1 + 3 * 0.044715 * x64 ** 2)
    np.testing.assert_allclose(got[:-3], 0.5 * x64 * (1 + th), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dgot[:-3], g[:-3] * (0.5 * (1 + th) + 0.5 * x64 * (1 - th ** 2) * dinner),
                               rtol=1e-5, atol=1e-6)
    # as PyTorch: -inf * (1 + tanh) = -inf * 0 is NaN
    assert np.isnan(got[-3]) and got[-2] == np.inf and np.isnan(got[-1])


def test_gelu_float64_runs_the_reference_and_passes_gradcheck():
    rng = np.random.default_rng(1)
    x = lw.tensor(rng.standard_normal((4, 6)) * 3, requires_grad=True)
    assert type(lw.gelu(x)._ctx) is lw.ops.activation.GELU
    assert lw.autograd.gradcheck(lambda a: lw.gelu(a), [x])
    np.testing.assert_allclose(lw.gelu(x).detach().numpy(), _exact_gelu64(x.detach().numpy())[0],
                               rtol=1e-15, atol=1e-15)


@needs(fast.GeluFloat32)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_large_gelu_in_two_halves_gives_the_bits_of_one_pass(monkeypatch, approximate):
    """From MIN_GELU_VALUES_IN_HALVES values the float32 kernels run over two halves of the
    flat arrays: an odd size, so that the halves differ, against one pass over the whole."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((fast.MIN_GELU_VALUES_IN_HALVES + 4001, 1)) * 3).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    runs, pairs = [], []
    real_pair = threads.run_pair
    monkeypatch.setattr(threads, "run_pair", lambda *f: pairs.append(1) or real_pair(*f))
    for available in (True, False):
        monkeypatch.setattr(threads, "available", lambda available=available: available)
        runs.append(_gelu_and_grad(x, g, approximate))
    assert len(pairs) == 2  # forward and backward of the first run, split
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@needs(fast.GeluFloat32)
def test_gelu_float32_matches_the_reference_within_float32_tolerance():
    x = np.random.default_rng(3).standard_normal((64, 96)).astype(np.float32)
    got, reference = path_and_reference(fast.GeluFloat32, lw.gelu, [x], np.ones_like(x))
    assert_close(got, reference, np.float32)
