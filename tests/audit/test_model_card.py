"""lw.audit.card: the model card of a model the test builds itself, on data the test writes.

Every figure in card.json is checked against an independent reference: the disaggregated
cells against fairlearn's MetricFrame on the same predictions, accuracy and Wilson intervals
against the closed form by hand, regression metrics against NumPy float64, the headline
against the cells it names.
"""

import datetime
import html
import json
import math
import os
import shutil

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, count, false_negative_rate, false_positive_rate
from sklearn.metrics import accuracy_score

import layerwise as lw
from layerwise import nn, optim
from layerwise.autograd import Tensor, no_grad
from layerwise.data import table_splits
from layerwise.nn import functional as F
from tests.audit.test_disaggregate import ece_by_hand

Z = 1.959963984540054  # the two-sided 95% normal quantile
Z2 = Z * Z


def wilson(k, n):
    """The Wilson score interval by its closed form."""
    p = k / n
    centre = (p + Z2 / (2 * n)) / (1 + Z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z2 / (4 * n * n)) / (1 + Z2 / n)
    return (0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half)


def read_card(out):
    with open(os.path.join(out, "card.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    with open(os.path.join(out, "card.html"), encoding="utf-8") as f:
        return on_disk, f.read()


# --- a table, and a small network trained on it ------------------------------------------------


@pytest.fixture(scope="module")
def people_table(tmp_path_factory):
    """3,000 rows: income (>50K or not) from age and hours, with sex and race as group columns
    that the model does not see; race c is rare. The last 40 rows repeat the first 40."""
    rng = np.random.default_rng(0)
    n = 3000
    sex = rng.choice(["F", "M"], n, p=[0.4, 0.6])
    race = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    age = rng.integers(18, 80, n)
    hours = np.round(rng.normal(40, 10, n), 1)
    logit = 0.06 * (age - 45) + 0.1 * (hours - 40) + 0.8 * (sex == "M") - 0.7 * (race == "b")
    income = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    path = tmp_path_factory.mktemp("table") / "people.csv"
    rows = ["age,hours,sex,race,income"] + [
        f"{a},{h},{s},{r},{i}" for a, h, s, r, i in zip(age, hours, sex, race, income)]
    path.write_text("\n".join(rows + rows[1:41]) + "\n")
    return table_splits(str(path), target="income", groups=["sex", "race"], seed=0)


@pytest.fixture(scope="module")
def trained(people_table):
    lw.manual_seed(0)
    x, y = people_table["train"].tensors
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 2))
    opt = optim.AdamW(model.parameters(), lr=0.05)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def table_card(people_table, trained, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("card") / "card")
    card = lw.audit.card(trained, people_table, out=out, name="income-mlp",
                         intended_use="Ranking applications for a second reading by a person",
                         intended_users="credit officers")
    return card, out


