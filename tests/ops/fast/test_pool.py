"""The max pool's fast paths (layerwise/ops/fast/pool.py) against the reference op, with ties,
NaN, -inf and padding, and where dispatch chooses each."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.ops.fast import pool as fast
from layerwise.ops.pool import MaxPool2d, max_pool2d
from tests.ops.fast.common import TOL, needs, path_and_reference

POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=2, padding=1, ceil_mode=True),  # 2x2/2 windows over -inf padding
    dict(kernel_size=3, stride=2, padding=1),  # overlapping: the reference's backward
    dict(kernel_size=(2, 3), stride=1, dilation=2, ceil_mode=True),
    dict(kernel_size=2, stride=3),  # disjoint windows with gaps between them
    dict(kernel_size=2, stride=4, dilation=2, padding=1),
]


@needs(fast.MaxPoolBatchLast)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", POOL_CASES)
def test_batch_last_max_pool_matches_the_reference_with_ties_and_nan(dtype, kwargs):
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (8, 3, 9, 10)).astype(dtype)  # 8: the path's smallest batch
    x[0, 1, 2, 3] = x[1, 2, 5, 5] = x[2, 0, 3, 4] = np.nan  # the last inside stride-3 windows
    fn = lambda t: max_pool2d(t, **kwargs)
    with lw.no_grad():
        probe = rng.standard_normal(fn(lw.tensor(x)).shape).astype(dtype)
    (out, grad), (ref_out, ref_grad) = path_and_reference(fast.MaxPoolBatchLast, fn, [x], probe)
    assert np.isnan(out).any()  # a NaN reached the output, so its rule was exercised
    np.testing.assert_array_equal(out, ref_out)  # the same maxima, NaN included
    # overlapping windows add their gradients in a different order: rounding only
    np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


@needs(fast.MaxPoolBatchLast)
def test_return_indices_from_a_batch_last_node_are_flat_positions_in_the_input_plane():
    """With a graph from batch 8 the recorded node is the compiled path's, whose positions
    are kept batch-last; max_pool2d reads them through the reference's (N, C, OH, OW) view."""
    x = np.random.default_rng(0).standard_normal((8, 3, 5, 6))
    out, index = max_pool2d(lw.tensor(x, requires_grad=True), 3, stride=2, padding=1,
                            return_indices=True)
    assert type(out._ctx) is fast.MaxPoolBatchLast
    picked = np.take_along_axis(x.reshape(8, 3, -1), index.numpy().reshape(8, 3, -1), axis=2)
    np.testing.assert_array_equal(picked.reshape(out.shape), out.detach().numpy())


def _plane_cases():
    """(path, kwargs) for every batch-1 path and every case it supports."""
    two_by_two = [k for k in POOL_CASES if k["kernel_size"] == 2 and "stride" not in k
                  and "dilation" not in k]
    return ([(fast.MaxPoolPlane, k) for k in POOL_CASES]
            + [(fast.MaxPoolPlane2x2, k) for k in two_by_two])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path, kwargs", _plane_cases(),
                         ids=[f"{p.__name__}-{k}" for p, k in _plane_cases()])
def test_batch_one_inference_pool_matches_the_reference_with_nan(path, kwargs, dtype):
    if not path.available():
        pytest.skip(f"{path.__name__} needs numba")
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, (1, 3, 9, 10)).astype(dtype)
    x[0, 1, 2, 3] = x[0, 2, 5, 5] = x[0, 0, 3, 4] = np.nan  # the last inside stride-3 windows
    x[0, 0, 4, :] = -np.inf
    (out,), (ref_out,) = path_and_reference(path, lambda t: max_pool2d(t, **kwargs), [x])
    assert out.shape == ref_out.shape and out.dtype == dtype
    assert np.isnan(out).any()  # a NaN reached the output, so its rule was exercised
    np.testing.assert_array_equal(out, ref_out)  # NaN in the same places


def _chosen(x, grad=False, **kwargs):
    with dispatch.traced() as calls, lw.enable_grad() if grad else lw.no_grad():
        max_pool2d(lw.Tensor(x, requires_grad=grad), **kwargs)
    (call,) = calls
    return dispatch.choose(*call)


@pytest.mark.parametrize("kwargs, path", [
    (dict(kernel_size=2), fast.MaxPoolPlane2x2),
    (dict(kernel_size=2, padding=1), fast.MaxPoolPlane2x2),
    (dict(kernel_size=2, stride=1), fast.MaxPoolPlane),
    (dict(kernel_size=2, dilation=2), fast.MaxPoolPlane),
    (dict(kernel_size=3, stride=2), fast.MaxPoolPlane),
])
def test_batch_one_pool_takes_the_2x2_kernel_only_for_2x2_windows_at_stride_2(kwargs, path):
    if not path.available():
        pytest.skip(f"{path.__name__} needs numba")
    x = np.random.default_rng(8).standard_normal((1, 2, 6, 7))
    assert _chosen(x, **kwargs) is path


@needs(fast.MaxPoolBatchLast)
@pytest.mark.parametrize("batch, grad, dtype, path", [
    (8, True, np.float32, fast.MaxPoolBatchLast),
    (8, False, np.float64, fast.MaxPoolBatchLast),
    (7, True, np.float32, MaxPool2d),  # the NumPy slices: the kernel's runs over N are short
    (1, True, np.float32, MaxPool2d),  # batch 1 with a graph: the positions are needed
    (8, True, np.float16, MaxPool2d),  # no compiled loop for float16
    (1, False, np.float16, MaxPool2d),
])
def test_dispatch_chooses_the_batch_path_by_batch_graph_and_dtype(batch, grad, dtype, path):
    x = np.random.default_rng(9).standard_normal((batch, 2, 6, 6)).astype(dtype)
    assert _chosen(x, grad=grad, kernel_size=2) is path
