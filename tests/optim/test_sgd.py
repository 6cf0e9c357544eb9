"""SGD against an independent NumPy float64 implementation of PyTorch's SGD equations."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.optim import SGD


def sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  maximize=False):
    """The equations of torch.optim.SGD, one step per gradient, in float64."""
    p = np.array(p, dtype=np.float64)
    b = None
    for g in grads:
        g = -g if maximize else g.copy()
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def random_grads(seed, shape, steps):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.5),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.3),
    dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True),
    dict(lr=0.1, maximize=True),
    dict(lr=0.05, momentum=0.7, dampening=0.2, weight_decay=0.2, maximize=True),
]


IDS = [",".join(f"{k}={v}" for k, v in s.items()) for s in SETTINGS]


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_sgd_matches_reference(settings):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    grads = random_grads(1, (3, 4), steps=6)
    p = lw.tensor(p0, requires_grad=True)
    opt = SGD([p], **settings)
    for g in grads:
        p.grad = lw.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.data, sgd_reference(p0, grads, **settings), rtol=1e-12, atol=1e-14)


def test_sgd_momentum_buffer_starts_at_first_gradient():
    p = lw.tensor(np.zeros(3), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    g = np.array([1.0, -2.0, 3.0])
    p.grad = lw.tensor(g)
    opt.step()
    # Dampening does not touch the first buffer: b_1 = g_1, as documented.
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"].data, g)
    np.testing.assert_allclose(p.data, -0.1 * g)


def test_sgd_param_groups_with_different_options():
    rng = np.random.default_rng(2)
    a0, b0 = rng.standard_normal(5), rng.standard_normal((2, 2))
    ga, gb = random_grads(3, (5,), 4), random_grads(4, (2, 2), 4)
    a, b = lw.tensor(a0, requires_grad=True), lw.tensor(b0, requires_grad=True)
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.01, "momentum": 0.5}], lr=0.2, momentum=0.9)
    for g1, g2 in zip(ga, gb):
        a.grad, b.grad = lw.tensor(g1), lw.tensor(g2)
        opt.step()
    np.testing.assert_allclose(a.data, sgd_reference(a0, ga, lr=0.2, momentum=0.9), rtol=1e-12)
    np.testing.assert_allclose(b.data, sgd_reference(b0, gb, lr=0.01, momentum=0.5), rtol=1e-12)


def test_sgd_float32_stays_float32_and_leaves_grad_alone():
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(6).astype(np.float32)
    grads = [g.astype(np.float32) for g in random_grads(6, (6,), 3)]
    p = lw.tensor(p0, requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5, maximize=True)
    for g in grads:
        p.grad = lw.tensor(g)
        opt.step()
        # Weight decay and maximize work on a copy: the gradient a user sees is unchanged.
        np.testing.assert_array_equal(p.grad.data, g)
    assert p.dtype == lw.float32
    expected = sgd_reference(p0, [g.astype(np.float64) for g in grads], lr=0.1, momentum=0.9,
                             weight_decay=0.5, maximize=True)
    np.testing.assert_allclose(p.data, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(momentum=0.0, nesterov=True),
                                    dict(momentum=0.9, dampening=0.1, nesterov=True)])
def test_sgd_nesterov_needs_momentum_and_no_dampening(kwargs):
    p = lw.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="requires a momentum > 0 and zero dampening"):
        SGD([p], lr=0.1, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-0.1), "lr must be a number >= 0, got -0.1"),
    (dict(lr=0.1, momentum=-0.5), "momentum value: must be >= 0, got -0.5"),
    (dict(lr=0.1, weight_decay=-1e-4), "weight_decay value: must be a number >= 0, got -0.0001"),
])
def test_sgd_rejects_bad_options(kwargs, message):
    p = lw.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match=message):
        SGD([p], **kwargs)


def test_sgd_checks_options_given_in_a_group():
    p, q = lw.tensor([1.0], requires_grad=True), lw.tensor([2.0], requires_grad=True)
    with pytest.raises(ValueError, match="got -1"):
        SGD([{"params": [p]}, {"params": [q], "lr": -1}], lr=0.1)
