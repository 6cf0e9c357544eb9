"""Gradients where the easy formula breaks: pow at zero, and the softmax family (logsumexp,
softmax, log_softmax, cross_entropy) at very large and very small magnitudes.

References: the derivative by hand (d/dx x^p = p x^(p-1), and 0 for p = 0, as PyTorch),
NumPy in float64 with the max subtracted, and central finite differences in float64. The
softmax family runs both ways: through the path dispatch chooses (in float32 a compiled row
kernel) and forced through the reference ops.
"""

import contextlib

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.autograd import dispatch

pytestmark = pytest.mark.filterwarnings("error")

# "chosen": whatever dispatch picks; "reference": every op through its reference Function
PATHS = {"chosen": contextlib.nullcontext, "reference": lambda: dispatch.forced(dispatch.REFERENCE)}

# --- pow at zero ------------------------------------------------------------------------------

# d/dx x**p at x = 0, as PyTorch gives it: x**0 is constant (0 everywhere, not 0 * 0**-1 = nan);
# p < 1 other than 0 has an infinite slope there.
POW_GRAD_AT_ZERO = [(0, 0.0), (0.0, 0.0), (1, 1.0), (2, 0.0), (3, 0.0), (0.5, np.inf),
                    (-1, -np.inf)]


def _pow_grad(x, exponent, as_tensor):
    x = lw.tensor(x, requires_grad=True)
    p = lw.tensor(exponent, dtype=x.dtype) if as_tensor else exponent
    with np.errstate(divide="ignore"):  # 0 ** -1 in the forward is inf, as intended
        (x ** p).sum().backward()
    return x.grad.numpy()


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("as_tensor", [False, True], ids=["scalar_exponent", "tensor_exponent"])
@pytest.mark.parametrize("exponent, expected", POW_GRAD_AT_ZERO)
def test_pow_gradient_at_zero_is_pytorchs(exponent, expected, as_tensor, path):
    x = np.array([0.0, 0.5, 2.0])
    with PATHS[path]():
        grad = _pow_grad(x, exponent, as_tensor)
    assert grad[0] == expected, f"d/dx x**{exponent} at 0: got {grad[0]}, want {expected}"
    by_hand = exponent * x[1:] ** (exponent - 1) if exponent != 0 else 0 * x[1:]
    np.testing.assert_allclose(grad[1:], by_hand, rtol=1e-12)


def test_pow_gradient_of_the_exponent_at_zero_base_is_zero():
    a = lw.tensor([0.0, 2.0], dtype=lw.float64, requires_grad=True)
    b = lw.tensor([0.0, 3.0], dtype=lw.float64, requires_grad=True)
    (a ** b).sum().backward()
    # d/db a**b = a**b log a: 0 where a = 0 and b >= 0 (PyTorch's rule), 8 log 2 at (2, 3)
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 8 * np.log(2.0)], rtol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 12.0], rtol=1e-12)


# --- logsumexp --------------------------------------------------------------------------------

MAGNITUDES = [0.0, 1e-30, 1e-8, 1.0, 1e5, 1e8, 1e30, -1e5, -1e30]


@pytest.mark.parametrize("dtype", [lw.float32, lw.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("a", MAGNITUDES)
def test_logsumexp_of_equal_values_splits_the_gradient_evenly(a, dtype):
    x = lw.tensor([a, a], dtype=dtype, requires_grad=True)
    out = lw.logsumexp(x, dim=0)
    out.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.5])  # softmax of equal values, exactly
    expected = np.float64(np.asarray(a, dtype=x.dtype)) + np.log(2.0)
    np.testing.assert_allclose(out.item(), expected, rtol=1e-6)


def _np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _offset_rows(offset, dtype, seed=0):
    """Rows near ``offset`` spread over a few units, as float64 values of ``dtype`` numbers."""
    rng = np.random.default_rng(seed)
    x = offset + rng.standard_normal((3, 5)) * max(1.0, abs(offset) * 1e-6)
    return x.astype(dtype).astype(np.float64)


OFFSETS = [0.0, 1e-20, 50.0, -50.0, 1e4, 1e5, 1e8, -1e8]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_logsumexp_forward_and_gradient_match_numpy_float64(offset, dtype):
    x = _offset_rows(offset, dtype)
    w = np.random.default_rng(1).standard_normal(3)
    t = lw.tensor(x.astype(dtype), requires_grad=True)
    out = lw.logsumexp(t, dim=1)
    (out * lw.tensor(w.astype(dtype))).sum().backward()
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.detach().numpy(), _np_logsumexp(x), rtol=tol)
    np.testing.assert_allclose(t.grad.numpy(), w[:, None] * _np_softmax(x), atol=tol)