def test_table_card_cells_equal_fairlearn_on_the_same_predictions(people_table, trained,
                                                                  table_card):
    card, out = table_card
    on_disk, page = read_card(out)
    assert on_disk == json.loads(json.dumps(card))
    x_te, y_te = (t.data for t in people_table["test"].tensors)
    with no_grad():
        logits = trained(Tensor(x_te)).data.astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    pred = probs.argmax(1)
    groups = {c: np.asarray(people_table.groups["test"][c]) for c in ("sex", "race")}
    assert card["metrics"]["accuracy"] == pytest.approx(accuracy_score(y_te, pred), abs=1e-12)
    assert card["metrics"]["classes"] == ["<=50K", ">50K"]
    dis = card["disaggregated"]["groups"]
    assert dis["columns"] == ["sex", "race"] and dis["positive"] == 1
    assert [b["name"] for b in dis["breakdowns"]] == ["sex", "race", "sex x race"]
    metrics = {"accuracy": accuracy_score, "fpr": false_positive_rate,
               "fnr": false_negative_rate, "count": count}
    for breakdown in dis["breakdowns"]:
        frame = MetricFrame(metrics=metrics, y_true=y_te, y_pred=pred,
                            sensitive_features={c: groups[c] for c in breakdown["columns"]})
        cells = {tuple(c["values"].values()): c for c in breakdown["cells"]}
        assert len(cells) == len(frame.by_group)
        for key, ref in frame.by_group.iterrows():
            cell = cells[key if isinstance(key, tuple) else (key,)]
            assert cell["n"] == ref["count"]
            assert cell["error_rate"]["value"] == pytest.approx(1 - ref["accuracy"], abs=1e-12)
            assert cell["fpr"]["value"] == pytest.approx(ref["fpr"], abs=1e-12)
            assert cell["fnr"]["value"] == pytest.approx(ref["fnr"], abs=1e-12)
            k, n = cell["error_rate"]["count"], cell["n"]
            assert cell["error_rate"]["ci"] == pytest.approx(wilson(k, n), abs=1e-12)
            m = np.all([groups[c] == v for c, v in cell["values"].items()], axis=0)
            assert cell["ece"] == pytest.approx(ece_by_hand(probs[m].max(1), probs[m].argmax(1) == y_te[m]), abs=1e-12)
    # the page: the section, one table and one bar plot per breakdown, the headline
    assert "<h2>Disaggregated results</h2>" in page
    for name in ("sex", "race", "sex x race"):
        assert f"<h3>By {name}</h3>" in page and f'alt="by {name}"' in page
    assert f'<p class="headline"><b>{html.escape(card["disaggregated"]["headline"])}</b>' in page


def test_table_card_says_who_it_is_for_and_when(table_card, people_table):
    card, out = table_card
    _, page = read_card(out)
    assert card["written"] == {"date": datetime.date.today().isoformat(),
                               "layerwise_version": lw.__version__, "by": "lw.audit.card"}
    use = card["intended_use"]
    assert use["use"].startswith("Ranking applications") and use["users"] == "credit officers"
    assert use["warning"] is None and not any("No intended use" in c for c in card["caveats"])
    assert "Ranking applications for a second reading by a person" in page
    assert "credit officers" in page and datetime.date.today().isoformat() in page
    assert "handwritten digits" not in page
    sizes = {name: len(people_table[name]) for name in ("train", "val", "test")}
    assert card["data"]["splits"] == sizes
    # the train split is checked, the val split fitted the temperature
    assert card["calibration"]["temperature"] is not None
    assert card["data_checks"]["near_checked"] is False
    # test rows found in train: the same encoded features, label and groups, counted by hand

    def rows(split):
        x, y = (t.data for t in people_table[split].tensors)
        labels = people_table.groups[split]
        return [(x[i].tobytes(), int(y[i]), str(labels["sex"][i]), str(labels["race"][i]))
                for i in range(len(y))]

    train_rows = set(rows("train"))
    copied = sum(r in train_rows for r in rows("test"))
    assert copied > 0 and card["data_checks"]["contamination_test"]["n_leaked"] == copied
    assert card["data_checks"]["class_balance_train"]["counts"] == \
        np.bincount(people_table["train"].tensors[1].data).tolist()


# --- a fixed model with known predictions -------------------------------------------------------


def logit_of_first_column(batch):
    """A binary classifier whose logit of class 1 is the first input column."""
    return batch[:, 0]


def planted(cells, seed=0):
    """(x, y, sex, race) where each (sex, race, n, errors) cell gets exactly that many errors."""
    rng = np.random.default_rng(seed)
    xs, ys, sexes, races = [], [], [], []
    for sex, race, n, errors in cells:
        y = rng.integers(0, 2, n)
        right = np.where(y == 1, 3.0, -3.0)
        z = right.copy()
        z[:errors] = -right[:errors]
        xs.append(z)
        ys.append(y)
        sexes += [sex] * n
        races += [race] * n
    x = np.concatenate(xs)[:, None].astype(np.float32)  # (N, 1)
    return x, np.concatenate(ys), np.array(sexes), np.array(races)


