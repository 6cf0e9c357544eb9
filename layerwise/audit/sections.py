"""The sections of a model card measured on arrays: metrics with intervals, per-class results
and calibration of a classifier, metrics and interval coverage of a regression, and the data
checks of the training split. model_card.py assembles them for any model, report.py for a
finished run.

    sections, figures = classification_sections(test_logits, y, val_logits, y_val)
    sections, figures = regression_sections(pred, y, intervals=(low, high))
"""

import numpy as np

from layerwise.audit import calibration, data_checks, plots, table_checks
from layerwise.audit import groups as group_stats
from layerwise.audit.disaggregate import LEVEL, N_BOOT, _bootstrap_means

INTERVAL_LEVEL = 0.9  # the nominal coverage of an (N, 3) output's intervals, unless stated
SHOWN_COPIES = 20  # file lines of copied rows kept in card.json
NO_INTERVALS = ("The model gives no predictive intervals, only one value per example, so "
                "interval coverage cannot be measured.")


def classification_sections(logits, y, logits_va=None, y_va=None, classes=None):
    """(sections, figures) of a classifier on the test split: metrics (accuracy with its
    Wilson interval, NLL, confusion matrix), per-class results, calibration."""
    k = logits.shape[1]
    probs = calibration.softmax(logits)
    pred = probs.argmax(1)
    correct = pred == y
    metrics = {"task": "classification", "split": "test", "n": len(y),
               "accuracy": float(correct.mean()),
               "accuracy_ci95": list(group_stats.wilson_interval(int(correct.sum()), len(y))),
               "nll": calibration.nll(logits, y),
               "interval": "Wilson score interval of the test accuracy"}
    if classes is not None:
        metrics["classes"] = [str(c) for c in classes]
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, pred), 1)
    metrics["confusion_matrix"] = confusion.tolist()
    figures = {"confusion_matrix": plots.confusion_matrix(confusion)}
    by_class = group_stats.group_metrics(y, pred, y)
    by_true = summary(by_class)
    by_true.pop("fairness", None)  # parity between true classes is no fairness question
    names = sorted(by_class["groups"], key=int)
    figures["per_class"] = bars(by_class, names, "recall (accuracy on the class)")
    cal, figures["reliability"] = calibration_section(logits, y, logits_va, y_va)
    return {"metrics": metrics,
            "disaggregated": {"per_class": group_stats.per_class_metrics(y, pred, k),
                              "by_true_class": by_true},
            "calibration": cal}, figures


def calibration_section(logits, y, logits_va=None, y_va=None):
    """(the calibration section, reliability figure): ECE and MCE on the test split, and with
    a validation split the temperature that minimises its NLL and the ECE after it."""
    before = calibration.calibration_error(calibration.softmax(logits), y)
    cal = {"task": "classification", "ece": before["ece"], "mce": before["mce"],
           "n_bins": before["n_bins"], "bins": before["bins"]}
    if logits_va is None:
        cal.update(temperature=None, ece_scaled=None, mce_scaled=None, val_nll=None,
                   val_nll_scaled=None, bins_scaled=None,
                   method=f"{before['n_bins']} equal-width confidence bins on the test split; "
                          f"no validation split was given, so no temperature was fitted")
        return cal, plots.reliability_diagram(before)
    t = calibration.fit_temperature(logits_va, y_va)
    after = calibration.calibration_error(calibration.softmax(logits, t), y)
    cal.update(temperature=t, ece_scaled=after["ece"], mce_scaled=after["mce"],
               val_nll=calibration.nll(logits_va, y_va),
               val_nll_scaled=calibration.nll(logits_va, y_va, t), bins_scaled=after["bins"],
               method=f"{before['n_bins']} equal-width confidence bins on the test split; "
                      f"temperature fit on the validation split by minimising its NLL")
    return cal, plots.reliability_diagram(before, after)


def summary(table):
    """The parts of a group_metrics table a card keeps."""
    keys = ("groups", "gap", "ratio", "warnings", "positive", "fairness")
    return {k: table[k] for k in keys if k in table}


def bars(table, names, ylabel):
    rows = [table["groups"][n]["accuracy"] for n in names]
    return plots.group_bars(names, [r["value"] for r in rows], [r["ci"][0] for r in rows],
                            [r["ci"][1] for r in rows], ylabel)


