"""Disaggregated metrics: exact per-group rates, interval coverage, Fairlearn's definitions."""

import numpy as np
import pytest

from layerwise.audit import groups as G


def _planted(n_a=300, n_b=100, err_a=30, err_b=30):
    """Group a: err_a errors of n_a; group b (the planted one): err_b errors of n_b."""
    y = np.zeros(n_a + n_b, np.int64)
    pred = y.copy()
    pred[:err_a] = 1
    pred[n_a:n_a + err_b] = 1
    g = np.array(["a"] * n_a + ["b"] * n_b)
    return y, pred, g


def test_planted_subgroup_exact_rates_gap_and_ratio():
    y, pred, g = _planted()
    out = G.group_metrics(y, pred, g)
    a, b = out["groups"]["a"], out["groups"]["b"]
    assert (a["n"], b["n"]) == (300, 100)
    assert a["error_rate"]["value"] == 30 / 300 and b["error_rate"]["value"] == 30 / 100
    assert a["accuracy"]["value"] == 270 / 300 and b["accuracy"]["value"] == 70 / 100
    assert out["gap"]["value"] == pytest.approx(0.9 - 0.7)
    assert (out["gap"]["best"], out["gap"]["worst"]) == ("a", "b")
    assert out["ratio"]["value"] == pytest.approx(0.7 / 0.9)
    lo, hi = b["error_rate"]["ci"]
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert out["warnings"] == []


def test_tpr_fpr_by_hand():
    y = np.array([1, 1, 1, 0, 0, 1, 0, 0])
    p = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    g = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    out = G.group_metrics(y, p, g, small=1)
    assert out["groups"]["0"]["tpr"]["value"] == 2 / 3
    assert out["groups"]["0"]["fpr"]["value"] == 1 / 2
    assert out["groups"]["1"]["tpr"]["value"] == 1.0
    assert out["groups"]["1"]["fpr"]["value"] == 1.0


def test_planted_subgroup_intervals_cover_the_truth_in_at_least_93_of_100_seeds():
    # group "b" (200 examples) errs with probability 0.3, group "a" (400) with 0.1; each seed
    # draws fresh errors and runs the whole per-group evaluation (measured: 95 and 97 of 100)
    hits = {"a": 0, "b": 0}
    g = np.array(["a"] * 400 + ["b"] * 200)
    p_err = np.where(g == "b", 0.3, 0.1)
    y = np.zeros(600, np.int64)
    for seed in range(100):
        pred = (np.random.default_rng(seed).random(600) < p_err).astype(np.int64)
        out = G.group_metrics(y, pred, g)
        for name in hits:
            lo, hi = out["groups"][name]["error_rate"]["ci"]
            hits[name] += lo <= p_err[g == name][0] <= hi
    assert min(hits.values()) >= 93, hits


def test_bootstrap_ci_matches_a_loop():
    values = np.random.default_rng(0).random(50)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 50, size=(200, 50))
    means = [values[row].mean() for row in idx]  # the same draws, one resample at a time
    assert G.bootstrap_ci(values, n_boot=200, seed=7) == pytest.approx(
        tuple(np.quantile(means, [0.025, 0.975])))


def test_small_group_warning():
    y, pred, g = _planted(n_a=300, n_b=12, err_b=3)
    out = G.group_metrics(y, pred, g)
    assert len(out["warnings"]) == 1 and "'b' has only 12 examples" in out["warnings"][0]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="lengths 3, 3, 2"):
        G.group_metrics([0, 1, 0], [0, 1, 1], ["a", "b"])


def test_fairlearn_demographic_parity_and_equalized_odds_by_hand():
    # group a: y = 1 1 0 0, pred 1 0 1 0 -> selection 2/4, TPR 1/2, FPR 1/2
    # group b: y = 1 1 1 0 0 0, pred 1 1 1 0 0 1 -> selection 4/6, TPR 1, FPR 1/3
    y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
    p = np.array([1, 0, 1, 0, 1, 1, 1, 0, 0, 1])
    s = np.array(["a"] * 4 + ["b"] * 6)
    assert G.demographic_parity_difference(y, p, sensitive_features=s) == pytest.approx(
        4 / 6 - 2 / 4)
    # max(TPR diff 1/2, FPR diff 1/2 - 1/3)
    assert G.equalized_odds_difference(y, p, sensitive_features=s) == pytest.approx(0.5)


def test_binary_group_table_carries_fairlearn_differences_multiclass_does_not():
    y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
    p = np.array([1, 0, 1, 0, 1, 1, 1, 0, 0, 1])
    s = np.array(["a"] * 4 + ["b"] * 6)
    fair = G.group_metrics(y, p, s, small=1)["fairness"]
    # by hand (see the test above): selection 2/4 vs 4/6; TPR 1/2 vs 1, FPR 1/2 vs 1/3
    assert fair["demographic_parity_difference"] == pytest.approx(4 / 6 - 2 / 4)
    assert fair["equalized_odds_difference"] == pytest.approx(0.5)
    assert "fairness" not in G.group_metrics(y + 1, p + 1, s, small=1)  # labels 1, 2: no positive
    assert "fairness" not in G.group_metrics(np.arange(10) % 3, p, s, small=1)


def test_a_group_with_every_example_right_gets_an_honest_interval():
    # a bootstrap resamples 40 right answers into 40 right answers: the interval 1.000-1.000.
    # Wilson's bound for 0 errors of n is z^2 / (n + z^2) = 3.8415 / 43.8415 = 0.0876
    y, pred, g = _planted(n_a=40, n_b=60, err_a=0, err_b=6)
    a = G.group_metrics(y, pred, g)["groups"]["a"]
    assert a["accuracy"]["value"] == 1.0 and a["error_rate"]["value"] == 0.0
    assert a["error_rate"]["ci"] == pytest.approx([0.0, 0.0876], abs=1e-4)
    assert a["accuracy"]["ci"] == pytest.approx([1 - 0.0876, 1.0], abs=1e-4)
    # class 0: 3 of 3 recalled; Wilson: (3 / (3 + z^2), 1) = (0.4385, 1)
    recall = G.per_class_metrics([0, 0, 0, 1, 1], [0, 0, 0, 1, 0], 2)["0"]["tpr"]
    assert recall["value"] == 1.0 and recall["ci"] == pytest.approx([0.4385, 1.0], abs=1e-4)
