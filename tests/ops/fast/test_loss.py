"""The cross-entropy's row kernels (layerwise/ops/fast/loss.py) against the reference op and
float64, with ignored rows and every reduction, and where dispatch chooses them."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.autograd import dispatch
from layerwise.ops.fast.loss import CrossEntropyRows
from layerwise.ops.loss import CrossEntropy
from tests.ops.fast.common import needs, path_and_reference

pytestmark = needs(CrossEntropyRows)


@pytest.mark.parametrize("class_weights", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_rows_match_the_reference_and_float64(reduction, class_weights):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((300, 17)) * 6).astype(np.float32)
    t = rng.integers(0, 17, 300)
    t[::7] = -100  # ignored rows
    weights = np.linspace(0.5, 1.5, 300).astype(np.float32)
    probe = weights if reduction == "none" else np.float32(1)
    class_w = rng.uniform(0.1, 3, 17).astype(np.float32) if class_weights else np.ones(17)
    given = lw.tensor(class_w.astype(np.float32)) if class_weights else None
    fn = lambda logits: F.cross_entropy(logits, lw.tensor(t), weight=given, reduction=reduction)
    got, reference = path_and_reference(CrossEntropyRows, fn, [x], probe)
    for a, b in zip(got, reference):
        assert a.dtype == np.float32
        # weighted, the two float32 paths round the weight's product in different places
        np.testing.assert_allclose(a, b, rtol=1e-5 if class_weights else 2e-6, atol=2e-7)
    # and against float64: -log softmax at the target, gradient softmax - one_hot
    x64 = x.astype(np.float64)
    lse = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1)) + x64.max(1)
    keep = t != -100
    row_w = np.where(keep, class_w.astype(np.float64)[np.where(keep, t, 0)], 0)
    rows = row_w * np.where(keep, lse - x64[np.arange(300), np.where(keep, t, 0)], 0)
    grad = np.exp(x64 - lse[:, None])
    grad[np.arange(300)[keep], t[keep]] -= 1
    grad *= row_w[:, None]
    if reduction == "mean":
        want, grad = rows.sum() / row_w.sum(), grad / row_w.sum()
    elif reduction == "sum":
        want = rows.sum()
    else:
        want, grad = rows, grad * weights[:, None]
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], grad, rtol=1e-5, atol=1e-7)


def test_every_target_ignored_gives_a_nan_mean_and_no_gradient_on_both_paths():
    x = np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32)
    fn = lambda logits: F.cross_entropy(logits, lw.tensor([-100] * 4))
    with np.errstate(invalid="ignore"):  # the mean of no terms, 0 / 0: NaN, as in PyTorch
        got, reference = path_and_reference(CrossEntropyRows, fn, [x], np.float32(1))
        t64 = lw.tensor(x.astype(np.float64), requires_grad=True)
        loss64 = fn(t64)
        loss64.backward()
    for loss, grad in (got, reference, (loss64.detach().numpy(), t64.grad.numpy())):
        assert np.isnan(loss)
        np.testing.assert_array_equal(grad, np.zeros((4, 5)))


def _chosen(**call):
    rng = np.random.default_rng(8)
    logits = call.pop("logits", rng.standard_normal((6, 4)).astype(np.float32))
    target = call.pop("target", lw.tensor([0, 3, 1, 1, 2, 0]))
    with dispatch.traced() as calls:
        F.cross_entropy(lw.tensor(logits), target, **call)
    (call,) = [c for c in calls if c[0] is CrossEntropy]
    return dispatch.choose(*call)


@pytest.mark.parametrize("case, fast", [
    ("class indices", True), ("(N, C, d) logits", True), ("float64 logits", False),
    ("class weights", True), ("label smoothing", False), ("class probabilities", False)])
def test_cross_entropy_rows_run_only_for_float32_class_indices(case, fast):
    rng = np.random.default_rng(9)
    call = {
        "class indices": {},
        "(N, C, d) logits": {"logits": rng.standard_normal((2, 4, 3)).astype(np.float32),
                             "target": lw.tensor([[0, 3, 1], [1, 2, 0]])},
        "float64 logits": {"logits": rng.standard_normal((6, 4))},
        "class weights": {"weight": lw.tensor([1.0, 2.0, 1.0, 0.5])},
        "label smoothing": {"label_smoothing": 0.1},
        "class probabilities": {"target": lw.tensor(np.full((6, 4), 0.25, np.float32))},
    }[case]
    assert _chosen(**call) is (CrossEntropyRows if fast else CrossEntropy)
