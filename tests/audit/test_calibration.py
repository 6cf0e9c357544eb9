"""Calibration: ECE/MCE over 15 equal-width bins and temperature scaling."""

import numpy as np
import pytest

from layerwise.audit import calibration as C


def _ece_loop(probs, labels, n_bins=15):
    # the textbook definition, one bin at a time
    conf, pred = probs.max(1), probs.argmax(1)
    ece, n = 0.0, len(labels)
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        m = (conf > lo) & (conf <= hi) if k else (conf >= 0) & (conf <= hi)
        if m.any():
            ece += m.sum() / n * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return ece


def test_ece_matches_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (500, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 500)
    assert C.calibration_error(probs, labels)["ece"] == pytest.approx(_ece_loop(probs, labels))


def test_perfectly_calibrated_probabilities_have_ece_near_zero():
    # binary: confidence c in [0.5, 1], correct with probability exactly c
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, n)
    labels = np.where(rng.random(n) < conf, 0, 1)
    probs = np.stack([conf, 1 - conf], 1)
    assert C.calibration_error(probs, labels)["ece"] < 0.005


def test_confidence_one_at_half_accuracy_is_exactly_one_half():
    probs = np.tile([1.0, 0.0], (10, 1))
    labels = np.array([0, 1] * 5)
    out = C.calibration_error(probs, labels)
    assert out["ece"] == 0.5 and out["mce"] == 0.5
    assert out["bins"][-1]["count"] == 10  # 1.0 falls in the last bin


def test_temperature_scaling_recovers_a_planted_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (4000, 10))
    # labels drawn from softmax(z / 2): the logits are twice too confident
    p = C.softmax(z, 2.0)
    labels = (rng.random((4000, 1)) > p.cumsum(1)).sum(1)
    t = C.fit_temperature(z, labels)
    assert t == pytest.approx(2.0, rel=0.1)
    assert C.nll(z, labels, t) <= C.nll(z, labels, 1.0)
    np.testing.assert_array_equal(C.softmax(z, t).argmax(1), z.argmax(1))


def test_temperature_never_raises_nll_on_calibrated_logits():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, (2000, 4))
    labels = (rng.random((2000, 1)) > C.softmax(z).cumsum(1)).sum(1)
    t = C.fit_temperature(z, labels)
    assert C.nll(z, labels, t) <= C.nll(z, labels, 1.0)
    assert t == pytest.approx(1.0, rel=0.15)


def test_temperature_scaling_on_the_digits_model(digits_mlp, digits):
    from layerwise.audit.report import predict_logits

    (xv, yv), (xt, yt) = digits["val"], digits["test"]
    lv, lt = predict_logits(digits_mlp, xv), predict_logits(digits_mlp, xt)
    t = C.fit_temperature(lv, yv)
    before = C.calibration_error(C.softmax(lt), yt)["ece"]
    after = C.calibration_error(C.softmax(lt, t), yt)["ece"]
    assert C.nll(lv, yv, t) <= C.nll(lv, yv)
    # label smoothing makes the recipe's model underconfident: T < 1 sharpens it
    assert t < 1 and after < before


def test_bad_shapes_are_an_error():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        C.calibration_error(np.ones(3), np.zeros(3))
