"""The convolution's fast paths (layerwise/ops/fast/conv.py) against the reference op and
float64, in both memory layouts of the input, and where dispatch chooses each."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn
from layerwise.autograd import dispatch
from layerwise.ops.conv import Conv2d, conv2d
from layerwise.ops.fast import conv as fast
from tests.ops.fast.common import assert_close, needs, path_and_reference


@needs(fast.Conv2dBatchLast)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [
    dict(padding=1),
    dict(stride=2, dilation=2, padding=2, groups=2),
    dict(padding=(2, 0), stride=(3, 1)),  # the last row's windows run past the bottom edge
    dict(padding="same", dilation=(1, 2)),
    dict(stride=(1, 2)),  # no padding: a batch-last input is read where it lies
])
@pytest.mark.parametrize("memory", ["NCHW", "batch-last"])
def test_batch_last_columns_match_the_reference(dtype, kwargs, memory):
    """The compiled columns and their scatter against the reference's strided view, the
    weight gradient in blocks against the plain product. A batch-last input (as a conv's or
    pool's output is laid out) comes from a first conv run through the same path."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 9, 8)).astype(dtype)  # 8: the path's smallest batch
    w0 = rng.standard_normal((4, 4, 1, 1)).astype(dtype)
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    if memory == "batch-last":
        fn = lambda a, w0_, w_, b_: conv2d(conv2d(a, w0_), w_, b_, **kwargs)
        arrays = [x, w0, w, b]
    else:
        fn = lambda a, w_, b_: conv2d(a, w_, b_, **kwargs)
        arrays = [x, w, b]
    with lw.no_grad(), dispatch.forced(fast.Conv2dBatchLast):
        out = fn(*map(lw.tensor, arrays))
    assert out.data.transpose(1, 2, 3, 0).flags.c_contiguous  # the output is batch-last
    probe = rng.standard_normal(out.shape).astype(dtype)
    got, reference = path_and_reference(fast.Conv2dBatchLast, fn, arrays, probe)
    assert_close(got, reference, dtype)


@pytest.mark.parametrize("groups, k, o, m", [
    (1, 9, 32, 5000),  # blocks of 1198 and a remainder of 208
    (2, 27, 16, 4000),  # per group
    (1, 9, 32, 2395),  # one block's length short of two blocks: the plain product
    (1, 72, 32, 3000),  # K*O past the blocking's limit: the plain product
])
def test_long_reduction_matmul_matches_numpy(groups, k, o, m):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((groups, k, m)).astype(np.float32)
    b = rng.standard_normal((groups, o, m)).astype(np.float32).transpose(0, 2, 1)  # as conv has it
    got = fast.long_reduction_matmul(a, b)
    assert got.shape == (groups, k, o) and got.dtype == np.float32
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4,
                               atol=2e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [
    dict(padding=1),  # 'same': rows of W, reads wrapped at both edges zeroed
    dict(padding=0, groups=3),  # OW < W: rows of W, the outputs past OW dropped; bias after
    dict(padding=(0, 2), dilation=(1, 3)),  # OW > W: rows of OW
])
def test_one_sample_matches_the_reference(dtype, kwargs):
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal((1, 6, 7, 9)).astype(dtype),
              rng.standard_normal((9, 6 // kwargs.get("groups", 1), 3, 2)).astype(dtype),
              rng.standard_normal(9).astype(dtype)]
    got, reference = path_and_reference(
        fast.Conv2dOneSample, lambda x, w, b: conv2d(x, w, b, **kwargs), arrays)
    assert got[0].flags.c_contiguous
    assert_close(got, reference, dtype)


def _chosen(x, weight, grad=False, **kwargs):
    with dispatch.traced() as calls, lw.enable_grad() if grad else lw.no_grad():
        conv2d(lw.Tensor(x, requires_grad=grad), lw.Tensor(weight), **kwargs)
    (call,) = [c for c in calls if c[0] is Conv2d]
    return dispatch.choose(*call)


@pytest.mark.parametrize("case, path", [
    ("batch 8, graph", fast.Conv2dBatchLast),
    ("batch 8, no graph", fast.Conv2dBatchLast),
    ("batch 7, graph", Conv2d),
    ("batch 8, float16", Conv2d),
    ("batch 1, no graph", fast.Conv2dOneSample),
    ("batch 1, no graph, stride 2", Conv2d),
    ("batch 1, graph", Conv2d),
])
def test_dispatch_chooses_the_path_by_batch_graph_stride_and_dtype(case, path):
    if path is fast.Conv2dBatchLast and not path.available():
        pytest.skip("Conv2dBatchLast needs numba")
    batch = int(case.split(",")[0].split()[1])
    dtype = np.float16 if "float16" in case else np.float32
    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    assert _chosen(x, w, grad="no graph" not in case and "float16" not in case,
                   stride=2 if "stride 2" in case else 1, padding=1) is path


def test_a_users_cnn_at_batch_one_reaches_the_one_sample_path():
    lw.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 8, 3, padding=1))
    x = lw.randn(1, 1, 8, 8)
    with lw.no_grad(), dispatch.traced() as calls:
        fast_out = model(x).numpy()
    convs = [c for c in calls if c[0] is Conv2d]
    assert len(convs) == 2 and all(dispatch.choose(*c) is fast.Conv2dOneSample for c in convs)
    with dispatch.forced(dispatch.REFERENCE), lw.no_grad():
        np.testing.assert_allclose(fast_out, model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("two_blas_threads")
@pytest.mark.parametrize("padding, stride", [(1, 1), (0, 2)])
def test_input_gradient_in_two_halves_of_the_channels_matches_one_pass(monkeypatch, padding,
                                                                       stride):
    """From MIN_COLUMNS_IN_HALVES column values the input gradient is two halves of the input
    channels on two cores (an odd channel count, so the halves differ): the same values as one
    product and one scatter."""
    from layerwise.backend import threads
    from layerwise.ops.fast import conv as fast_conv

    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 5, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    probe = rng.standard_normal((9, 4) + ((6, 6) if padding else (2, 2))).astype(np.float32)
    results, pairs = [], []
    real = threads.run_pair
    monkeypatch.setattr(threads, "run_pair", lambda *f: pairs.append(1) or real(*f))
    for threshold in (0, 1 << 60):
        monkeypatch.setattr(fast_conv, "MIN_COLUMNS_IN_HALVES", threshold)
        fn = lambda a, b: conv2d(a, b, padding=padding, stride=stride)  # noqa: E731
        got, _ = path_and_reference(fast_conv.Conv2dBatchLast, fn, [x, w], probe)
        results.append(got)
    assert len(pairs) == 1
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("two_blas_threads")
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, dilation=2, groups=2),
                                    dict(padding=(2, 0), stride=(3, 1))])
