"""Losses against NumPy float64 references written from PyTorch's documented formulas,
gradients against finite differences, and the argument checks."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn as nn
import layerwise.nn.functional as F
from layerwise.autograd import gradcheck

REDUCTIONS = ["mean", "sum", "none"]


def t64(array, requires_grad=False):
    return lw.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def _log_softmax(x, axis=1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def ce_reference(x, t, weight=None, ignore_index=-100, reduction="mean", eps=0.0):
    """PyTorch's cross-entropy on (N, C, d...) with class dim 1, computed along axis 1.

    Class indices: (1 - eps) * nll + eps / C * smooth, both weighted by w, ignored targets
    zeroed; 'mean' divides by the summed weights of the kept targets.
    Probabilities: -sum_c w_c * ((1 - eps) t_c + eps / C) * logp_c; 'mean' divides by N*d...
    """
    c = x.shape[1]
    logp = _log_softmax(x, axis=1)
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    wshape = (1, c) + (1,) * (x.ndim - 2)
    if np.issubdtype(t.dtype, np.floating):
        soft = (1 - eps) * t + eps / c
        loss = -(logp * soft * w.reshape(wshape)).sum(axis=1)
        denom = loss.size
    else:
        keep = t != ignore_index
        safe = np.where(keep, t, 0)
        picked = np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
        nll = -picked * w[safe] * keep
        smooth = -(logp * w.reshape(wshape)).sum(axis=1) * keep
        loss = (1 - eps) * nll + eps / c * smooth
        denom = (w[safe] * keep).sum()
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / denom


CE_CASES = [
    dict(),
    dict(weight=[0.2, 1.0, 3.0, 0.5]),
    dict(ignore_index=1),
    dict(weight=[0.2, 1.0, 3.0, 0.5], ignore_index=2, eps=0.1),
    dict(eps=0.25),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CE_CASES, ids=lambda c: ",".join(c) or "plain")
@pytest.mark.parametrize("shape", [(6, 4), (2, 4, 3), (2, 4, 2, 2)])
def test_cross_entropy_class_indices(shape, case, reduction):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2
    t = rng.integers(0, 4, size=shape[:1] + shape[2:])
    t.flat[0] = case.get("ignore_index", 0)  # make sure an ignored target occurs
    expected = ce_reference(
        x, t, case.get("weight"), case.get("ignore_index", -100), reduction, case.get("eps", 0.0)
    )
    kwargs = dict(
        weight=None if "weight" not in case else t64(case["weight"]),
        ignore_index=case.get("ignore_index", -100),
        reduction=reduction,
        label_smoothing=case.get("eps", 0.0),
    )
    out = F.cross_entropy(t64(x), lw.tensor(t), **kwargs)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)
    assert gradcheck(
        lambda x: F.cross_entropy(x, lw.tensor(t), **kwargs), [t64(x, requires_grad=True)]
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps, weight", [(0.0, None), (0.2, [1.0, 2.0, 0.5])])
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4)])
def test_cross_entropy_probability_targets(shape, eps, weight, reduction):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    probs = rng.random(shape)
    probs /= probs.sum(axis=1, keepdims=True)
    expected = ce_reference(x, probs, weight, reduction=reduction, eps=eps)
    fn = lambda x: F.cross_entropy(
        x, t64(probs), weight=weight and t64(weight), reduction=reduction, label_smoothing=eps
    )
    np.testing.assert_allclose(fn(t64(x)).data, expected, rtol=1e-10, atol=1e-12)
    assert gradcheck(fn, [t64(x, requires_grad=True)])


def test_cross_entropy_unbatched_and_float32():
    x = np.array([0.5, -1.0, 2.0])
    out = F.cross_entropy(t64(x), lw.tensor(2))
    np.testing.assert_allclose(out.data, -_log_softmax(x[None])[0, 2], rtol=1e-12)
    out32 = F.cross_entropy(lw.tensor([[0.5, -1.0, 2.0]]), lw.tensor([2]))
    assert out32.dtype == lw.float32


def test_cross_entropy_module_matches_functional_and_keeps_weight_as_buffer():
    rng = np.random.default_rng(2)
    x, t = t64(rng.standard_normal((5, 3))), lw.tensor(rng.integers(0, 3, 5))
    w = lw.tensor([1.0, 2.0, 3.0], dtype=lw.float64)
    loss = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction="sum")
    np.testing.assert_allclose(
        loss(x, t).data, F.cross_entropy(x, t, w, reduction="sum", label_smoothing=0.1).data
    )
    assert list(loss.state_dict()) == ["weight"]


def test_cross_entropy_label_out_of_range_message():
    with pytest.raises(ValueError) as info:
        F.cross_entropy(lw.zeros(3, 10), lw.tensor([1, 12, 3]))
    assert str(info.value) == (
        "cross_entropy target 12 is out of range for 10 classes: labels must be "
        "in [0, 9] (or equal ignore_index=-100)"
    )
    with pytest.raises(ValueError, match="target -1 is out of range"):
        F.cross_entropy(lw.zeros(2, 10), lw.tensor([-1, 0]))


@pytest.mark.parametrize(
    "target, error, pattern",
    [
        (
            lw.tensor([1, 2]),
            ValueError,
            r"target of shape \(3,\) .*input of shape \(3, 10\).*got target of shape \(2,\)",
        ),
        (lw.tensor([[1], [2], [3]]), ValueError, r"shape \(3,\)"),
        (
            lw.tensor([1.0, 2.0, 0.0]),
            ValueError,
            r"float target of shape \(3,\).*\(3, 10\).*integers",
        ),
        (lw.tensor([True, False, True]), TypeError, "dtype bool"),
    ],
)
def test_cross_entropy_bad_targets(target, error, pattern):
    with pytest.raises(error, match=pattern):
        F.cross_entropy(lw.zeros(3, 10), target)


def test_loss_argument_errors():
    x = lw.zeros(3, 4)
    with pytest.raises(ValueError, match="'avg'"):
        F.cross_entropy(x, lw.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match=r"\(4,\).*\(2,\)"):
        F.cross_entropy(x, lw.tensor([0, 1, 2]), weight=lw.ones(2))
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(3,\)"):
        F.mse_loss(lw.zeros(3, 1), lw.zeros(3))
    with pytest.raises(TypeError, match="long"):
        F.nll_loss(x, lw.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="total")


def nll_reference(x, t, weight, ignore_index, reduction):
    c = x.shape[1]
    w = np.ones(c) if weight is None else np.asarray(weight)
    keep = t != ignore_index
    safe = np.where(keep, t, 0)
    picked = np.take_along_axis(x, safe[:, None], axis=1)[:, 0]
    loss = -picked * w[safe] * keep
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / (w[safe] * keep).sum()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight, ignore_index", [(None, -100), ([0.5, 2.0, 1.0], 0)])
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2)])
def test_nll_loss(shape, weight, ignore_index, reduction):
    rng = np.random.default_rng(3)
    x = _log_softmax(rng.standard_normal(shape))
    t = rng.integers(0, 3, size=shape[:1] + shape[2:])
    t.flat[-1] = 0
    fn = lambda x: F.nll_loss(x, lw.tensor(t), weight and t64(weight), ignore_index, reduction)
    np.testing.assert_allclose(
        fn(t64(x)).data, nll_reference(x, t, weight, ignore_index, reduction), rtol=1e-12
    )
    assert gradcheck(fn, [t64(x, requires_grad=True)])
    # nll of log_softmax is cross-entropy
    logits = rng.standard_normal(shape)
    np.testing.assert_allclose(
        F.nll_loss(F.log_softmax(t64(logits), 1), lw.tensor(t), reduction=reduction).data,
        F.cross_entropy(t64(logits), lw.tensor(t), reduction=reduction).data,
        rtol=1e-12,
    )


def _reduce(loss, reduction):
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 2, 3)])
def test_mse_and_l1(shape, reduction):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    for fn, ref in ((F.mse_loss, (x - y) ** 2), (F.l1_loss, np.abs(x - y))):
        np.testing.assert_allclose(
            fn(t64(x), t64(y), reduction).data, _reduce(ref, reduction), rtol=1e-12
        )
        assert gradcheck(lambda a, b, fn=fn: fn(a, b, reduction), [t64(x, True), t64(y, True)])
    module = nn.MSELoss(reduction=reduction)
    np.testing.assert_allclose(
        module(t64(x), t64(y)).data, _reduce((x - y) ** 2, reduction), rtol=1e-12
    )


def bce_logits_reference(x, y, weight=None, pos_weight=None):
    # The definition, not the stable form: -[pw y log s(x) + (1 - y) log(1 - s(x))] * w.
    s = 1 / (1 + np.exp(-x))
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight)
    w = 1.0 if weight is None else np.asarray(weight)
    return -(pw * y * np.log(s) + (1 - y) * np.log(1 - s)) * w


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "weight, pos_weight",
    [
        (None, None),
        ([0.5, 1.0, 2.0], None),
        (None, [3.0, 1.0, 0.2]),
        ([1.0, 0.0, 2.0], [2.0, 2.0, 0.5]),
    ],
)
@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 3)])
def test_bce_with_logits(shape, weight, pos_weight, reduction):
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(shape) * 3, rng.random(shape)
    expected = _reduce(bce_logits_reference(x, y, weight, pos_weight), reduction)
    wt = weight and t64(weight)
    pw = pos_weight and t64(pos_weight)
    fn = lambda x: F.binary_cross_entropy_with_logits(x, t64(y), wt, pw, reduction)
    np.testing.assert_allclose(fn(t64(x)).data, expected, rtol=1e-10)
    assert gradcheck(fn, [t64(x, requires_grad=True)])
    module = nn.BCEWithLogitsLoss(weight=wt, pos_weight=pw, reduction=reduction)
    np.testing.assert_allclose(module(t64(x), t64(y)).data, expected, rtol=1e-10)


def test_bce_with_logits_is_stable_and_exact_at_zero():
    x = t64([-1000.0, 0.0, 1000.0], requires_grad=True)
    y = t64([1.0, 0.0, 0.0])
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(loss.data, [1000.0, np.log(2), 1000.0], rtol=1e-12)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.data, [-1.0, 0.5, 1.0])  # sigmoid(x) - y


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_on_probabilities(reduction):
    rng = np.random.default_rng(6)
    p, y = rng.uniform(0.05, 0.95, (4, 3)), rng.random((4, 3))
    expected = _reduce(-(y * np.log(p) + (1 - y) * np.log(1 - p)), reduction)
    fn = lambda p: F.binary_cross_entropy(p, t64(y), reduction=reduction)
    np.testing.assert_allclose(fn(t64(p)).data, expected, rtol=1e-12)
    assert gradcheck(fn, [t64(p, requires_grad=True)])
    edge = F.binary_cross_entropy(t64([0.0, 1.0]), t64([1.0, 0.0]), reduction="none")
    np.testing.assert_allclose(edge.data, [100.0, 100.0])  # PyTorch clamps log at -100
    with pytest.raises(ValueError, match="logits"):
        F.binary_cross_entropy(t64([1.5]), t64([1.0]))


def test_nll_loss_is_one_node_with_every_reduction_weight_and_ignored_row():
    """Against NumPy float64 by hand: -log_probs[i, t_i] * w[t_i], ignored rows dropped, 'mean'
    over the kept rows' weights; the gradient -w[t_i] (scaled) at the picked places only; every
    row ignored gives a NaN mean and no gradient, as cross_entropy does."""
    import numpy as np

    import layerwise as lw
    import layerwise.nn.functional as F

    rng = np.random.default_rng(0)
    logp = rng.standard_normal((5, 4))
    target = np.array([0, 3, -100, 3, 1])
    weight = np.array([1.0, 2.0, 0.5, 3.0])
    kept = target != -100
    picked = logp[np.arange(5)[kept], target[kept]] * weight[target[kept]]
    for reduction, expected in (("sum", -picked.sum()), ("mean", -picked.sum() / weight[target[kept]].sum())):
        x = lw.tensor(logp, requires_grad=True)
        loss = F.nll_loss(x, lw.tensor(target), weight=lw.tensor(weight), reduction=reduction)
        loss.backward()
        assert type(loss.grad_fn).__name__ == "NLLLoss"
        np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)
        grad = np.zeros((5, 4))
        scale = 1.0 if reduction == "sum" else 1 / weight[target[kept]].sum()
        grad[np.arange(5)[kept], target[kept]] = -weight[target[kept]] * scale
        np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-12)
    x = lw.tensor(logp, requires_grad=True)
    loss = F.nll_loss(x, lw.tensor(np.full(5, -100)))
    loss.backward()
    assert np.isnan(loss.item()) and not x.grad.numpy().any()
    assert lw.autograd.gradcheck(lambda a: F.nll_loss(a, lw.tensor(target), reduction="none"),
                                 [lw.tensor(logp, requires_grad=True)])
