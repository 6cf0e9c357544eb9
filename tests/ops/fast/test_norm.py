"""The layer norm's and batch norm's compiled rows (layerwise/ops/fast/norm.py) against the reference ops and
float64, and where dispatch chooses them.

The op harness (tests/ops/test_attention_cases.py) already runs the path on its layer-norm
cases; here the inputs are larger, far from zero and include a constant row, and the
tolerances are the fast-path ones of tests/ops/fast/common.py."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.autograd import dispatch
from layerwise.ops.fast import norm as fast_norm
from layerwise.ops.fast.norm import LayerNormCompiledRows
from layerwise.ops.norm import LayerNormFunction
from tests.ops.fast.common import assert_close, needs, path_and_reference

pytestmark = needs(LayerNormCompiledRows)

AFFINES = ["none", "weight", "weight_bias"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("affine", AFFINES)
def test_compiled_rows_match_the_reference(dtype, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 7, 19)) * 3 + 1).astype(dtype)
    params = [rng.standard_normal(19).astype(dtype) for _ in range(AFFINES.index(affine))]
    probe = rng.standard_normal(x.shape).astype(dtype)
    got, reference = path_and_reference(
        LayerNormCompiledRows, lambda a, *p: F.layer_norm(a, (19,), *p), [x, *params], probe)
    assert [a.dtype for a in got] == [dtype] * len(got)
    assert_close(got, reference, dtype)


def test_compiled_rows_normalise_over_two_dims():
    """normalized_shape (3, 4): rows of 12 values, weight and bias (3, 4), against float64."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 4))
    weight, bias = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    probe = rng.standard_normal(x.shape)
    got, reference = path_and_reference(
        LayerNormCompiledRows, lambda a, w, b: F.layer_norm(a, (3, 4), w, b, eps=1e-3),
        [x, weight, bias], probe)
    assert_close(got, reference, np.float64)
    x64 = x.reshape(6, 12)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(got[0], want.reshape(x.shape) * weight + bias, atol=1e-12)


def test_float32_sums_stay_accurate_on_rows_far_from_zero_and_a_constant_row():
    """The kernel sums float32 rows in float32: rows far from zero (mean 1000, std 0.1) and a
    constant row (variance 0, so 1/std = 1/sqrt(eps)) against float64."""
    rng = np.random.default_rng(9)
    x = (1000 + 0.1 * rng.standard_normal((4, 256))).astype(np.float32)
    x[2] = 7.5
    with dispatch.forced(LayerNormCompiledRows) as uses, lw.no_grad():
        out = F.layer_norm(lw.tensor(x), (256,), eps=1e-5).numpy()
    assert uses.count == 1
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, atol=2e-3)  # float32 inputs near 1000: ulp 6e-5
    np.testing.assert_array_equal(out[2], 0)


@pytest.mark.parametrize("dtype, fast", [(np.float32, True), (np.float64, True),
                                         (np.float16, False)])
def test_dispatch_chooses_the_compiled_rows_for_float32_and_float64_only(dtype, fast):
    norm = lw.nn.LayerNorm(8).to(getattr(lw, np.dtype(dtype).name))
    x = lw.tensor(np.random.default_rng(2).standard_normal((3, 8)).astype(dtype))
    with dispatch.traced() as calls:
        norm(x)
    chosen = [dispatch.choose(*call) for call in calls if call[0] is LayerNormFunction]
    assert chosen == [LayerNormCompiledRows if fast else LayerNormFunction]


@needs(fast_norm.BatchNormChannelRows)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_channel_rows_update_the_running_statistics_as_the_reference(dtype):
    """A BatchNorm2d in training on a conv's batch-last output: the output, every gradient and
    the running mean and variance (unbiased) agree with the reference op's."""
    rng = np.random.default_rng(4)
    memory = (rng.standard_normal((3, 5, 4, 6)) * 2 + 1).astype(dtype)  # (C, H, W, N)
    probe = rng.standard_normal((6, 3, 5, 4)).astype(dtype)
    results = []
    for path in (dispatch.REFERENCE, fast_norm.BatchNormChannelRows):
        layer = lw.nn.BatchNorm2d(3, dtype=dtype)
        x = lw.tensor(memory, requires_grad=True)
        with dispatch.forced(path) as uses:
            out = layer(x.permute(3, 0, 1, 2))  # (N, C, H, W) view of batch-last memory
            (out * lw.tensor(probe)).sum().backward()
        assert path == dispatch.REFERENCE or uses.count == 1
        results.append([out.detach().numpy(), x.grad.numpy(), layer.weight.grad.numpy(),
                        layer.bias.grad.numpy(), layer.running_mean.numpy(),
                        layer.running_var.numpy()])
    assert_close(results[1], results[0], dtype)


@needs(fast_norm.BatchNormChannelRows)
def test_a_users_conv_then_batch_norm_reaches_the_channel_rows_unforced():
    """Conv2d -> BatchNorm2d -> ReLU as a user writes it, batch 8: dispatch itself picks the
    channel rows for the batch norm (the conv's output is batch-last), and a training step
    gives the reference's loss and gradients."""
    rng = np.random.default_rng(6)
    x = lw.tensor(rng.standard_normal((8, 3, 6, 6)).astype(np.float32))
    results = []
    for path in (None, dispatch.REFERENCE):
        lw.manual_seed(0)
        model = lw.nn.Sequential(lw.nn.Conv2d(3, 4, 3, padding=1), lw.nn.BatchNorm2d(4),
                                 lw.nn.ReLU())
        with dispatch.traced() as calls:
            if path is None:
                loss = (model(x) ** 2).mean()
            else:
                with dispatch.forced(path):
                    loss = (model(x) ** 2).mean()
        loss.backward()
        if path is None:
            chosen = [dispatch.choose(*call) for call in calls if call[0].__name__ == "BatchNorm"]
            assert chosen == [fast_norm.BatchNormChannelRows]
        results.append([np.asarray(loss.item())] + [p.grad.numpy() for p in model.parameters()]
                       + [model[1].running_var.numpy()])
    assert_close(results[0], results[1], np.float32)
