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


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_kernels_match_numpy_and_float64(monkeypatch, reduction):
    from layerwise.ops import loss

    rng = np.random.default_rng(6)
    x = (rng.standard_normal((300, 17)) * 6).astype(np.float32)
    t = rng.integers(0, 17, 300)
    t[::7] = -100  # ignored rows
    weights = np.linspace(0.5, 1.5, 300).astype(np.float32)

    def run():
        xt = lw.tensor(x, requires_grad=True)
        out = lw.nn.functional.cross_entropy(xt, lw.tensor(t), reduction=reduction)
        (out * lw.tensor(weights) if reduction == "none" else out).sum().backward()
        return out.detach().numpy(), xt.grad.numpy()

    compiled = run()
    monkeypatch.setattr(loss, "kernel", lambda name: None)
    plain = run()
    for a, b in zip(compiled, plain):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)
    # and against float64: -log softmax at the target, gradient softmax - one_hot
    x64 = x.astype(np.float64)
    lse = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1)) + x64.max(1)
    keep = t != -100
    rows = np.where(keep, lse - x64[np.arange(300), np.where(keep, t, 0)], 0)
    grad = np.exp(x64 - lse[:, None])
    grad[np.arange(300)[keep], t[keep]] -= 1
    grad[~keep] = 0
    if reduction == "mean":
        want, grad = rows.sum() / keep.sum(), grad / keep.sum()
    elif reduction == "sum":
        want = rows.sum()
    else:
        want, grad = rows, grad * weights[:, None]
    np.testing.assert_allclose(compiled[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled[1], grad, rtol=1e-5, atol=1e-7)