def _central_difference(f, x, h):
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("offset", [0.0, 1e5, 1e8, -1e8])
def test_logsumexp_gradient_matches_finite_differences(offset):
    x = _offset_rows(offset, np.float64, seed=2)
    w = np.random.default_rng(3).standard_normal(3)
    t = lw.tensor(x, requires_grad=True)
    (lw.logsumexp(t, dim=1) * lw.tensor(w)).sum().backward()
    numeric = _central_difference(lambda v: (_np_logsumexp(v) * w).sum(), x, h=1e-3)
    np.testing.assert_allclose(t.grad.numpy(), numeric, atol=1e-4)


def test_logsumexp_of_an_all_minus_inf_row_is_minus_inf_without_warnings():
    x = lw.tensor([[-np.inf, -np.inf], [0.0, 0.0]], dtype=lw.float64, requires_grad=True)
    out = lw.logsumexp(x, dim=1)
    np.testing.assert_array_equal(out.detach().numpy(), [-np.inf, np.log(2.0)])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[1], [0.5, 0.5])  # the other row is untouched


# --- softmax, log_softmax and cross_entropy at large logits ------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_softmax_and_log_softmax_match_numpy_float64(offset, dtype, path):
    with PATHS[path]():
        _check_softmax_and_log_softmax(offset, dtype)


def _check_softmax_and_log_softmax(offset, dtype):
    x = _offset_rows(offset, dtype, seed=4)
    g = np.random.default_rng(5).standard_normal(x.shape)
    p, log_p = _np_softmax(x), np.log(_np_softmax(x))
    tol = 1e-6 if dtype == np.float32 else 1e-12

    t = lw.tensor(x.astype(dtype), requires_grad=True)
    out = lw.softmax(t, dim=1)
    (out * lw.tensor(g.astype(dtype))).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), p, atol=tol)
    np.testing.assert_allclose(t.grad.numpy(), p * (g - (g * p).sum(1, keepdims=True)), atol=tol)

    t = lw.tensor(x.astype(dtype), requires_grad=True)
    out = lw.log_softmax(t, dim=1)
    (out * lw.tensor(g.astype(dtype))).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), log_p, atol=tol * 10, rtol=tol)
    np.testing.assert_allclose(t.grad.numpy(), g - p * g.sum(1, keepdims=True), atol=tol * 10)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("offset", OFFSETS + [1e30])
def test_cross_entropy_matches_numpy_float64(offset, dtype, path):
    with PATHS[path]():
        _check_cross_entropy(offset, dtype)


def _check_cross_entropy(offset, dtype):
    x = _offset_rows(offset, dtype, seed=6)
    target = np.array([0, 4, 2])
    rows = np.arange(3)
    expected_loss = (_np_logsumexp(x) - x[rows, target]).mean()
    expected_grad = _np_softmax(x)
    expected_grad[rows, target] -= 1
    expected_grad /= 3
    t = lw.tensor(x.astype(dtype), requires_grad=True)
    loss = F.cross_entropy(t, lw.tensor(target))
    loss.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    # the loss sums terms of size |offset| that cancel: float64 keeps ~1e-16 * |offset| of each
    np.testing.assert_allclose(loss.item(), expected_loss, atol=tol + 1e-15 * abs(offset),
                               rtol=tol)
    np.testing.assert_allclose(t.grad.numpy(), expected_grad, atol=tol)


@pytest.mark.parametrize("path", list(PATHS))
def test_softmax_family_with_huge_spread_stays_finite(path):
    with PATHS[path]():
        _check_huge_spread()


def _check_huge_spread():
    x = lw.tensor([[1e30, 0.0, -1e30]], requires_grad=True)
    lw.logsumexp(x, dim=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 0.0, 0.0]])
    x.grad = None
    F.cross_entropy(x, lw.tensor([1])).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, -1.0, 0.0]])
    np.testing.assert_array_equal(lw.softmax(x.detach(), dim=1).numpy(), [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [lw.float32, lw.float64], ids=["float32", "float64"])
def test_cross_entropy_with_a_class_masked_to_minus_inf_is_finite(dtype, path):
    """A logit of -inf (a class masked out) has probability 0: it adds nothing to the loss of a
    row whose target is another class, not 0 * -inf = NaN. Row 0: log(1 + e) - 0; row 1:
    log(e^2 + 1) - 0; the gradient softmax - one_hot, 0 at the masked classes."""
    x = lw.tensor([[0.0, -np.inf, 1.0], [2.0, 0.0, -np.inf]], dtype=dtype, requires_grad=True)
    with PATHS[path]():
        loss = F.cross_entropy(x, lw.tensor([0, 1]))
        loss.backward()
    e = np.e
    want = (np.log(1 + e) + np.log(e * e + 1)) / 2
    tol = 1e-6 if dtype == lw.float32 else 1e-15
    np.testing.assert_allclose(loss.item(), want, rtol=tol)
    p0, p1 = np.array([1, 0, e]) / (1 + e), np.array([e * e, 1, 0]) / (e * e + 1)
    grad = np.stack([p0 - [1, 0, 0], p1 - [0, 1, 0]]) / 2
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=tol, atol=tol)
    assert x.grad.numpy()[0, 1] == 0 and x.grad.numpy()[1, 2] == 0
