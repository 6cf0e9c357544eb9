"""sigmoid_focal_loss through the op harness: forward against the float64 NumPy formula of
Lin et al. (2017) as torchvision writes it, gradients against central differences; hard 0/1
targets (a detector's heatmap) and soft targets that take a gradient themselves."""

import inspect

import numpy as np
import pytest

import layerwise as lw
from layerwise.ops import sigmoid_focal_loss
from tests.harness import OpCase, harness_tests


def np_focal(x, t, alpha=0.25, gamma=2, reduction="none"):
    p = 1 / (1 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def hard_targets(shape):
    """0/1 labels fixed by the shape, about a third of them positive."""
    return (np.random.default_rng(7).random(shape) < 0.3).astype(np.float64)


def hard(name, shapes, **kw):
    return OpCase(name, lambda x: sigmoid_focal_loss(x, hard_targets(x.shape), **kw),
                  lambda x: np_focal(x, hard_targets(x.shape), **kw), shapes)


HEATMAP = [((2, 3, 4, 4),), ((7,),)]

CASES = [
    hard("focal_defaults", HEATMAP),
    hard("focal_mean", HEATMAP, reduction="mean"),
    hard("focal_sum_alpha_half_gamma_1_5", [((3, 5),)], alpha=0.5, gamma=1.5, reduction="sum"),
    hard("focal_no_alpha_gamma_0_is_bce", [((3, 5),)], alpha=-1, gamma=0),
    # soft targets in (0.05, 0.95) from the 'unit' domain, logits spread over (-3.6, 3.6)
    OpCase("focal_soft_targets", lambda x, t: sigmoid_focal_loss(4 * x, (t + 1) / 2),
           lambda x, t: np_focal(4 * x, (t + 1) / 2), [((2, 6), (2, 6))], domain="unit"),
]

(test_forward_matches_numpy, test_gradient_matches_finite_differences,
 test_fast_path_matches_reference) = harness_tests(CASES)


def test_signature_is_torchvisions():
    params = inspect.signature(sigmoid_focal_loss).parameters
    assert [(n, p.default) for n, p in params.items()] == [
        ("inputs", inspect.Parameter.empty), ("targets", inspect.Parameter.empty),
        ("alpha", 0.25), ("gamma", 2), ("reduction", "none")]
    assert lw.nn.functional.sigmoid_focal_loss is sigmoid_focal_loss


def test_gamma_0_without_alpha_is_binary_cross_entropy_with_logits():
    rng = np.random.default_rng(3)
    x, t = lw.tensor(rng.standard_normal((4, 6))), hard_targets((4, 6))
    want = lw.nn.functional.binary_cross_entropy_with_logits(x, lw.tensor(t), reduction="sum")
    got = sigmoid_focal_loss(x, t, alpha=-1, gamma=0, reduction="sum")
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-12)


def test_large_logits_stay_finite_and_easy_examples_weigh_little():
    x = lw.tensor(np.array([-200.0, 200.0, 0.0, 200.0]), requires_grad=True)
    t = np.array([0.0, 1.0, 1.0, 0.0])  # two easy, one unsure, one confidently wrong
    loss = sigmoid_focal_loss(x, t)
    loss.sum().backward()
    values = loss.detach().numpy()
    assert np.isfinite(values).all() and np.isfinite(x.grad.numpy()).all()
    assert values[0] == values[1] == 0.0
    np.testing.assert_allclose(values[2], 0.25 * 0.5 ** 2 * np.log(2), rtol=1e-12)
    np.testing.assert_allclose(values[3], 0.75 * 200, rtol=1e-12)


def test_targets_may_be_a_tensor_of_another_dtype_and_float32_stays_float32():
    x = lw.randn(2, 3)
    t = lw.tensor(np.array([[0, 1, 0], [1, 1, 0]]))
    out = sigmoid_focal_loss(x, t, reduction="mean")
    assert out.dtype == lw.float32 and out.shape == ()
    np.testing.assert_allclose(out.item(), np_focal(x.numpy().astype(np.float64), t.numpy(),
                                                    reduction="mean"), rtol=1e-5)


@pytest.mark.parametrize("call,message", [
    (lambda: sigmoid_focal_loss(lw.randn(2, 3), np.zeros((2, 3)), reduction="avg"),
     "reduction must be 'none', 'mean' or 'sum', got 'avg'"),
    (lambda: sigmoid_focal_loss(lw.randn(2, 3), np.zeros((3,))), r"same shape.*\(2, 3\).*\(3,\)"),
])
def test_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_inputs_must_be_a_tensor():
    with pytest.raises(TypeError, match="sigmoid_focal_loss"):
        sigmoid_focal_loss(np.zeros(3), np.zeros(3))
