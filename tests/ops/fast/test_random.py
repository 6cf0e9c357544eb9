"""Dropout's compiled pass (layerwise/ops/fast/random.py) draws the reference's bits: the same
mask from the same seed, on every size, dtype and rate; and the bits behave as random ones."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.autograd import dispatch
from layerwise.ops import random as rnd
from layerwise.ops.fast.random import DropoutOnePass
from tests.ops.fast.common import needs


def _dropout(x, p, seed, path):
    lw.manual_seed(seed)
    t = lw.tensor(x, requires_grad=True)
    with dispatch.forced(path) as uses:
        out = F.dropout(t, p)
        out.backward(lw.tensor(np.ones_like(x)))
    return out.detach().numpy(), t.grad.numpy(), uses.count


@needs(DropoutOnePass)
@pytest.mark.parametrize("shape", [(), (1,), (3,), (5, 7), (2, 3, 4, 5), (1025,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.99999])
def test_compiled_dropout_gives_the_reference_bits(shape, dtype, p):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype) + 3  # no zero inputs
    out, grad, used = _dropout(x, p, 7, DropoutOnePass)
    ref_out, ref_grad, _ = _dropout(x, p, 7, dispatch.REFERENCE)
    assert used == 1
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(grad, ref_grad)
    assert out.dtype == dtype


def test_random_bits16_are_splitmix64_split_lowest_bits_first():
    """Against splitmix64 computed with Python integers (Steele et al.'s constants)."""
    seed, mask = 2024, (1 << 64) - 1
    expected = []
    for k in range(1, 4):
        z = (seed + k * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        expected += [(z >> shift) & 0xFFFF for shift in (0, 16, 32, 48)]
    assert rnd.random_bits16(seed, 10).tolist() == expected[:10]


def test_dropout_keeps_each_element_with_probability_one_minus_p_and_scales_it():
    x = np.ones(400_000, np.float32)
    for p in (0.1, 0.5, 0.9):
        lw.manual_seed(3)
        out = F.dropout(lw.tensor(x), p).numpy()  # whichever path dispatch chooses
        kept = out != 0
        # within five standard deviations of a binomial count
        assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.size)
        np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)


def test_dropout_masks_differ_between_calls_and_repeat_with_the_seed():
    x = np.ones(1000, np.float32)
    lw.manual_seed(5)
    first, second = (F.dropout(lw.tensor(x), 0.5).numpy() for _ in range(2))
    lw.manual_seed(5)
    again = F.dropout(lw.tensor(x), 0.5).numpy()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)
