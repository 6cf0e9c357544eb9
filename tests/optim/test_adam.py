"""Adam and AdamW against an independent NumPy float64 implementation of PyTorch's equations."""

import math

import numpy as np
import pytest

import layerwise as lw
from layerwise.optim import Adam, AdamW


def adam_reference(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                   amsgrad=False, maximize=False, decoupled=False):
    """torch.optim.Adam (decoupled=False) or AdamW (decoupled=True), in float64."""
    beta1, beta2 = betas
    p = np.array(p, dtype=np.float64)
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            v_hat = vmax / (1 - beta2**t)
        else:
            v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def random_grads(seed, shape, steps, scale=1.0):
    rng = np.random.default_rng(seed)
    # Varying scale per step makes amsgrad's running max differ from v.
    return [scale * rng.standard_normal(shape) * (3.0 if i % 3 == 0 else 0.2) for i in range(steps)]


SETTINGS = [
    dict(lr=0.01),
    dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.05, amsgrad=True, betas=(0.9, 0.95)),
    dict(lr=0.05, amsgrad=True, weight_decay=0.05, betas=(0.5, 0.9)),
    dict(lr=0.01, maximize=True, weight_decay=0.2),
    dict(lr=0.01, betas=(0.0, 0.0)),
]
IDS = [",".join(f"{k}={v}" for k, v in s.items()) for s in SETTINGS]


@pytest.mark.parametrize("cls, decoupled", [(Adam, False), (AdamW, True)], ids=["Adam", "AdamW"])
@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_adam_matches_reference(cls, decoupled, settings):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((4, 3))
    grads = random_grads(1, (4, 3), steps=8)
    p = lw.tensor(p0, requires_grad=True)
    opt = cls([p], **settings)
    for g in grads:
        p.grad = lw.tensor(g)
        opt.step()
    # AdamW's default weight decay is 1e-2, Adam's 0.
    settings = {"weight_decay": 1e-2 if decoupled else 0.0, **settings}
    expected = adam_reference(p0, grads, decoupled=decoupled, **settings)
    np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14)
    assert opt.state[p]["step"] == len(grads)
    assert ("max_exp_avg_sq" in opt.state[p]) == settings.get("amsgrad", False)


def test_amsgrad_changes_the_result():
    # Guards the reference test above: with these gradients the running max matters.
    p0 = np.ones(12)
    grads = random_grads(1, (12,), steps=8)
    plain = adam_reference(p0, grads, lr=0.05, betas=(0.9, 0.95))
    ams = adam_reference(p0, grads, lr=0.05, betas=(0.9, 0.95), amsgrad=True)
    assert np.abs(plain - ams).max() > 1e-3


def test_adamw_default_weight_decay_is_decoupled():
    p0 = np.array([2.0, -1.0, 0.5])
    g = np.array([0.1, 0.2, -0.3])
    p = lw.tensor(p0, requires_grad=True)
    opt = AdamW([p], lr=0.1)
    assert opt.param_groups[0]["weight_decay"] == 1e-2
    p.grad = lw.tensor(g)
    opt.step()
    # Step 1: m_hat = g and v_hat = g^2, so the Adam step is lr * sign(g) (up to eps).
    expected = p0 * (1 - 0.1 * 1e-2) - 0.1 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(p.data, expected, rtol=1e-12)


def test_adam_param_groups_with_different_lr():
    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal(4), rng.standard_normal((3, 2))
    ga, gb = random_grads(4, (4,), 5), random_grads(5, (3, 2), 5)
    a, b = lw.tensor(a0, requires_grad=True), lw.tensor(b0, requires_grad=True)
    opt = Adam([{"params": [a], "lr": 0.1}, {"params": [b], "weight_decay": 0.1}], lr=0.01)
    for g1, g2 in zip(ga, gb):
        a.grad, b.grad = lw.tensor(g1), lw.tensor(g2)
        opt.step()
    np.testing.assert_allclose(a.data, adam_reference(a0, ga, lr=0.1), rtol=1e-12)
    expected_b = adam_reference(b0, gb, lr=0.01, weight_decay=0.1)
    np.testing.assert_allclose(b.data, expected_b, rtol=1e-12)


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_float32_stays_float32(cls):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(8).astype(np.float32)
    grads = [g.astype(np.float32) for g in random_grads(7, (8,), 5)]
    p = lw.tensor(p0, requires_grad=True)
    opt = cls([p], lr=0.01, weight_decay=0.1, amsgrad=True)
    for g in grads:
        p.grad = lw.tensor(g)
        opt.step()
        np.testing.assert_array_equal(p.grad.data, g)  # L2 decay works on a copy
    assert p.dtype == lw.float32
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert opt.state[p][name].dtype == lw.float32
    expected = adam_reference(p0, [g.astype(np.float64) for g in grads], lr=0.01, weight_decay=0.1,
                              amsgrad=True, decoupled=cls is AdamW)
    np.testing.assert_allclose(p.data, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9,)])
def test_adam_rejects_betas_outside_unit_interval(betas):
    p = lw.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"Invalid betas: expected two numbers in \[0, 1\)"):
        Adam([p], betas=betas)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1e-3), "lr must be a number >= 0, got -0.001"),
    (dict(eps=-1.0), "epsilon value: must be >= 0, got -1.0"),
    (dict(weight_decay=-0.5), "weight_decay value: must be a number >= 0, got -0.5"),
])
def test_adamw_rejects_bad_options(kwargs, message):
    p = lw.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match=message):
        AdamW([p], **kwargs)


def test_adam_minimises_a_quadratic():
    # f(x) = 0.5 * ||A x - b||^2 has its minimum at the solution of A x = b.
    rng = np.random.default_rng(7)
    A_np = rng.standard_normal((5, 5)) + 3 * np.eye(5)
    b_np = rng.standard_normal(5)
    x_star = np.linalg.solve(A_np, b_np)
    A, b = lw.tensor(A_np), lw.tensor(b_np)
    x = lw.tensor(np.zeros(5), requires_grad=True)
    steps = 1500
    opt = Adam([x], lr=0.1)
    scheduler = lw.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)

    def closure():
        opt.zero_grad()
        r = A @ x - b
        loss = (r * r).sum() * 0.5
        loss.backward()
        return loss

    for _ in range(steps):
        loss = opt.step(closure)
        scheduler.step()
    assert math.isfinite(loss.item())
    np.testing.assert_allclose(x.data, x_star, atol=1e-6)
