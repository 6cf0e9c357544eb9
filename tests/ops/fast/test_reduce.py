"""The fast paths of softmax and log_softmax (layerwise/ops/fast/reduce.py) against their
reference ops and float64, on rows with the special values, and where dispatch chooses them.
(The in-place softmax kernels of the attention are tested in test_attention.py.)"""

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.ops.fast import reduce as fast
from layerwise.ops.reduce import LogSoftmax, Softmax
from tests.ops.fast.common import needs, path_and_reference


def _chosen(fn, x):
    """The class dispatch picks for the softmax call ``fn(x)`` makes, with no graph."""
    with dispatch.traced() as calls:
        fn(lw.tensor(x))
    (call,) = [c for c in calls if c[0] in (Softmax, LogSoftmax)]
    return dispatch.choose(*call)


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


PATHS = {"softmax": (fast.SoftmaxRows, lambda a: lw.softmax(a, dim=-1)),
         "log_softmax": (fast.LogSoftmaxRows, lambda a: a.log_softmax(-1))}


@pytest.mark.parametrize("name", list(PATHS))
def test_row_kernels_match_the_reference_and_float64(name):
    path, fn = PATHS[name]
    if not path.available():
        pytest.skip("numba is not installed")
    s = _scores()
    g = np.random.default_rng(4).standard_normal(s.shape).astype(np.float32)
    with np.errstate(invalid="ignore"):  # -inf - -inf and inf - inf: NaN rows in both forms
        got, reference = path_and_reference(path, fn, [s], g)
    for a, b in zip(got, reference):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=4e-6, atol=1e-6)
    assert np.isnan(got[0][0, 1, :4]).all() and not np.isnan(got[0][0, 1, 4:]).any()

    x = s[1].astype(np.float64)  # finite rows against float64
    shifted = x - x.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    gx = g[1].astype(np.float64)
    if name == "softmax":
        p = np.exp(log_p)
        want, dwant = p, p * (gx - (gx * p).sum(-1, keepdims=True))
    else:
        want, dwant = log_p, gx - np.exp(log_p) * gx.sum(-1, keepdims=True)
    np.testing.assert_allclose(got[0][1], want, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got[1][1], dwant, rtol=1e-5, atol=1e-6)


@needs(fast.SoftmaxRows)
def test_softmax_rows_take_a_transposed_input_and_leave_other_dims_to_the_reference():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((9, 4)) * 3).astype(np.float32)
    g = rng.standard_normal((4, 9)).astype(np.float32)
    t = lw.tensor(x, requires_grad=True)
    out = lw.softmax(t.T, dim=1)  # rows not contiguous
    assert type(out._ctx) is fast.SoftmaxRows
    out.backward(lw.tensor(g.T.copy().T))  # nor the gradient's
    x64 = x.T.astype(np.float64)
    p = np.exp(x64 - x64.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out.detach().numpy(), p, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(t.grad.numpy(), (p * (g - (g * p).sum(1, keepdims=True))).T,
                               rtol=1e-5, atol=1e-6)
    assert _chosen(lambda a: lw.softmax(a, dim=0), x) is Softmax  # not the last dim
    assert _chosen(lambda a: lw.log_softmax(a, dim=-1), x.astype(np.float64)) is LogSoftmax
    assert _chosen(lambda a: lw.log_softmax(a, dim=-1), x) is fast.LogSoftmaxRows
    assert _chosen(lambda a: lw.softmax(a, dim=-1), np.ones((0, 4), np.float32)) is Softmax


@pytest.mark.parametrize("keepdim", [False, True])
def test_max_rows_give_the_reference_values_and_gradients_with_nan_inf_and_ties(keepdim):
    from layerwise.ops.fast.reduce import MaxRows

    if not MaxRows.available():
        pytest.skip("needs numba")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 19)).astype(np.float32)
    x[0, 0] = np.nan  # first
    x[1, 9] = np.nan  # inside the eight lanes
    x[2, 18] = np.nan  # in the tail past the lanes
    x[3, :] = -np.inf
    x[4, [2, 11]] = 50.0  # a tie: the gradient is shared
    x[5, 3] = np.inf
    probe = rng.standard_normal((7, 1) if keepdim else (7,)).astype(np.float32)
    got, reference = path_and_reference(MaxRows, lambda t: t.amax(dim=-1, keepdim=keepdim),
                                        [x], probe)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(got[0][:3]).all() and got[0][3] == -np.inf and got[0][5] == np.inf
