"""The embedding's compiled backward (layerwise/ops/fast/embedding.py) against the reference
op and a float64 sum by hand, with repeated and unread rows, padding_idx, index dtypes and no
indices."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.autograd import dispatch
from layerwise.ops.embedding import EmbeddingFunction
from layerwise.ops.fast import embedding as fast
from tests.ops.fast.common import assert_close, needs, path_and_reference

pytestmark = needs(fast.EmbeddingScatterLoop)


def _table_gradient(idx, probe, num_rows, padding_idx=None):
    """d weight by hand in float64: each position's probe row added to its index's row."""
    grad = np.zeros((num_rows, probe.shape[-1]))
    for position in np.ndindex(idx.shape):
        grad[idx[position]] += probe[position]
    if padding_idx is not None:
        grad[padding_idx] = 0
    return grad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32, np.uint8])
def test_embedding_backward_loop_matches_the_reference_and_float64(dtype, padding_idx,
                                                                   index_dtype):
    rng = np.random.default_rng(4)
    idx = rng.integers(0, 9, (6, 11))  # repeats, and rows never drawn
    idx[0, :3] = [2, 8, 2]  # the padding rows are read
    idx = idx.astype(index_dtype)
    weight = rng.standard_normal((9, 5)).astype(dtype)
    probe = rng.standard_normal((6, 11, 5)).astype(dtype)
    fn = lambda w: F.embedding(lw.tensor(idx), w, padding_idx=padding_idx)
    got, reference = path_and_reference(fast.EmbeddingScatterLoop, fn, [weight], probe)
    assert_close(got, reference, dtype)
    np.testing.assert_array_equal(got[0], weight[idx])
    pad = None if padding_idx is None else padding_idx % 9
    want = _table_gradient(idx, probe.astype(np.float64), 9, pad)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got[1], want, rtol=tol, atol=tol)
    if pad is not None:
        assert not got[1][pad].any()


def test_no_indices_give_a_zero_table_gradient():
    weight = lw.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    with dispatch.forced(fast.EmbeddingScatterLoop) as uses:
        out = F.embedding(lw.tensor(np.zeros((2, 0), np.int64)), weight)
        out.sum().backward()
    assert uses.count and out.shape == (2, 0, 3)
    np.testing.assert_array_equal(weight.grad.numpy(), np.zeros((4, 3)))


def test_float16_tables_take_the_reference():
    idx = lw.tensor([[0, 1, 1]])
    with dispatch.traced() as calls:
        F.embedding(idx, lw.tensor(np.ones((3, 2), np.float16), requires_grad=True))
    (call,) = [c for c in calls if c[0] is EmbeddingFunction]
    assert dispatch.choose(*call) is EmbeddingFunction
