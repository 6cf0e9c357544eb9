"""The numba kernels against the NumPy forms they replace (kernels.py), in float64 and float32.

The op harness already checks these ops against NumPy float64 and finite differences with
whichever path is active; here both paths run on the same inputs, so a kernel that drifts
from its NumPy form is caught even where the harness's tolerances would let it through.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import layerwise as lw
from layerwise.ops import activation, norm
from layerwise.ops.fast import kernels

pytestmark = pytest.mark.skipif(kernels.kernel("layer_norm_forward") is None,
                                reason="numba is not installed")

TOL = {np.float64: 1e-12, np.float32: 2e-5}


def _run(fn, arrays, probe):
    tensors = [lw.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * lw.tensor(probe)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


def _both_paths(monkeypatch, module, fn, arrays, probe):
    compiled = _run(fn, arrays, probe)
    monkeypatch.setattr(module, "kernel", lambda name: None)
    plain = _run(fn, arrays, probe)
    monkeypatch.undo()
    return compiled, plain

from scipy.special import erfc
from layerwise.ops import elementwise, reduce
EPS32 = float(np.finfo(np.float32).eps)


def test_softmax_kernels_match_float64_with_masked_and_nan_rows(monkeypatch):
    from layerwise.ops import attention

    rng = np.random.default_rng(4)
    s = (rng.standard_normal((6, 50)) * 8).astype(np.float32)
    s[1, 30:] = -np.inf  # a causally masked row
    s[2] = -np.inf  # nothing to attend: zeros
    s[3, 7] = np.nan  # NaN spreads over its row, as in NumPy
    s[4, 3] = np.inf
    compiled = attention._softmax_rows_(s.copy())
    monkeypatch.setattr(attention, "kernel", lambda name: None)
    with np.errstate(invalid="ignore"):  # the inf row: inf * 0 in NumPy's form
        plain = attention._softmax_rows_(s.copy())
    np.testing.assert_array_equal(np.isnan(compiled), np.isnan(plain))
    ok = ~np.isnan(plain)
    np.testing.assert_allclose(compiled[ok], plain[ok], rtol=2e-6, atol=1e-7)
    x = s[[0, 1, 5]].astype(np.float64)
    exact = np.exp(x - x.max(1, keepdims=True))
    exact /= exact.sum(1, keepdims=True)
    np.testing.assert_allclose(compiled[[0, 1, 5]], exact, rtol=2e-6, atol=1e-9)
    assert not compiled[2].any()

    dp = rng.standard_normal(s.shape).astype(np.float32)
    p = plain.copy()
    p[3:5] = 0.1
    monkeypatch.undo()
    got = attention._softmax_backward_(dp.copy(), p)
    p64 = p.astype(np.float64)
    exact = p64 * (dp - (dp * p64).sum(1, keepdims=True))
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)



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
