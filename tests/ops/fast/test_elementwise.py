"""The elementwise ops' fast paths (layerwise/ops/fast/elementwise.py): masked_fill through one
mask row and powers as products, against their reference ops, NumPy and float64, with the
special values, and where dispatch chooses them."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.ops.elementwise import PowScalar
from layerwise.ops.fast import elementwise as fast
from tests.ops.fast.common import needs, outputs_and_grads, path_and_reference

MASKS = {  # x's shape, the mask's, whether the mask rows path applies
    "causal over heads": ((2, 3, 5, 5), (1, 1, 5, 5), True),
    "no leading ones": ((2, 3, 5, 5), (5, 5), True),
    "full shape": ((4, 6), (4, 6), True),
    "scalar mask": ((3, 4), (), True),
    "padding (the reference's copy)": ((2, 3, 5, 5), (2, 1, 1, 5), False),
    "mask wider than x": ((5,), (3, 1, 5), False),
}


@needs(fast.MaskedFillRows)
@pytest.mark.parametrize("case", list(MASKS))
@pytest.mark.parametrize("value", [float("-inf"), 0.25])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])  # float16: reference
def test_masked_fill_paths_match_numpy_where(case, value, dtype):
    x_shape, mask_shape, rows = MASKS[case]
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
    fn = lambda t: t.masked_fill(lw.tensor(mask), value)
    with dispatch.forced(dispatch.REFERENCE):
        reference = outputs_and_grads(fn, [x], g)
    with dispatch.forced(fast.MaskedFillRows) as uses:
        through_rows = outputs_and_grads(fn, [x], g)
    assert bool(uses.count) == (rows and dtype != np.float16)
    tol = 1e-3 if dtype == np.float16 else 1e-6
    for got in (through_rows, reference):
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


@needs(fast.PowerAsProducts)
@pytest.mark.parametrize("exponent", [3, 4, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_powers_as_products_match_the_reference_and_float64_with_special_values(exponent, dtype):
    x = np.concatenate([np.linspace(-3, 3, 61), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e20]])
    x = x.astype(dtype)
    x64 = x.astype(np.float64)
    p = int(exponent)
    # 1e20 ** 3 overflows float32 to inf, as powf does; inf - inf in the probe's sum
    with np.errstate(over="ignore", invalid="ignore"):
        got, reference = path_and_reference(fast.PowerAsProducts, lambda t: t ** exponent, [x],
                                            np.ones_like(x))
        want = [(x64 ** p).astype(dtype), (p * x64 ** (p - 1)).astype(dtype)]
    for a, b, w in zip(got, reference, want):
        assert a.dtype == dtype
        np.testing.assert_array_equal(np.isnan(a), np.isnan(w))
        np.testing.assert_allclose(a, w, rtol=4 * np.finfo(dtype).eps, atol=0)
        np.testing.assert_allclose(a, b, rtol=4 * np.finfo(dtype).eps, atol=0)
    assert np.signbit(got[0][-5]) == (p % 2 == 1)  # (-0) ** 3 is -0, (-0) ** 4 is +0


@pytest.mark.parametrize("dtype, exponent, fast_path", [
    (np.float32, 3, True), (np.float16, 4, True), (np.float64, 3.0, True),
    (np.float32, 2, False), (np.float32, 5, False), (np.float32, 2.5, False),
    (np.float32, True, False), (np.int64, 3, False)])
def test_powers_as_products_run_only_for_floats_cubed_or_to_the_fourth(dtype, exponent,
                                                                        fast_path):
    x = np.arange(1, 5).astype(dtype)
    with dispatch.traced() as calls:
        out = (lw.tensor(x) ** exponent).numpy()
    (call,) = [c for c in calls if c[0] is PowScalar]
    chosen = dispatch.choose(*call)
    assert chosen is (fast.PowerAsProducts if fast_path else PowScalar)
    np.testing.assert_allclose(out, x.astype(np.float64) ** exponent, rtol=1e-6)
