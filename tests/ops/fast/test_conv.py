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
@pytest.mark.parametrize("kwargs", [
    dict(padding=1),
    dict(stride=2, dilation=2, padding=2, groups=2),
    dict(padding=(2, 0), stride=(3, 1)),  # the last row's windows run past the bottom edge
    dict(padding="same", dilation=(1, 2)),
])
@pytest.mark.parametrize("memory", ["NCHW", "batch-last"])
def test_conv_im2col_col2im_kernels_match_numpy(monkeypatch, dtype, kwargs, memory):
    """The compiled columns against NumPy's strided view. A batch-last input (as a conv's or
    pool's output is laid out) has its padding read as zeros by the kernels, never stored."""
    from layerwise.ops import conv

    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 9, 8)).astype(dtype)  # 8: the kernels' smallest batch
    if memory == "batch-last":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    fn = lambda a, w_, b_: conv.conv2d(a, w_, b_, **kwargs)  # noqa: E731
    probe = rng.standard_normal(tuple(fn(*map(lw.tensor, (x, w, b))).shape)).astype(dtype)
    compiled, plain = _both_paths(monkeypatch, conv, fn, [x, w, b], probe)
    for a, b_ in zip(compiled, plain):
        np.testing.assert_allclose(a, b_, rtol=TOL[dtype], atol=TOL[dtype])
