"""The linear layer's batch-1 fast path (layerwise/ops/fast/linear.py) against the reference op
and float64, and where dispatch chooses it."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise import nn
from layerwise.ops.fast.linear import LinearOneRow
from layerwise.ops.linear import LinearFunction
from tests.ops.fast.common import needs, path_and_reference

pytestmark = needs(LinearOneRow)


def _float64_linear(x, weight, bias):
    out = x.astype(np.float64) @ weight.astype(np.float64).T
    return out if bias is None else out + bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_out", [1, 3, 4, 13, 64])  # rows in fours, and the rest
@pytest.mark.parametrize("with_bias", [True, False])
def test_one_row_matches_the_reference_and_float64(dtype, n_out, with_bias):
    rng = np.random.default_rng(n_out)
    arrays = [rng.standard_normal((1, 37)).astype(dtype),
              rng.standard_normal((n_out, 37)).astype(dtype)]
    if with_bias:
        arrays.append(rng.standard_normal(n_out).astype(dtype))
    got, reference = path_and_reference(LinearOneRow, F.linear, arrays)
    assert got[0].dtype == dtype and got[0].shape == (1, n_out)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got[0], reference[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(got[0], _float64_linear(*arrays, *([None] * (3 - len(arrays)))),
                               rtol=tol, atol=tol)




@pytest.mark.parametrize("case, fast", [
    ("1-D input", True), ("(1, 1, in) input", True), ("(2, in) input", False),
    ("strided row", False), ("requires grad", False), ("float16", False),
    ("transposed weight", False)])
def test_one_row_runs_only_where_it_applies_and_gives_the_same_values(case, fast):
    rng = np.random.default_rng(5)
    weight, x = rng.standard_normal((7, 10)), rng.standard_normal((1, 10))
    if case == "1-D input":
        x = x[0]
    elif case == "(1, 1, in) input":
        x = x[None]
    elif case == "(2, in) input":
        x = rng.standard_normal((2, 10))
    elif case == "strided row":
        x = rng.standard_normal((1, 20))[:, ::2]  # (lw.tensor would copy it contiguous)
    elif case == "float16":
        weight, x = weight.astype(np.float16), x.astype(np.float16)
    elif case == "transposed weight":
        weight = np.ascontiguousarray(weight.T).T
    grad = case == "requires grad"
    chosen = []
    with lw.autograd.dispatch.traced() as calls:
        with lw.enable_grad() if grad else lw.no_grad():
            out = F.linear(lw.Tensor(x, requires_grad=grad), lw.Tensor(weight)).detach().numpy()
    for reference, arrays, params, graph in calls:
        chosen.append(lw.autograd.dispatch.choose(reference, arrays, params, graph))
    assert chosen == [LinearOneRow if fast else LinearFunction]
    assert out.shape == x.shape[:-1] + (7,) and out.dtype == x.dtype
    tol = 2e-2 if case == "float16" else 1e-12
    expected = _float64_linear(x.reshape(-1, 10), weight, None).reshape(out.shape)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def test_a_users_mlp_at_batch_one_reaches_the_one_row_path():
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = lw.randn(1, 12)
    with lw.no_grad(), lw.autograd.dispatch.traced() as calls:
        fast = model(x).numpy()
    linear_calls = [c for c in calls if c[0] is LinearFunction]
    assert len(linear_calls) == 2
    assert all(lw.autograd.dispatch.choose(*c) is LinearOneRow for c in linear_calls)
    with lw.autograd.dispatch.forced(lw.autograd.dispatch.REFERENCE), lw.no_grad():
        np.testing.assert_allclose(fast, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_linear_refuses_mixed_dtypes_in_one_line():
    with pytest.raises(TypeError, match="one dtype, got"):
        F.linear(lw.randn(2, 3), lw.randn(4, 3).double())