CELLS = [("F", "a", 100, 10), ("F", "b", 60, 18), ("M", "a", 200, 10), ("M", "b", 80, 8),
         ("F", "c", 3, 0)]


def test_accuracy_nll_and_wilson_interval_by_hand():
    x, y, _, _ = planted(CELLS)
    card = lw.audit.card(logit_of_first_column, (x, y), task="classification")
    n, errors = len(y), sum(c[3] for c in CELLS)
    m = card["metrics"]
    assert m["n"] == n == 443 and m["accuracy"] == pytest.approx((n - errors) / n, abs=1e-15)
    assert m["accuracy_ci95"] == pytest.approx(wilson(n - errors, n), abs=1e-12)
    # each example's logit is +-3: NLL is log(1 + e^-3) when right, log(1 + e^3) when wrong
    nll = ((n - errors) * math.log1p(math.exp(-3)) + errors * math.log1p(math.exp(3))) / n
    assert m["nll"] == pytest.approx(nll, rel=1e-12)
    pred = (x[:, 0] > 0).astype(int)
    assert m["confusion_matrix"] == [[int(np.sum((y == t) & (pred == p))) for p in (0, 1)]
                                     for t in (0, 1)]
    assert card["calibration"]["temperature"] is None  # no val split: nothing fitted
    assert card["disaggregated"]["note"].startswith("No group columns were given")
    assert card["model_details"]["name"] == "function" and "data_checks" not in card


def test_headline_names_the_worst_cell_against_the_best_by_hand(tmp_path):
    x, y, sex, race = planted(CELLS)
    card = lw.audit.card(logit_of_first_column, (x, y), {"sex": sex, "race": race},
                         task="classification", out=str(tmp_path / "c"))
    # sex x race holds the worst cell, F & b (18 of 60); its best judged cell is M & a (10 of
    # 200); F & c (0 of 3) is better still, but too small to rank
    w, b = wilson(18, 60), wilson(10, 200)
    lo = 0.25 - math.sqrt((0.3 - w[0]) ** 2 + (b[1] - 0.05) ** 2)
    hi = 0.25 + math.sqrt((w[1] - 0.3) ** 2 + (0.05 - b[0]) ** 2)
    expected = (f"Worst group: sex=F & race=b, error rate 0.300 (95% CI {w[0]:.3f} to "
                f"{w[1]:.3f}, n=60), against 0.050 (95% CI {b[0]:.3f} to {b[1]:.3f}, n=200) for "
                f"the best, sex=M & race=a; gap 0.250 (95% CI {lo:.3f} to {hi:.3f}), ratio 6.00x")
    assert card["disaggregated"]["headline"] == expected
    on_disk, page = read_card(str(tmp_path / "c"))
    assert on_disk["disaggregated"]["headline"] == expected
    assert html.escape(expected) in page and "\n" not in expected


def test_a_cell_of_three_all_right_is_warned_about_with_an_honest_interval(tmp_path):
    x, y, sex, race = planted(CELLS)
    card = lw.audit.card(logit_of_first_column, (x, y), {"sex": sex, "race": race},
                         task="classification", out=str(tmp_path / "c"))
    (cross,) = [b for b in card["disaggregated"]["groups"]["breakdowns"]
                if b["name"] == "sex x race"]
    (tiny,) = [c for c in cross["cells"] if c["values"] == {"sex": "F", "race": "c"}]
    assert tiny["n"] == 3 and tiny["small"] and tiny["error_rate"]["value"] == 0.0
    assert tiny["error_rate"]["ci"] == pytest.approx([0.0, Z2 / (3 + Z2)], abs=1e-12)
    assert tiny["error_rate"]["ci"][1] > 0.5  # 3 of 3 right says little
    warned = [w for w in card["caveats"] if w.startswith("sex x race: ") and "sex=F, race=c" in w]
    assert len(warned) == 1 and "fewer than 30 examples" in warned[0]
    _, page = read_card(str(tmp_path / "c"))
    assert html.escape(warned[0]) in page and "sex=F &amp; race=c *" in page


