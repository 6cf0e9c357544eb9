"""Disaggregated evaluation: metrics per class and per subgroup, each with n and a 95%
interval, the largest gap and ratio between groups, and warnings for groups too small.

    table = group_metrics(y_true, y_pred, groups)
    demographic_parity_difference(y_true, y_pred, sensitive_features=groups)  # as in Fairlearn
    low, high = wilson_interval(errors, n)

Rates (accuracy, error rate, TPR, FPR) carry Wilson score intervals: unlike a bootstrap, whose
resamples of a group with every example right are all right too (the interval 1.000-1.000),
Wilson's interval stays honest at 0 and n successes. ``bootstrap_ci`` remains for means that
are not proportions. Several group columns and their intersections: disaggregate.py.
"""

import numpy as np

from layerwise.stats import wilson_interval  # noqa: F401  (the audit's name for it too)

SMALL_GROUP = 30  # fewer examples than this: the interval is too wide to trust


def bootstrap_ci(values, n_boot=1000, level=0.95, seed=0):
    """Percentile bootstrap interval of the mean of ``values`` (1-D): (low, high)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return (float(low), float(high))


def _rate_ci(hits, mask):
    """Mean of the boolean ``hits`` over ``mask`` with its Wilson interval; None when empty."""
    sel = np.asarray(hits, bool)[mask]
    if len(sel) == 0:
        return {"value": None, "ci": [None, None], "n": 0}
    k = int(sel.sum())
    return {"value": k / len(sel), "ci": list(wilson_interval(k, len(sel))), "n": len(sel)}


def group_metrics(y_true, y_pred, groups, positive=None, small=SMALL_GROUP):
    """Per group: n, accuracy, error rate (with Wilson intervals) and TPR/FPR for ``positive``.

    ``positive``: the class treated as positive for TPR/FPR (default: 1 for binary labels,
    else none). Returns {"groups": {name: {...}}, "gap": ..., "ratio": ..., "warnings": [...]}:
    the largest difference and the smallest/largest ratio of accuracy between groups. For a
    binary task (``positive`` set) it adds "fairness": Fairlearn's demographic-parity and
    equalized-odds differences between the groups.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    groups = np.asarray(groups).ravel()
    if not len(y_true) == len(y_pred) == len(groups):
        raise ValueError(f"y_true, y_pred and groups must have one entry per example, got "
                         f"lengths {len(y_true)}, {len(y_pred)}, {len(groups)}")
    if positive is None and set(np.unique(y_true).tolist()) <= {0, 1}:
        positive = 1
    correct = (y_true == y_pred)
    table, warnings = {}, []
    for g in np.unique(groups):
        m = groups == g
        row = {"n": int(m.sum()),
               "accuracy": _rate_ci(correct, m),
               "error_rate": _rate_ci(~correct, m)}
        if positive is not None:
            pos, pred_pos = y_true == positive, y_pred == positive
            row["tpr"] = _rate_ci(pred_pos, m & pos)
            row["fpr"] = _rate_ci(pred_pos, m & ~pos)
            row["selection_rate"] = _rate_ci(pred_pos, m)
        if row["n"] < small:
            warnings.append(f"group {str(g)!r} has only {row['n']} examples (< {small}); its "
                            f"metrics are too uncertain to compare")
        table[str(g)] = row
    acc = {g: r["accuracy"]["value"] for g, r in table.items()}
    hi, lo = max(acc, key=acc.get), min(acc, key=acc.get)
    out = {"groups": table, "positive": positive,
           "gap": {"metric": "accuracy", "value": acc[hi] - acc[lo], "best": hi, "worst": lo},
           "ratio": {"metric": "accuracy", "value": acc[lo] / acc[hi] if acc[hi] else None,
                     "best": hi, "worst": lo},
           "warnings": warnings}
    if positive is not None and len(set(y_true.tolist()) | set(y_pred.tolist())) <= 2:
        out["fairness"] = {
            "demographic_parity_difference": demographic_parity_difference(
                y_true, y_pred, groups, pos_label=positive),
            "equalized_odds_difference": equalized_odds_difference(
                y_true, y_pred, groups, pos_label=positive),
            "definition": "Fairlearn: max - min over groups of the selection rate; the larger "
                          "of the TPR and FPR differences (max - min) between groups"}
    return out


def per_class_metrics(y_true, y_pred, num_classes):
    """One-vs-rest per class: n, TPR (recall), FPR, with Wilson intervals."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    out = {}
    for c in range(num_classes):
        pos, pred = y_true == c, y_pred == c
        out[str(c)] = {"n": int(pos.sum()), "tpr": _rate_ci(pred, pos),
                       "fpr": _rate_ci(pred, ~pos)}
    return out


# --- Fairlearn's definitions (fairlearn.metrics) ---------------------------------------------


def _by_group(fn, y_true, y_pred, sensitive_features):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    s = np.asarray(sensitive_features).ravel()
    return np.array([fn(y_true[s == g], y_pred[s == g]) for g in np.unique(s)])


def demographic_parity_difference(y_true, y_pred, sensitive_features, pos_label=1):
    """max - min over groups of the selection rate P(y_pred = pos_label | group)."""
    rates = _by_group(lambda t, p: np.mean(p == pos_label), y_true, y_pred, sensitive_features)
    return float(rates.max() - rates.min())


def equalized_odds_difference(y_true, y_pred, sensitive_features, pos_label=1):
    """The larger of the TPR difference and the FPR difference between groups (max - min)."""
    def tpr(t, p):
        pos = t == pos_label
        return np.mean(p[pos] == pos_label) if pos.any() else 0.0

    def fpr(t, p):
        neg = t != pos_label
        return np.mean(p[neg] == pos_label) if neg.any() else 0.0

    tprs = _by_group(tpr, y_true, y_pred, sensitive_features)
    fprs = _by_group(fpr, y_true, y_pred, sensitive_features)
    return float(max(tprs.max() - tprs.min(), fprs.max() - fprs.min()))
