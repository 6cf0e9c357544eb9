"""The compiled paths of the exact GELU (float32), softmax / log_softmax over the last dim
(float32) and masked_fill, each against its NumPy form (forced by turning the kernels off in
the op's module) and against float64 references, through the public functions."""

import math

import numpy as np
import pytest
from scipy.special import erfc

import layerwise as lw
from layerwise.ops import activation, elementwise, reduce
from layerwise.ops.fast import kernels

pytestmark = pytest.mark.skipif(kernels.kernel("gelu_erf_f32") is None,
                                reason="numba is not installed")

EPS32 = float(np.finfo(np.float32).eps)


def _fill(x, mask, value, g):
    t = lw.tensor(x, requires_grad=True)
    out = t.masked_fill(lw.tensor(mask), value)
    (out * lw.tensor(g)).sum().backward()
    return out.detach().numpy(), t.grad.numpy()


MASKS = {  # x's shape, the mask's
    "causal over heads": ((2, 3, 5, 5), (1, 1, 5, 5)),
    "no leading ones": ((2, 3, 5, 5), (5, 5)),
    "full shape": ((4, 6), (4, 6)),
    "padding (NumPy's copy)": ((2, 3, 5, 5), (2, 1, 1, 5)),
    "scalar mask": ((3, 4), ()),
    "mask wider than x": ((5,), (3, 1, 5)),
}


@pytest.mark.parametrize("case", list(MASKS))
@pytest.mark.parametrize("value", [float("-inf"), 0.25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])  # float16: NumPy's copy
def test_masked_fill_paths_match_numpy_where(monkeypatch, case, value, dtype):
    x_shape, mask_shape = MASKS[case]
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(dtype)
    mask = rng.random(mask_shape) < 0.4
    out_shape = np.broadcast_shapes(x_shape, mask_shape)
    g = rng.standard_normal(out_shape).astype(dtype)
    g[np.broadcast_to(mask, out_shape)] = np.nan  # a masked place must get 0, not g * 0
    want = np.where(mask, dtype(value), x)
    dwant = np.where(mask, 0, g)
    while dwant.ndim > x.ndim:
        dwant = dwant.sum(0)
    dwant = dwant.sum(tuple(i for i, n in enumerate(x_shape) if n == 1), keepdims=True)
    compiled = _fill(x, mask, value, g)
    monkeypatch.setattr(elementwise, "kernel", lambda name: None)
    plain = _fill(x, mask, value, g)
    tol = 1e-3 if dtype == np.float16 else 1e-6
    for got in (compiled, plain):
        assert got[0].dtype == dtype and got[0].shape == out_shape
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_allclose(got[1], dwant, rtol=tol, atol=tol)


def test_masked_fill_on_a_transposed_input_and_with_a_tensor_value():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    mask = rng.random((4, 6)) < 0.5
    out = lw.tensor(x).T.masked_fill(lw.tensor(mask), -1.0).numpy()
    np.testing.assert_array_equal(out, np.where(mask, -1, x.T))

    value = lw.tensor(np.float32(2.0), requires_grad=True)  # a value that wants a gradient
    t = lw.tensor(x.T.copy(), requires_grad=True)
    t.masked_fill(lw.tensor(mask), value).sum().backward()
    assert value.grad.item() == mask.sum()
    np.testing.assert_array_equal(t.grad.numpy(), ~mask)

    ints = lw.tensor(np.arange(6).reshape(2, 3))  # as before: a float value makes a float result
    filled = ints.masked_fill(lw.tensor(np.eye(2, 3, dtype=bool)), 0.5).numpy()
    np.testing.assert_array_equal(filled, np.where(np.eye(2, 3, dtype=bool), 0.5,
                                                    np.arange(6).reshape(2, 3)))


@pytest.mark.parametrize("mask, kind, quoted", [
    (np.ones((2, 3), np.float32), TypeError, "float32"),
    (np.ones((4,), bool), ValueError, "(4,)"),
    (np.ones((3, 2), bool), ValueError, "(3, 2)"),
])
def test_masked_fill_bad_masks_give_one_line_errors(mask, kind, quoted):
    x = lw.zeros(2, 3)
    with pytest.raises(kind) as err:
        x.masked_fill(lw.tensor(mask), 1.0)
    message = str(err.value)
    assert "\n" not in message and quoted in message and "masked_fill" in message