def test_no_intended_use_is_a_visible_warning(tmp_path):
    x, y, _, _ = planted(CELLS)
    card = lw.audit.card(logit_of_first_column, (x, y), task="classification",
                         out=str(tmp_path / "c"))
    assert card["intended_use"]["use"] is None
    warning = card["intended_use"]["warning"]
    assert warning.startswith("No intended use was stated") and warning in card["caveats"]
    _, page = read_card(str(tmp_path / "c"))
    assert f'<div class="warn">{html.escape(warning)}</div>' in page
    assert "handwritten digits" not in page
    # a second card into the same directory replaces the first, which layerwise wrote
    again = lw.audit.card(logit_of_first_column, (x, y), task="classification",
                          out=str(tmp_path / "c"), intended_use="teaching")
    assert read_card(str(tmp_path / "c"))[0]["intended_use"]["use"] == again["intended_use"]["use"]


# --- regression ---------------------------------------------------------------------------------


def _regression_data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    sex = rng.choice(["F", "M"], n)
    y = (x.astype(np.float64) @ [2.0, -1.0, 0.5] + rng.normal(0, 1 + (sex == "F"), n))
    return x, y.astype(np.float32), sex


def linear(batch):
    return batch.astype(np.float64) @ [2.0, -1.0, 0.5]  # (N,)


