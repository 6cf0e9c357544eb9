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
@pytest.mark.parametrize("kwargs", POOL_CASES)
def test_max_pool_kernels_match_numpy_with_ties_and_nan(monkeypatch, dtype, kwargs):
    from layerwise.ops import pool

    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (8, 3, 9, 10)).astype(dtype)  # 8: the kernel's smallest batch
    x[0, 1, 2, 3] = x[1, 2, 5, 5] = np.nan
    probe = None
    results = []
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(pool, "compiled", lambda name: None)
        t = lw.tensor(x, requires_grad=True)
        out = lw.nn.functional.max_pool2d(t, **kwargs)
        if probe is None:
            probe = rng.standard_normal(out.shape).astype(dtype)
        (out * lw.tensor(probe)).sum().backward()
        results.append((out.detach().numpy(), t.grad.numpy()))
    (out_a, grad_a), (out_b, grad_b) = results
    np.testing.assert_array_equal(out_a, out_b)  # the same maxima, NaN included
    # overlapping windows add their gradients in a different order: rounding only
    np.testing.assert_allclose(grad_a, grad_b, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", POOL_CASES)
def test_batch_one_inference_pool_kernel_matches_numpy_with_nan(monkeypatch, dtype, kwargs):
    from layerwise.ops import pool

    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, (1, 3, 9, 10)).astype(dtype)
    x[0, 1, 2, 3] = x[0, 2, 5, 5] = x[0, 0, 3, 4] = np.nan  # the last inside stride-3 windows
    x[0, 0, 4, :] = -np.inf
    outs = []
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(pool, "compiled", lambda name: None)
        with lw.no_grad():
            outs.append(lw.nn.functional.max_pool2d(lw.tensor(x), **kwargs).numpy())
    assert outs[0].shape == outs[1].shape
    assert np.isnan(outs[0]).any()  # a NaN reached the output, so its rule was exercised
    np.testing.assert_array_equal(outs[0], outs[1])  # NaN in the same places


def test_batch_one_pool_takes_the_2x2_kernel_only_for_2x2_windows_at_stride_2(monkeypatch):
    from layerwise.ops import pool

    used = []
    real = pool.compiled
    monkeypatch.setattr(pool, "compiled", lambda name: used.append(name) or real(name))
    x = lw.tensor(np.random.default_rng(8).standard_normal((1, 2, 6, 7)))
    with lw.no_grad():
        for kwargs in (dict(kernel_size=2), dict(kernel_size=2, stride=1),
                       dict(kernel_size=2, dilation=2), dict(kernel_size=3, stride=2)):
            used.clear()
            lw.nn.functional.max_pool2d(x, **kwargs)
            assert ("max_pool_plane_2x2" in used) == (kwargs == dict(kernel_size=2)), kwargs
