"""The audit on people: per-column and intersectional metrics against fairlearn's MetricFrame,
Wilson and Newcombe intervals against published values, regression against NumPy float64."""

import json

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, count, false_negative_rate, false_positive_rate
from sklearn.metrics import accuracy_score

from layerwise.audit import (
    MIN_CELL,
    calibration_error,
    disaggregate,
    newcombe_interval,
    wilson_interval,
)

Z2 = 1.959963984540054 ** 2  # the 95% two-sided normal quantile, squared


def _people(seed, n=900):
    """Unbalanced sex and race, a binary task with about 20% errors; three planted cells:
    sex=F, race=c answered perfectly; race=d only 3 examples, all men (so sex=F, race=d is an
    empty intersection), all wrong."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n, p=[0.3, 0.7])
    race = rng.choice(["a", "b", "c"], n, p=[0.75, 0.18, 0.07])
    race[:3], sex[:3] = "d", "M"
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.2, 1 - y, y)
    pred[(sex == "F") & (race == "c")] = y[(sex == "F") & (race == "c")]
    pred[:3] = 1 - y[:3]
    return y, pred, {"sex": sex, "race": race}


def _cells(result, name):
    (b,) = [b for b in result["breakdowns"] if b["name"] == name]
    return b, {tuple(c["values"].values()): c for c in b["cells"]}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_cell_of_each_column_and_their_intersection_equals_fairlearn(seed):
    y, pred, groups = _people(seed)
    result = disaggregate(y, pred, groups)
    metrics = {"accuracy": accuracy_score, "fpr": false_positive_rate,
               "fnr": false_negative_rate, "count": count}
    for columns in (["sex"], ["race"], ["sex", "race"]):
        frame = MetricFrame(metrics=metrics, y_true=y, y_pred=pred,
                            sensitive_features={c: groups[c] for c in columns}).by_group
        breakdown, cells = _cells(result, " x ".join(columns))
        for key, ref in frame.iterrows():
            key = key if isinstance(key, tuple) else (key,)
            if np.isnan(ref["count"]):  # fairlearn's NaN row: a combination with no example
                assert dict(zip(columns, key)) in breakdown["empty"]
                assert key not in cells
                continue
            cell = cells[key]
            assert cell["n"] == ref["count"]
            assert cell["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)
            assert cell["error_rate"]["value"] == pytest.approx(1 - ref["accuracy"], abs=1e-12)
            for rate in ("fpr", "fnr"):
                if cell[rate]["of"] == 0:  # no negatives (positives): undefined, fairlearn's 0
                    assert cell[rate]["value"] is None and ref[rate] == 0
                    continue
                assert cell[rate]["value"] == pytest.approx(ref[rate], abs=1e-12), (key, rate)
        assert len(cells) == int((~np.isnan(frame["count"])).sum())
    overall = MetricFrame(metrics=metrics, y_true=y, y_pred=pred,
                          sensitive_features=groups["sex"]).overall
    assert result["overall"]["n"] == overall["count"] == len(y)
    assert json.loads(json.dumps(result)) == result  # card.json takes it as it is
    assert result["overall"]["fpr"]["value"] == pytest.approx(overall["fpr"], abs=1e-12)
    assert result["overall"]["fnr"]["value"] == pytest.approx(overall["fnr"], abs=1e-12)


def test_a_cell_with_every_example_right_gets_an_upper_bound_above_zero():
    y, pred, groups = _people(0)
    _, cells = _cells(disaggregate(y, pred, groups), "sex x race")
    perfect = cells[("F", "c")]
    n = perfect["n"]
    assert perfect["accuracy"] == 1.0 and perfect["error_rate"]["count"] == 0
    # Wilson at 0 of n: (0, z^2 / (n + z^2))
    assert perfect["error_rate"]["ci"] == pytest.approx([0.0, Z2 / (n + Z2)], abs=1e-12)
    assert perfect["error_rate"]["ci"][1] > 0


def test_wilson_interval_against_published_values():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", the score
    # method on his four examples
    for (k, n), published in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                              (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        assert wilson_interval(k, n) == pytest.approx(published, abs=1e-4), (k, n)
    # by hand to four places: 0, 5 and 10 errors of 10
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    # the closed form at the edges: 0 of n -> (0, z^2 / (n + z^2)), n of n -> (n / (n + z^2), 1)
    assert wilson_interval(0, 37)[1] == pytest.approx(Z2 / (37 + Z2), rel=1e-12)
    assert wilson_interval(37, 37)[0] == pytest.approx(37 / (37 + Z2), rel=1e-12)


def test_newcombe_gap_interval_against_his_worked_example():
    # Newcombe (1998) "Interval estimation for the difference between independent
    # proportions", example (a): 56/70 - 48/80, method 10 gives 0.0524 to 0.3339
    first = {"value": 56 / 70, "ci": list(wilson_interval(56, 70))}
    second = {"value": 48 / 80, "ci": list(wilson_interval(48, 80))}
    assert newcombe_interval(first, second) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_worst_cell_gap_and_ratio_by_hand():
    # a: 30 errors of 300 (0.1); b: 30 of 100 (0.3); c: 2 of 4 (too small to rank)
    y = np.zeros(404, np.int64)
    pred = y.copy()
    pred[:30] = 1
    pred[300:330] = 1
    pred[400:402] = 1
    g = np.array(["a"] * 300 + ["b"] * 100 + ["c"] * 4)
    result = disaggregate(y, pred, {"site": g})
    assert result["primary"] == "error_rate"
    cmp = result["breakdowns"][0]["compare"]["error_rate"]
    assert (cmp["worst"], cmp["best"]) == ("site=b", "site=a")
    assert cmp["gap"] == pytest.approx(0.2) and cmp["ratio"] == pytest.approx(3.0)
    assert cmp["basis"] == f"cells with at least {MIN_CELL} examples"
    wa, wb = wilson_interval(30, 300), wilson_interval(30, 100)
    lo = 0.2 - np.sqrt((0.3 - wb[0]) ** 2 + (wa[1] - 0.1) ** 2)
    hi = 0.2 + np.sqrt((wb[1] - 0.3) ** 2 + (0.1 - wa[0]) ** 2)
    assert cmp["gap_ci"] == pytest.approx([lo, hi], abs=1e-12)
    assert "fpr" in result["breakdowns"][0]["compare"]  # labels 0/1: binary, positive 1
    assert "fnr" not in result["breakdowns"][0]["compare"]  # no positives at all
    assert len(result["warnings"]) == 1
    assert "site=c" in result["warnings"][0] and f"fewer than {MIN_CELL}" in result["warnings"][0]


def test_tiny_cell_is_reported_and_warned_but_not_ranked():
    y, pred, groups = _people(1)
    result = disaggregate(y, pred, groups)
    breakdown, cells = _cells(result, "race")
    tiny = cells[("d",)]
    assert tiny["n"] == 3 and tiny["small"] and tiny["error_rate"]["value"] == 1.0
    assert tiny["error_rate"]["ci"] == pytest.approx([3 / (3 + Z2), 1.0], abs=1e-12)
    assert breakdown["compare"]["error_rate"]["worst"] != "race=d"
    assert any(w.startswith("race: ") and "race=d" in w for w in result["warnings"])
    assert any(w.startswith("sex x race: ") and "no examples" in w and "sex=F, race=d" in w
               for w in result["warnings"])
    # with min_cell=1 every cell is ranked, and the tiny all-wrong one is the worst
    ranked = disaggregate(y, pred, groups, min_cell=1)
    assert _cells(ranked, "race")[0]["compare"]["error_rate"]["worst"] == "race=d"


def test_ratio_is_none_when_the_best_cell_has_no_errors():
    y = np.zeros(80, np.int64)
    pred = y.copy()
    pred[:10] = 1
    g = np.array(["x"] * 40 + ["y"] * 40)
    cmp = disaggregate(y, pred, {"g": g})["breakdowns"][0]["compare"]["error_rate"]
    assert cmp["best"] == "g=y" and cmp["best_value"] == 0.0 and cmp["ratio"] is None
    assert "unbounded" in cmp["ratio_note"]


def ece_by_hand(conf, correct, bins=15):
    # bins (k/15, (k+1)/15], confidence 0 in the first; a loop over bins, not calibration.py
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inside = (conf > lo) & (conf <= hi) if k else (conf <= hi)
        if inside.any():
            total += inside.sum() / len(conf) * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_calibration_per_cell_for_binary_and_multiclass_probabilities():
    rng = np.random.default_rng(5)
    y, pred, groups = _people(5)
    p1 = np.clip(np.where(pred == 1, 0.8, 0.2) + rng.normal(0, 0.1, len(y)), 0, 1)
    one_d = disaggregate(y, pred, groups, proba=p1)
    two_d = disaggregate(y, pred, groups, proba=np.stack([1 - p1, p1], axis=1))
    for name in ("sex", "sex x race"):
        _, cells = _cells(one_d, name)
        _, cells2 = _cells(two_d, name)
        for key, cell in cells.items():
            m = np.all([groups[c] == v for c, v in cell["values"].items()], axis=0)
            conf = np.maximum(p1[m], 1 - p1[m])
            top = np.where(p1[m] > 1 - p1[m], 1, 0)  # a tie goes to the first class
            correct = top == y[m]
            assert cell["ece"] == pytest.approx(ece_by_hand(conf, correct), abs=1e-12), key
            assert cells2[key]["ece"] == pytest.approx(cell["ece"], abs=1e-12)
    assert "calibration error" in one_d["calibration"]
    probs = rng.dirichlet(np.ones(3), size=300)
    labels = rng.integers(0, 3, 300)
    g = np.array(["u", "v"] * 150)
    result = disaggregate(labels, probs.argmax(1), {"g": g}, proba=probs)
    assert result["positive"] is None and "fpr" not in result["overall"]
    for cell in result["breakdowns"][0]["cells"]:
        m = g == cell["values"]["g"]
        assert cell["ece"] == pytest.approx(calibration_error(probs[m], labels[m])["ece"])
    assert "no probabilities" in disaggregate(labels, labels, {"g": g})["calibration"]


def test_regression_mae_rmse_r2_per_cell_against_numpy_float64():
    rng = np.random.default_rng(3)
    n = 400
    sex = rng.choice(["F", "M"], n, p=[0.4, 0.6])
    age = rng.choice(["<40", "40-60", ">60"], n)
    y = rng.normal(150, 60, n)
    pred = (y + rng.normal(0, 40, n) + np.where(sex == "F", 15, 0)).astype(np.float32)
    result = disaggregate(y, pred, {"sex": sex, "age": age}, task="regression", seed=1)
    assert result["primary"] == "mae"
    assert result["calibration"].startswith("not available without predictive intervals")
    for breakdown in result["breakdowns"]:
        for cell in breakdown["cells"]:
            m = np.all([{"sex": sex, "age": age}[c] == v for c, v in cell["values"].items()],
                       axis=0)
            e = pred[m].astype(np.float64) - y[m]
            assert cell["n"] == m.sum()
            assert cell["mae"]["value"] == pytest.approx(np.abs(e).mean(), rel=1e-12)
            assert cell["rmse"]["value"] == pytest.approx(np.sqrt((e ** 2).mean()), rel=1e-12)
            r2 = 1 - (e ** 2).sum() / ((y[m] - y[m].mean()) ** 2).sum()
            assert cell["r2"] == pytest.approx(r2, rel=1e-12)
            lo, hi = cell["mae"]["ci"]
            assert lo < cell["mae"]["value"] < hi
            lo, hi = cell["rmse"]["ci"]
            assert lo < cell["rmse"]["value"] < hi
    cmp = result["breakdowns"][0]["compare"]["mae"]
    assert cmp["worst"] == "sex=F"  # the planted bias of +15
    again = disaggregate(y, pred, {"sex": sex, "age": age}, task="regression", seed=1)
    assert again["overall"]["mae"]["ci"] == result["overall"]["mae"]["ci"]  # seeded
    assert json.loads(json.dumps(result)) == result


def test_regression_cell_with_a_constant_target_has_no_r2():
    y = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    pred = y + 0.5
    g = np.array(["a", "a", "a", "b", "b", "b"])
    _, cells = _cells(disaggregate(y, pred, {"g": g}, task="regression"), "g")
    assert cells[("a",)]["r2"] == pytest.approx(1 - 0.75 / 2.0)
    assert cells[("b",)]["r2"] is None and "constant" in cells[("b",)]["r2_note"]


def test_missing_group_labels_form_their_own_cell():
    y = np.array([0, 1, 0, 1])
    g = np.array(["a", None, float("nan"), "a"], dtype=object)
    _, cells = _cells(disaggregate(y, y, {"g": g}, min_cell=1), "g")
    assert set(cells) == {("a",), ("(missing)",)} and cells[("(missing)",)]["n"] == 2


def test_string_labels_with_a_named_positive_class():
    y = np.array(["yes", "no", "yes", "no", "yes"])
    pred = np.array(["yes", "yes", "no", "no", "yes"])
    result = disaggregate(y, pred, {"g": ["a"] * 5}, positive="yes")
    # negatives: 2, one called positive; positives: 3, one missed
    assert result["overall"]["fpr"]["value"] == 0.5 and result["overall"]["fnr"]["value"] == 1 / 3
    assert "fpr" not in disaggregate(y, pred, {"g": ["a"] * 5})["overall"]


Y = np.array([0, 1, 0, 1])
G4 = {"g": ["a", "a", "b", "b"]}
BAD = [
    (dict(y_true=Y, y_pred=Y, groups=G4, task="clustering"), "'clustering'"),
    (dict(y_true=Y, y_pred=Y, groups=G4, min_cell=0), "got 0"),
    (dict(y_true=Y, y_pred=Y, groups=G4, min_cell=2.5), "got 2.5"),
    (dict(y_true=Y, y_pred=Y, groups=G4, level=95), "got 95"),
    (dict(y_true=Y, y_pred=Y, groups=["a", "a", "b", "b"]), "got list"),
    (dict(y_true=Y, y_pred=Y, groups={}), "groups is empty"),
    (dict(y_true=Y, y_pred=Y, groups={"g": ["a", "b"]}), "'g' has 2 labels for 4 examples"),
    (dict(y_true=Y, y_pred=Y, groups={"": ["a"] * 4}), "got ''"),
    (dict(y_true=Y, y_pred=Y[:3], groups=G4), "lengths 4 and 3"),
    (dict(y_true=np.eye(4), y_pred=Y, groups=G4), "shape (4, 4)"),
    (dict(y_true=[], y_pred=[], groups={"g": []}), "y_true is empty"),
    (dict(y_true=Y, y_pred=Y, groups=G4, positive=2), "positive=2"),
    (dict(y_true=Y, y_pred=Y, groups=G4, proba=[0.1, 0.2, 1.5, 0.3]), "row 2 holds 1.5"),
    (dict(y_true=Y, y_pred=Y, groups=G4, proba=[0.1, 0.2]), "got shape (2,)"),
    (dict(y_true=Y, y_pred=Y, groups=G4, proba=np.full((4, 2), 0.6)), "row 0 sums to 1.2"),
    (dict(y_true=Y, y_pred=Y, groups=G4, proba=np.full((4, 1, 2), 0.5)), "got shape (4, 1, 2)"),
    (dict(y_true=Y, y_pred=Y, groups=G4, proba=np.full((4, 2), 0.5), task="regression"),
     "predictive intervals"),
    (dict(y_true=[0, 1, 2, 1], y_pred=Y, groups=G4, proba=[0.5] * 4), "[0, 1, 2]"),
    (dict(y_true=np.array(["n", "y", "n", "y"]), y_pred=np.array(["n", "y", "n", "y"]),
          groups=G4, proba=np.full((4, 2), 0.5)), "['n', 'y']"),
    (dict(y_true=[2, 1, 0, 1], y_pred=Y, groups=G4, proba=np.full((4, 2), 0.5)), "[0, 1, 2]"),
    (dict(y_true=["a", "b", "c", "d"], y_pred=Y, groups=G4, task="regression"), "'a'"),
    (dict(y_true=[1.0, np.nan, 2.0, 3.0], y_pred=Y, groups=G4, task="regression"),
     "entry 1 is nan"),
]


@pytest.mark.parametrize("args, quoted", [((3, 0), "n=0"), ((11, 10), "11 of 10"),
                                          ((-1, 10), "-1 of 10"), ((1, 2.5), "n=2.5"),
                                          ((1, 10, 95), "level=95")])
def test_wilson_interval_refuses_what_is_no_proportion(args, quoted):
    with pytest.raises(ValueError) as err:
        wilson_interval(*args)
    assert "\n" not in str(err.value) and quoted in str(err.value)


@pytest.mark.parametrize("kwargs, quoted", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_one_line_naming_the_value(kwargs, quoted):
    with pytest.raises((ValueError, TypeError)) as err:
        disaggregate(**kwargs)
    message = str(err.value)
    assert "\n" not in message and quoted in message, message