def test_regression_metrics_against_numpy_float64_and_no_intervals_said_plainly(tmp_path):
    x, y, sex = _regression_data()
    card = lw.audit.card(linear, (x, y), {"sex": sex}, train=(x, y), out=str(tmp_path / "r"))
    err = linear(x) - y.astype(np.float64)
    m = card["metrics"]
    assert m["task"] == "regression" and card["model_details"]["task"] == "regression"
    assert m["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-12)
    yt = y.astype(np.float64)
    assert m["r2"] == pytest.approx(1 - np.sum(err ** 2) / np.sum((yt - yt.mean()) ** 2),
                                    rel=1e-12)
    assert m["mae_ci95"][0] < m["mae"] < m["mae_ci95"][1]
    (by_sex,) = card["disaggregated"]["groups"]["breakdowns"]
    for cell in by_sex["cells"]:
        e = err[sex == cell["values"]["sex"]]
        assert cell["mae"]["value"] == pytest.approx(np.mean(np.abs(e)), rel=1e-12)
        assert cell["rmse"]["value"] == pytest.approx(np.sqrt(np.mean(e ** 2)), rel=1e-12)
    worst = max(by_sex["cells"], key=lambda c: c["mae"]["value"])
    assert worst["values"] == {"sex": "F"}  # its noise is twice as large
    assert card["disaggregated"]["headline"].startswith(
        f"Worst group: sex=F, MAE {worst['mae']['value']:.4g} (95% CI ")
    assert card["calibration"] == {
        "task": "regression", "intervals": False,
        "note": "The model gives no predictive intervals, only one value per example, so "
                "interval coverage cannot be measured."}
    assert card["calibration"]["note"] in card["caveats"]
    _, page = read_card(str(tmp_path / "r"))
    assert "<h2>Calibration</h2>" in page and "interval coverage cannot be measured" in page
    assert card["data_checks"]["target_summary"]["train"]["mean"] == pytest.approx(
        float(np.mean(yt)), rel=1e-9)


def test_regression_interval_coverage_overall_and_per_group():
    x, y, sex = _regression_data(1)

    def with_intervals(batch):
        p = linear(batch)
        return np.stack([p - 1.5, p, p + 1.5], axis=1)  # (N, 3): low, prediction, high

    card = lw.audit.card(with_intervals, (x, y), {"sex": sex}, interval_level=0.8)
    yt, p = y.astype(np.float64), linear(x)
    inside = (p - 1.5 <= yt) & (yt <= p + 1.5)
    cal = card["calibration"]
    assert cal["intervals"] and cal["nominal"] == 0.8
    assert cal["coverage"]["count"] == int(inside.sum())
    assert cal["coverage"]["ci"] == pytest.approx(wilson(int(inside.sum()), len(y)), abs=1e-12)
    assert cal["mean_width"] == pytest.approx(3.0)
    assert card["disaggregated"]["groups"]["calibration"].startswith("interval coverage per cell")
    for cell in card["disaggregated"]["groups"]["breakdowns"][0]["cells"]:
        m = sex == cell["values"]["sex"]
        assert cell["coverage"]["count"] == int(inside[m].sum()) and cell["n"] == int(m.sum())
    lo, hi = wilson(int(inside.sum()), len(y))
    assert cal["verdict"] == ("under-covers" if hi < 0.8 else "over-covers" if lo > 0.8 else
                              "consistent with its nominal level")


# --- bad inputs: one line each ------------------------------------------------------------------


def _bad_cases(tmp_path):
    x, y, sex, _ = planted(CELLS)
    xr, yr, _ = _regression_data()
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "card.html").write_text("<p>my own page</p>")
    clf = {"task": "classification"}
    return [
        ((logit_of_first_column, (x, y), {"sex": sex[:-1]}), clf,
         ValueError, "group column 'sex' has 442 labels for 443 examples"),
        ((logit_of_first_column, (x, y), {3: sex}), clf,
         TypeError, "group column names must be non-empty strings, got 3"),
        ((logit_of_first_column, (x, y), ["sex"]), clf,
         TypeError, "groups must be a dict"),
        ((lambda b: np.zeros((len(b) - 1, 2)), (x, y)), {},
         ValueError, r"the model returned shape \(442, 2\) for a batch of 443 inputs"),
        ((lambda b: np.zeros((len(b), 2, 2)), (x, y)), {},
         ValueError, r"returned shape \(443, 2, 2\)"),
        ((lambda b: np.zeros((len(b), 2)), (xr, yr)), clf,
         ValueError, "needs integer class labels .* pass task='regression'"),
        ((lambda b: np.zeros((len(b), 2)), (x, y + 2)), {},
         ValueError, "gives 2 class scores per example, but the test labels run from 2 to 3"),
        ((logit_of_first_column, (x, y)), {},
         ValueError, "pass task='classification' .* or task='regression'"),
        ((lambda b: np.full((len(b), 3), np.nan), (xr, yr)), {},
         ValueError, r"the model's output for example 0 is \[nan, nan, nan\]"),
        ((lambda b: np.stack([linear(b) + 1, linear(b), linear(b) - 1], 1), (xr, yr)), {},
         ValueError, "must be ordered low <= prediction <= high, but row 0"),
        ((logit_of_first_column, (x, y[:-1])), clf,
         ValueError, "test: x has 443 examples but y has 442"),
        ((logit_of_first_column, "test.csv"), clf, TypeError, "got str"),
        ((logit_of_first_column, (x, y)), dict(clf, out=str(a_file)),
         ValueError, "is a file; give a directory"),
        ((logit_of_first_column, (x, y)), dict(clf, out=str(foreign)),
         FileExistsError, "card.html exists and is not a card layerwise wrote"),
        ((logit_of_first_column, (x, y)), dict(clf, intended_use=5),
         TypeError, "intended_use must be a non-empty string, got 5"),
        ((logit_of_first_column, (x, y)), dict(clf, task="classify"),
         ValueError, "task must be one of .* got 'classify'"),
        ((object(), (x, y)), {}, TypeError, "model must be a layerwise Module"),
        ((logit_of_first_column, (x, y)), dict(clf, min_cell=0),
         ValueError, "min_cell must be an integer >= 1 .* got 0"),
        ((logit_of_first_column, (x, y), {"sex": np.stack([sex, sex], 1)}), clf,
         ValueError, r"group column 'sex' must be 1-D, .* got shape \(443, 2\)"),
        ((logit_of_first_column, (x, y)), dict(clf, train=(x, y + 5)),
         ValueError, "the train labels must be integers 0..1; they run from 5 to 6"),
    ]


