import numpy as np
import pytest

import layerwise as lw
from layerwise import nn, optim
from layerwise.autograd import Tensor
from layerwise.autograd.gradcheck import gradcheck
from layerwise.compress import distill, distillation_loss
from layerwise.data import DataLoader, TensorDataset


def _logits(seed, shape=(4, 5), dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype),
                  requires_grad=True)


def _reference(s, t, y, temp, alpha):
    """NumPy float64: alpha T^2 KL(p_t || p_s) + (1 - alpha) CE, batch means."""
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ls, lt = log_softmax(s / temp), log_softmax(t / temp)
    kl = (np.exp(lt) * (lt - ls)).sum(axis=1).mean()
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    return alpha * temp ** 2 * kl + (1 - alpha) * ce


def test_alpha_zero_is_cross_entropy():
    s, t = _logits(0), _logits(1)
    y = lw.tensor([0, 3, 1, 4])
    got = distillation_loss(s, t, y, temperature=3.0, alpha=0.0)
    assert float(got.data) == pytest.approx(float(nn.functional.cross_entropy(s, y).data))


def test_matches_reference_and_applies_t_squared():
    s, t = _logits(0), _logits(1)
    y = lw.tensor([0, 3, 1, 4])
    for temp, alpha in ((1.0, 0.5), (4.0, 0.9), (2.0, 1.0)):
        got = float(distillation_loss(s, t, y, temp, alpha).data)
        assert got == pytest.approx(_reference(s.data, t.data, y.data, temp, alpha), rel=1e-10)
    # alpha = 1: the soft term alone, exactly T^2 times the KL at that temperature
    kl_at_4 = _reference(s.data, t.data, y.data, 4.0, 1.0) / 16
    assert float(distillation_loss(s, t, y, 4.0, 1.0).data) == pytest.approx(16 * kl_at_4)


def test_gradcheck():
    s, t = _logits(0), _logits(1)
    y = lw.tensor([0, 3, 1, 4])
    assert gradcheck(lambda a: distillation_loss(a, t, y, temperature=2.5, alpha=0.7), [s])
    distillation_loss(s, t, y, 2.5, 0.7).backward()
    assert t.grad is None  # the teacher gets no gradient


def test_distill_trains_a_student_towards_the_teacher():
    lw.manual_seed(0)
    x = lw.randn(128, 8)
    teacher = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))
    with lw.no_grad():
        y = Tensor(teacher(x).data.argmax(axis=1))
    student = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, seed=0)
    history = distill(teacher, student, loader, optim.Adam(student.parameters(), lr=1e-2),
                      epochs=15, temperature=2.0, alpha=0.8)
    assert history[-1] < 0.8 * history[0]
    with lw.no_grad():
        agree = (student(x).data.argmax(axis=1) == y.data).mean()
    assert agree > 0.85
    with pytest.raises(ValueError, match="1.5"):
        distillation_loss(x[:2, :4], x[:2, :4], y[:2], alpha=1.5)
