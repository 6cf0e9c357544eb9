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
def test_embedding_backward_kernel_matches_numpy(monkeypatch, dtype):
    from layerwise.ops import embedding

    rng = np.random.default_rng(4)
    idx = lw.tensor(rng.integers(0, 9, (6, 11)))  # repeats, and rows never drawn
    weight = rng.standard_normal((9, 5)).astype(dtype)
    probe = rng.standard_normal((6, 11, 5)).astype(dtype)
    fn = lambda w: lw.nn.functional.embedding(idx, w)  # noqa: E731
    compiled, plain = _both_paths(monkeypatch, embedding, fn, [weight], probe)
    for a, b in zip(compiled, plain):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])