def test_bad_inputs_each_give_one_line(tmp_path):
    cases = _bad_cases(tmp_path)
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match) as info:
            lw.audit.card(*args, **kwargs)
        assert "\n" not in str(info.value), str(info.value)
    assert (tmp_path / "a_file").read_text() == "mine"  # nothing of the user's is touched
    assert (tmp_path / "foreign" / "card.html").read_text() == "<p>my own page</p>"
    assert len(cases) == 20


# --- recipe runs: the same card from build_report and `layerwise audit` ------------------------


def test_a_runs_intended_use_comes_from_its_config(tiny_run, tmp_path):
    from layerwise.audit import build_report

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    card = build_report(run_dir, full=False, write=False)
    assert card["intended_use"]["use"].startswith("Classifying centred 28x28 grey-scale")
    assert card["intended_use"]["stated_by"] == "the 'tiny' recipe, for the data it ships with"
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    config["intended_use"] = "Teaching how a CNN reads digits"
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f)
    sites = ["s0", "s1"] * (card["data"]["splits"]["test"] // 2)
    card = build_report(run_dir, group_labels=sites, group_name="site", full=False)
    assert card["intended_use"]["use"] == "Teaching how a CNN reads digits"
    # an image run's --groups column: the people audit and its headline beside the old table
    (by_site,) = card["disaggregated"]["groups"]["breakdowns"]
    old = card["disaggregated"]["by_site"]["groups"]
    for cell in by_site["cells"]:
        ref = old[cell["values"]["site"]]
        assert cell["n"] == ref["n"] == 250
        assert cell["error_rate"]["value"] == pytest.approx(1 - ref["accuracy"]["value"])
    worst = max(by_site["cells"], key=lambda c: c["error_rate"]["value"])
    assert card["disaggregated"]["headline"].startswith(
        f"Worst group: {worst['label']}, error rate {worst['error_rate']['value']:.3f} (95% CI ")
    assert card["written"]["layerwise_version"] == lw.__version__
    _, page = read_card(run_dir)
    assert "Teaching how a CNN reads digits" in page and "grey-scale handwritten" not in page


@pytest.fixture(scope="module")
def table_run(people_table, tmp_path_factory):
    from layerwise.train.run import make_config, start_run

    data = {"kind": "table", "path": people_table.info["path"], "target": "income",
            "groups": ["sex", "race"], "drop": [], "task": None}
    config = make_config("tabular-tiny", seed=0, data=data)
    run_dir, _ = start_run(config, out_dir=str(tmp_path_factory.mktemp("runs")), name="t",
                           progress=False, verbose=False)
    return run_dir


def test_layerwise_audit_of_a_table_run_uses_its_group_columns(table_run, capsys):
    from layerwise.cli.main import main

    assert main(["audit", table_run]) == 0
    printed = capsys.readouterr().out
    card, page = read_card(table_run)
    dis = card["disaggregated"]
    assert [b["name"] for b in dis["groups"]["breakdowns"]] == ["sex", "race", "sex x race"]
    assert dis["headline"] in printed.splitlines() and dis["headline"].startswith("Worst group: ")
    assert card["model_details"]["task"] == "table"
    assert card["model_details"]["predicts"] == "classification"
    assert card["intended_use"]["warning"].startswith("No intended use was stated")
    assert "handwritten digits" not in page and "<h2>Disaggregated results</h2>" in page
    assert main(["audit", table_run, "--group-column", "race"]) == 0
    capsys.readouterr()
    card, _ = read_card(table_run)
    assert [b["name"] for b in card["disaggregated"]["groups"]["breakdowns"]] == ["race"]
    assert main(["audit", table_run, "--group-column", "age"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'age' is not one of the run's group columns" in err
