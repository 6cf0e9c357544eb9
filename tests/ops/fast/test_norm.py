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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("affine", ["none", "weight", "weight_bias"])
def test_layer_norm_kernels_match_numpy(monkeypatch, dtype, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 7, 19)) * 3 + 1).astype(dtype)
    params = [rng.standard_normal(19).astype(dtype) for _ in range(("none", "weight",
                                                                      "weight_bias").index(affine))]
    probe = rng.standard_normal(x.shape).astype(dtype)
    fn = lambda a, *p: lw.nn.functional.layer_norm(a, (19,), *p)  # noqa: E731
    compiled, plain = _both_paths(monkeypatch, norm, fn, [x, *params], probe)
    for a, b in zip(compiled, plain):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def test_layer_norm_kernel_sums_in_float32_stay_accurate():
    """The kernel sums float32 rows in float32: rows far from zero (mean 1000, std 0.1) and a
    constant row (variance 0, so 1/std = 1/sqrt(eps)) against float64."""
    rng = np.random.default_rng(9)
    x = (1000 + 0.1 * rng.standard_normal((4, 256))).astype(np.float32)
    x[2] = 7.5
    out = lw.nn.functional.layer_norm(lw.tensor(x), (256,), eps=1e-5).numpy()
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, atol=2e-3)  # float32 inputs near 1000: ulp 6e-5
    np.testing.assert_array_equal(out[2], 0)
