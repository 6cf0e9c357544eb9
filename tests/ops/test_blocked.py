"""Blockwise kernels over arrays several blocks long, against NumPy float64 formulas.

The op harness checks every op on small shapes (one block); these cover the block loop:
several full blocks, a ragged last one, and inputs that are not contiguous.
"""

import math

import numpy as np
import pytest
from scipy.special import erf

import layerwise as lw
from layerwise.ops.blocked import BLOCK


def _gelu64(x, approximate):
    if approximate == "tanh":
        t = np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))
        dt = (1 - t * t) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)
        return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * dt
    cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
    return x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_over_several_blocks_and_a_transposed_input(approximate):
    rng = np.random.default_rng(0)
    n_rows = 2 * BLOCK // 1000 + 7  # two full blocks and a ragged one, of rows 1000 long
    base = (rng.standard_normal((1000, n_rows)) * 3).astype(np.float32)
    g = rng.standard_normal((n_rows, 1000)).astype(np.float32)
    x = lw.tensor(base).T.detach().requires_grad_()  # (n_rows, 1000), not contiguous
    y = lw.gelu(x, approximate=approximate)
    y.backward(lw.tensor(g))
    ref_y, ref_dy = _gelu64(base.T.astype(np.float64), approximate)
    assert y.dtype == lw.float32 and x.grad.dtype == lw.float32
    np.testing.assert_allclose(y.detach().numpy(), ref_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), g * ref_dy, rtol=1e-5, atol=1e-5)