def test_forward_in_two_halves_of_the_output_rows_matches_one_pass(monkeypatch, kwargs):
    """From MIN_COLUMNS_IN_HALVES_FORWARD column values each core copies the columns of half
    the output rows and takes their product (7 or 3 rows here, so the halves differ): the
    same output and gradients as one pass, and as the reference."""
    from layerwise.backend import threads

    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 4, 13, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    fn = lambda a, b, c: conv2d(a, b, c, **kwargs)  # noqa: E731
    with lw.no_grad():
        shape = fn(lw.tensor(x), lw.tensor(w), lw.tensor(bias)).shape
    probe = rng.standard_normal(shape).astype(np.float32)
    results, pairs = [], []
    real = threads.run_pair
    monkeypatch.setattr(threads, "run_pair", lambda *f: pairs.append(1) or real(*f))
    for threshold in (0, 1 << 60):
        monkeypatch.setattr(fast, "MIN_COLUMNS_IN_HALVES_FORWARD", threshold)
        monkeypatch.setattr(fast, "MIN_COLUMNS_IN_HALVES", 1 << 60)  # the backward in one pass
        got, reference = path_and_reference(fast.Conv2dBatchLast, fn, [x, w, bias], probe)
        results.append(got)
        for a, b in zip(got, reference):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert len(pairs) == 1
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
