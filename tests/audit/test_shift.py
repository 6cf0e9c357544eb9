"""OOD scores, AUROC and corruptions."""

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from layerwise.audit import shift as S


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert S.auroc(pos, neg) == pytest.approx(pairs / (40 * 30))
    assert S.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0 and S.auroc([0.0], [1.0]) == 0.0


def test_scores_match_scipy():
    z = np.random.default_rng(0).normal(0, 3, (20, 7))
    np.testing.assert_allclose(S.max_softmax(z), softmax(z, axis=1).max(1), rtol=1e-12)
    np.testing.assert_allclose(S.energy_score(z), logsumexp(z, axis=1), rtol=1e-12)


def test_max_softmax_auroc_against_uniform_noise_on_the_digits_model(digits_mlp, digits):
    from layerwise.audit.report import predict_logits

    x, _ = digits["test"]
    scores_in = S.max_softmax(predict_logits(digits_mlp, x))
    scores_out = S.max_softmax(predict_logits(digits_mlp, S.uniform_noise_like(x, seed=0)))
    assert S.auroc(scores_in, scores_out) >= 0.9


@pytest.mark.parametrize("kind", S.CORRUPTIONS)
def test_corruptions_keep_range_and_grow_with_severity(kind):
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    x[:, :, :4] = 0  # an empty border, as in MNIST
    changes = []
    for s in S.SEVERITIES:
        out = S.corrupt(x, kind, s)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        changes.append(np.abs(out - x).mean())
    assert all(a < b for a, b in itertools.pairwise(changes)), changes


def test_shift_and_darker_by_hand():
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 1, 2] = 0.8
    out = S.corrupt(x, "shift", 2)
    assert out[0, 0, 3, 4] == pytest.approx(0.8) and out.sum() == pytest.approx(0.8)
    assert S.corrupt(x, "darker", 1)[0, 0, 1, 2] == pytest.approx(0.8 * 0.85)


def test_blur_is_a_box_average():
    x = np.zeros((1, 1, 7, 7))
    x[0, 0, 3, 3] = 9.0 / 9
    out = S.corrupt(x, "blur", 1)  # 3x3 box
    np.testing.assert_allclose(out[0, 0, 2:5, 2:5], np.full((3, 3), 1 / 9), rtol=1e-6)
    assert out[0, 0].sum() == pytest.approx(1.0, rel=1e-6)


def test_bad_corruption_names_the_choices():
    with pytest.raises(ValueError, match="'fog'.*darker"):
        S.corrupt(np.zeros((1, 1, 4, 4)), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        S.corrupt(np.zeros((1, 1, 4, 4)), "blur", 6)


def test_corruption_table_uses_the_predictions():
    x = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    labels = np.zeros(10, np.int64)

    def predict(images):  # "0" while the mean brightness stays above 0.3
        return (images.reshape(len(images), -1).mean(1) < 0.3).astype(np.int64)

    table = S.corruption_table(predict, x, labels, kinds=("darker",))
    assert table["clean"] == 1.0
    # darker multiplies by 1 - 0.15 s; mean ~0.5 drops below 0.3 from severity 3 on (0.55)
    means = [S.corrupt(x, "darker", s).reshape(10, -1).mean(1) for s in S.SEVERITIES]
    assert table["darker"] == [float(np.mean(m >= 0.3)) for m in means]