def regression_sections(pred, y, intervals=None, interval_level=INTERVAL_LEVEL, seed=0):
    """(sections, figures) of a regression on the test split: MAE and RMSE with percentile
    bootstrap intervals, R^2, and the coverage of the model's intervals if it gives any."""
    err = pred - y
    ss_res, ss_tot = float(np.sum(err * err)), float(np.sum((y - y.mean()) ** 2))
    alpha = (1 - LEVEL) / 2
    abs_means, sq_means = _bootstrap_means(np.abs(err), err * err, np.random.default_rng(seed))
    metrics = {"task": "regression", "split": "test", "n": len(y),
               "mae": float(np.mean(np.abs(err))),
               "mae_ci95": np.quantile(abs_means, [alpha, 1 - alpha]).tolist(),
               "rmse": float(np.sqrt(ss_res / len(y))),
               "rmse_ci95": np.sqrt(np.quantile(sq_means, [alpha, 1 - alpha])).tolist(),
               "r2": 1 - ss_res / ss_tot if ss_tot > 0 else None,
               "interval": f"percentile bootstrap, {N_BOOT} resamples of the test split (RMSE: "
                           f"the root of the mean squared error's interval)"}
    if ss_tot == 0:
        metrics["r2_note"] = "the test targets are all equal, so R^2 is undefined"
    if intervals is None:
        cal = {"task": "regression", "intervals": False, "note": NO_INTERVALS}
    else:
        low, high = intervals
        inside = (low <= y) & (y <= high)
        k, n = int(inside.sum()), len(y)
        coverage = {"value": k / n, "ci": list(group_stats.wilson_interval(k, n)),
                    "count": k, "of": n}
        lo, hi = coverage["ci"]
        verdict = ("under-covers" if hi < interval_level else
                   "over-covers" if lo > interval_level else "consistent with its nominal level")
        cal = {"task": "regression", "intervals": True, "nominal": interval_level,
               "coverage": coverage, "verdict": verdict,
               "below": float(np.mean(y < low)), "above": float(np.mean(y > high)),
               "mean_width": float(np.mean(high - low)),
               "method": f"share of test targets inside the model's (low, high) interval, "
                         f"nominally {interval_level:.0%}, with its Wilson 95% interval; per "
                         f"group in the disaggregated results"}
    return ({"metrics": metrics, "calibration": cal},
            {"predicted_vs_true": plots.predicted_vs_true(y, pred, intervals)})


def majority_accuracy(y_train, y_test):
    """Test accuracy of always answering the training split's most frequent class."""
    labels = np.asarray(y_train).astype(np.int64)
    return float(np.mean(y_test == np.bincount(labels).argmax()))


def mean_baseline(y_train, y_test):
    """MAE and RMSE of predicting the training split's mean for every test example."""
    err = y_test - float(np.mean(np.asarray(y_train, np.float64)))
    return {"predict": "the training mean", "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(np.mean(err * err)))}


def data_checks_section(x_tr, y_tr, x_te, y_te, x_va=None, task="classification",
                        probs_te=None, table=None):
    """Copies of test (and validation) examples in train, duplicates in train, class balance
    and label-issue candidates. Images are checked for exact and near copies; the rows of a
    ``table`` (its splits) for exact copies only (table_checks.py)."""
    out = contamination_checks(x_tr, x_te, x_va) if table is None else table_split_checks(table)
    dups = data_checks.find_duplicates(x_tr, y_tr)
    out.update(train_duplicates=len(dups["duplicate_groups"]),
               train_conflicting_labels=len(dups["conflicting_groups"]))
    if task == "classification":
        k = probs_te.shape[1]
        out["class_balance_train"] = data_checks.class_balance(y_tr, k)
        issues = data_checks.find_label_issues(probs_te, y_te)
        out["label_issues_test"] = {
            "indices": issues["indices"][:20], "suggested": issues["suggested"][:20],
            "count": len(issues["indices"]),
            "method": issues["method"] + " (the trained model, which never saw the test split)"}
    else:
        out["target_summary"] = {role: _stats(y) for role, y in (("train", y_tr), ("test", y_te))}
    return out


def contamination_checks(x_tr, x_te, x_va=None):
    """Exact and near copies of test and validation images in train, and of test in val."""
    out = {"near_checked": True, "contamination_test":
           data_checks.check_contamination(x_tr, x_te, other_name="test").to_dict()}
    if x_va is not None:
        out["contamination_val"] = data_checks.check_contamination(
            x_tr, x_va, other_name="validation").to_dict()
        out["contamination_test_in_val"] = data_checks.check_contamination(
            x_va, x_te, other_name="test").to_dict()
    return out


def table_split_checks(splits):
    """Rows of test (and val) that are exact copies of a training (val) row: the same encoded
    features, target and group labels (table_checks.table_copies). Near copies are not looked
    for: a distance between standardised rows of mixed columns means nothing."""
    report = table_checks.table_copies(splits)
    found = {(p.other, p.into): p for p in report.pairs}

    def pair(other, into):
        if other not in splits or into not in splits:
            return None
        p, n = found.get((other, into)), len(splits[other])
        copies = len(p.rows) if p else 0
        return {"other": other, "into": into, "n_other": n, "n_leaked": copies,
                "share": copies / n, "lines": p.lines[:SHOWN_COPIES] if p else []}

    return {"near_checked": False, "copy_threshold": report.threshold,
            "method": "exact copies of a row: its encoded features, target and group labels",
            "contamination_test": pair("test", "train"),
            "contamination_val": pair("val", "train"),
            "contamination_test_in_val": pair("test", "val")}


def _stats(y):
    y = np.asarray(y, np.float64)
    return {"n": len(y), "mean": float(y.mean()), "std": float(y.std()),
            "min": float(y.min()), "max": float(y.max())}
