"""Planted faults in the data are found: copies, near copies, duplicates, rare classes, flips."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from layerwise.audit import data_checks as dc


@pytest.fixture(scope="module")
def small(digits):
    # the splits are stratified and ordered by class: take random subsets
    (xtr, ytr), (xte, yte) = digits["train"], digits["test"]
    i = np.random.default_rng(0).permutation(len(xtr))[:1000]
    j = np.random.default_rng(1).permutation(len(xte))[:200]
    return xtr[i], ytr[i], xte[j], yte[j]


def test_clean_digits_splits_have_no_test_leak(small):
    xtr, _, xte, _ = small
    report = dc.check_contamination(xtr, xte)
    assert report.exact_pairs == [] and report.near_pairs == []


def test_exact_copies_all_flagged_with_their_pairs(small):
    xtr, _, xte, _ = small
    rng = np.random.default_rng(0)
    src = rng.choice(len(xte), 25, replace=False)
    dst = rng.choice(len(xtr), 25, replace=False)
    xtr = xtr.copy()
    xtr[dst] = xte[src]
    report = dc.check_contamination(xtr, xte)
    assert sorted(report.exact_pairs) == sorted(zip(dst.tolist(), src.tolist()))
    assert report.leaked == sorted(src.tolist())  # 100% of the copies, nothing else
    assert "25 of 200 test examples" in report.message()
    assert "--allow-contamination" in report.message()


def test_near_copies_found_at_stated_noise_level(small):
    # sigma 0.04 Gaussian pixel noise (clipped to [0, 1]) is the level stated in data_checks
    xtr, _, xte, _ = small
    rng = np.random.default_rng(1)
    src = rng.choice(len(xte), 25, replace=False)
    dst = rng.choice(len(xtr), 25, replace=False)
    xtr = xtr.copy()
    xtr[dst] = np.clip(xte[src] + rng.normal(0, 0.04, xte[src].shape), 0, 1)
    report = dc.check_contamination(xtr, xte)
    assert report.exact_pairs == []
    pairs = sorted((i, j) for i, j, _ in report.near_pairs)
    assert pairs == sorted(zip(dst.tolist(), src.tolist()))
    assert all(d < dc.NEAR_THRESHOLD for _, _, d in report.near_pairs)
    # the threshold is configurable: at 0 nothing is "near"
    assert dc.check_contamination(xtr, xte, near_threshold=0.0).near_pairs == []


def test_distance_is_rms_of_standardised_rows():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 12)), rng.random((4, 12))
    idx, dist = dc.nearest_distances(a, b)
    za = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    zb = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    ref = np.sqrt(((za[:, None] - zb[None]) ** 2).mean(-1))  # (3, 4) by brute force
    np.testing.assert_array_equal(idx, ref.argmin(1))
    np.testing.assert_allclose(dist, ref.min(1), atol=1e-10)
    # chunked into blocks of one row: the same answer
    idx1, dist1 = dc.nearest_distances(a, b, max_block=1)
    np.testing.assert_array_equal(idx1, idx)
    np.testing.assert_allclose(dist1, dist, atol=1e-12)


def test_contamination_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="784"):
        dc.check_contamination(np.zeros((2, 784)), np.zeros((2, 10)))


def test_duplicates_and_conflicting_labels_within_a_split(small):
    xtr, ytr, _, _ = small
    x, y = xtr[:100].copy(), ytr[:100].copy()
    x[10], y[10] = x[3], y[3]  # duplicate, same label
    x[20], y[20] = x[5], (y[5] + 1) % 10  # duplicate, conflicting label
    out = dc.find_duplicates(x, y)
    assert sorted(map(sorted, out["duplicate_groups"])) == [[3, 10], [5, 20]]
    assert out["conflicting_groups"] == [[5, 20]]


def test_planted_rare_class_flagged(small):
    _, ytr, _, _ = small
    y = ytr[ytr != 3]
    y = np.concatenate([y, np.full(4, 3)])  # class 3: 4 of ~904, under 0.1 x 1/10 = 1%
    out = dc.class_balance(y, 10)
    assert out["rare_classes"] == [3]
    assert out["counts"] == np.bincount(y, minlength=10).tolist()
    assert dc.class_balance(ytr, 10)["rare_classes"] == []


def _blobs(n, k, dim, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, dim))
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def test_label_flips_found_by_confident_learning():
    # 600 points in 4 Gaussian classes, 30 labels flipped (5%); cross-validated probabilities.
    # Measured: 28 candidates, all flipped (precision 1.00), 28 of 30 flips found (recall 0.93).
    x, y = _blobs(600, 4, 10, seed=0)
    rng = np.random.default_rng(1)
    flip = rng.choice(len(y), 30, replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 4, 30)) % 4
    probs = dc.cross_val_probs(x, noisy, 4, folds=5)
    found = dc.find_label_issues(probs, noisy)
    hits = set(found["indices"]) & set(flip.tolist())
    precision, recall = len(hits) / len(found["indices"]), len(hits) / len(flip)
    assert precision >= 0.85 and recall >= 0.85, (precision, recall)
    # ranked by self-confidence, lowest first, and the suggestion is the true class for hits
    sc = found["self_confidence"]
    assert sc == sorted(sc)
    for i, s in zip(found["indices"], found["suggested"]):
        if i in hits:
            assert s == y[i]


def test_confident_learning_thresholds_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.88, 0.12], [0.95, 0.05]])
    labels = np.array([0, 0, 1, 1, 1])
    out = dc.find_label_issues(probs, labels)
    # t0 = mean(0.9, 0.8) = 0.85, t1 = mean(0.9, 0.12, 0.05) = 0.3567. Rows 3 and 4 (labelled
    # 1) have p0 >= t0: issues, suggested 0, ranked by p(label): row 4 (0.05), row 3 (0.12).
    # Row 1 reaches neither threshold, so it is not counted.
    assert out["thresholds"] == pytest.approx([0.85, (0.9 + 0.12 + 0.05) / 3])
    assert out["indices"] == [4, 3]
    assert out["suggested"] == [0, 0]
    assert out["self_confidence"] == pytest.approx([0.05, 0.12])


def test_ks_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    assert dc.ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)


def test_drift_domain_classifier_separates_shifted_data():
    x, _ = _blobs(400, 3, 8, seed=2)
    same = dc.drift_report(x[:200], x[200:])
    shifted = dc.drift_report(x[:200], x[200:] + np.array([2.0] + [0.0] * 7))
    assert abs(same["domain_score"]) < 0.2
    assert shifted["domain_score"] > 0.8
    assert shifted["top_features"][0] == 0  # the shifted feature has the largest KS
