"""The audit on people: metrics for each group column a user names and for every intersection
of them (sex, race, sex x race), cell by cell, with honest intervals.

    result = disaggregate(y_true, y_pred, {"sex": sex, "race": race}, proba=p_positive)
    sex_x_race = result["breakdowns"][2]
    sex_x_race["compare"][result["primary"]]   # worst and best cell, gap, ratio

Intersections are the point: Buolamwini and Gebru (2018, "Gender Shades") measured error rates
of 34.7% for darker-skinned women against 0.8% for lighter-skinned men, a gap that neither
skin type nor gender alone shows in full.

Per cell, classification: size, accuracy, error rate with a Wilson score interval; for a binary
task (``positive``) the false positive and false negative rates with theirs; with
probabilities, the expected calibration error (calibration.py's 15 bins). Regression: MAE and
RMSE with percentile-bootstrap intervals, and R^2. Each breakdown compares its cells of at least
``min_cell`` examples: the worst, the best, the gap (with Newcombe's interval for a rate) and
the ratio worst / best. Combinations of values with no example are skipped and listed.
"""

import itertools
import math

import numpy as np

from layerwise.audit.calibration import N_BINS, calibration_error
from layerwise.audit.groups import wilson_interval

# Below 30 examples a cell with no error at all still has a 95% Wilson upper bound above 0.11
# (z^2 / (n + z^2) = 3.84 / 33.8): it cannot tell a flawless group from one failed one time in
# nine, so its figures are shown but not ranked. The same 30 as groups.SMALL_GROUP.
MIN_CELL = 30
LEVEL = 0.95
N_BOOT = 1000  # bootstrap resamples for the regression intervals
_BOOT_DRAWS = 1 << 22  # indices drawn at once (32 MB of int64), whatever the cell's size
MISSING = "(missing)"  # the label of a group value given as None or NaN
TASKS = ("classification", "regression")
_PROBA_SUM_TOLERANCE = 1e-3  # rows of float32 softmax outputs sum to 1 within ~1e-6


def disaggregate(y_true, y_pred, groups, task="classification", proba=None, positive=None,
                 min_cell=MIN_CELL, level=LEVEL, seed=0):
    """Metrics per cell of each group column and of every intersection of the columns.

    ``groups``: {column name: one label per example}. ``positive``: the class counted as
    positive for the false positive / negative rates (default 1 when the labels are 0 and 1;
    with more classes, one against the rest). ``proba``: (N, K) class probabilities, column k
    for label k, or (N,) probabilities of ``positive``; the ECE judges proba's own top class,
    which differs from ``y_pred`` where that was thresholded otherwise. ``seed``: the
    regression bootstrap. k columns give 2^k - 1 breakdowns: each column, each pair, ...
    Returns a dict: task, n, columns, positive, level, min_cell, primary ("error_rate" or
    "mae"), interval, calibration (what was measured, or why nothing), overall (a cell),
    breakdowns (one per column, then per intersection), warnings. Plain JSON types throughout.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if isinstance(min_cell, bool) or not isinstance(min_cell, (int, np.integer)) or min_cell < 1:
        raise ValueError(f"min_cell must be an integer >= 1 (default {MIN_CELL}), got "
                         f"{min_cell!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    y_true, y_pred = _one_per_example("y_true", y_true), _one_per_example("y_pred", y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have one entry per example, got lengths "
                         f"{len(y_true)} and {len(y_pred)}")
    columns = group_columns(groups, len(y_true))
    if task == "classification":
        scorer = _Classification(y_true, y_pred, proba, positive, level)
    else:
        if proba is not None:
            raise ValueError("proba is for classification; a regression's calibration needs "
                             "predictive intervals, which disaggregate does not take")
        scorer = _Regression(y_true, y_pred, level, seed)
    names = list(columns)
    breakdowns = [_breakdown(combo, columns, scorer, min_cell)
                  for r in range(1, len(names) + 1)
                  for combo in itertools.combinations(names, r)]
    warnings = [w for b in breakdowns for w in b.pop("warnings")]
    overall = scorer.cell(np.ones(len(y_true), bool))
    return {"task": task, "n": len(y_true), "columns": names, "positive": scorer.positive,
            "level": level, "min_cell": int(min_cell), "primary": scorer.primary,
            "interval": scorer.interval, "calibration": scorer.calibration,
            "overall": dict(label="all", values={}, small=False, **overall),
            "breakdowns": breakdowns, "warnings": warnings}


# --- inputs -----------------------------------------------------------------------------------


def _one_per_example(name, y):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, one entry per example; got shape {y.shape}")
    if len(y) == 0:
        raise ValueError(f"{name} is empty; the audit needs at least one example")
    return y


def group_columns(groups, n):
    """{name: (N,) array of str labels} of ``groups`` ({column name: one label per example},
    lists, arrays or Tensors); None and NaN become MISSING. One line for each mistake."""
    if not isinstance(groups, dict):
        raise TypeError(f"groups must be a dict {{column name: one label per example}}, got "
                        f"{type(groups).__name__}")
    if not groups:
        raise ValueError("groups is empty; name at least one column, e.g. {'sex': labels}")
    columns = {}
    for name, labels in groups.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"group column names must be non-empty strings, got {name!r} "
                            f"({type(name).__name__})")
        labels = getattr(labels, "data", labels)  # a layerwise Tensor's array
        if hasattr(labels, "detach") and hasattr(labels, "cpu"):  # a torch.Tensor
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels, dtype=object)
        if labels.ndim != 1:
            raise ValueError(f"group column {name!r} must be 1-D, one label per example "
                             f"({n}); got shape {labels.shape}")
        if len(labels) != n:
            raise ValueError(f"group column {name!r} has {len(labels)} labels for {n} examples; "
                             f"give one label per example, in their order")
        columns[name] = np.array([MISSING if v is None or (isinstance(v, float) and math.isnan(v))
                                  else str(v) for v in labels], dtype=object)
    return columns


# --- breakdowns -------------------------------------------------------------------------------


def _breakdown(combo, columns, scorer, min_cell):
    """The cells of one column or one intersection of columns, compared."""
    name = " x ".join(combo)
    values, codes = [], []
    for c in combo:
        v, code = np.unique(columns[c], return_inverse=True)
        values.append(v)
        codes.append(code)
    cell_id = np.ravel_multi_index(codes, [len(v) for v in values])  # (N,) mixed-radix code
    present = set(np.unique(cell_id).tolist())
    cells, empty = [], []
    for k, combination in enumerate(itertools.product(*values)):
        labels = {c: str(v) for c, v in zip(combo, combination)}
        if k not in present:
            empty.append(labels)
            continue
        label = ", ".join(f"{c}={v}" for c, v in labels.items())
        m = cell_id == k
        cells.append(dict(label=label, values=labels, small=bool(m.sum() < min_cell),
                          **scorer.cell(m)))
    warnings = []
    small = [c["label"] for c in cells if c["small"]]
    if small:
        warnings.append(f"{name}: {len(small)} of {len(cells)} cells have fewer than "
                        f"{min_cell} examples, too few to judge and left out of the comparison: "
                        + "; ".join(small))
    if empty:
        warnings.append(f"{name}: {len(empty)} combinations have no examples and are skipped: "
                        + "; ".join(", ".join(f"{c}={v}" for c, v in e.items()) for e in empty))
    compare = {}
    for metric in scorer.compared:
        result = _compare(cells, metric, min_cell)
        if result is not None:
            compare[metric] = result
    if scorer.primary in compare and compare[scorer.primary]["basis"].startswith("all"):
        warnings.append(f"{name}: no cell has {min_cell} examples; its worst and best cells are "
                        f"ranked anyway and are not to be trusted")
    return {"name": name, "columns": list(combo), "cells": cells, "empty": empty,
            "compare": compare, "warnings": warnings}


def _value(cell, metric):
    v = cell[metric]
    return v["value"] if isinstance(v, dict) else v


def _compare(cells, metric, min_cell):
    """Worst and best cell by ``metric`` (higher is worse), the gap and the ratio worst / best.

    Only cells of at least ``min_cell`` examples are ranked; when none is that large, all are
    (and ``basis`` says so). None when no cell has the metric (e.g. no negatives for FPR).
    """
    scored = [c for c in cells if _value(c, metric) is not None]
    judged = [c for c in scored if not c["small"]]
    basis = f"cells with at least {min_cell} examples"
    if not judged:
        judged, basis = scored, f"all cells (none has {min_cell} examples)"
    if not judged:
        return None
    worst = max(judged, key=lambda c: _value(c, metric))
    best = min(judged, key=lambda c: _value(c, metric))
    w, b = _value(worst, metric), _value(best, metric)
    out = {"metric": metric, "worst": worst["label"], "best": best["label"],
           "worst_value": w, "best_value": b, "gap": w - b,
           "ratio": w / b if b > 0 else None, "basis": basis}
    if b == 0:
        out["ratio_note"] = f"the best cell's {metric} is 0, so the ratio is unbounded"
    if "count" in worst[metric] and worst is not best:
        out["gap_ci"] = list(newcombe_interval(worst[metric], best[metric]))
    return out


def newcombe_interval(first, second):
    """Newcombe's hybrid score interval (1998, method 10) for p1 - p2 of two independent rates.

    ``first``, ``second``: {"value": p, "ci": [low, high]} with Wilson intervals. Returns
    (p1 - p2 - sqrt((p1 - l1)^2 + (u2 - p2)^2), p1 - p2 + sqrt((u1 - p1)^2 + (p2 - l2)^2)).
    """
    (p1, (l1, u1)), (p2, (l2, u2)) = (first["value"], first["ci"]), (second["value"], second["ci"])
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


# --- per-cell metrics -------------------------------------------------------------------------


def _rate(count, of, level):
    """count / of with its Wilson interval; value and interval None when ``of`` is 0."""
    if of == 0:
        return {"value": None, "ci": [None, None], "count": 0, "of": 0}
    return {"value": count / of, "ci": list(wilson_interval(count, of, level)),
            "count": int(count), "of": int(of)}


class _Classification:
    primary = "error_rate"

    def __init__(self, y_true, y_pred, proba, positive, level):
        labels = np.unique(np.concatenate([y_true, y_pred]))
        if positive is None and set(labels.tolist()) <= {0, 1}:
            positive = 1
        elif positive is not None and positive not in labels.tolist():
            raise ValueError(f"positive={positive!r} is not a label of y_true or y_pred "
                             f"(labels: {labels.tolist()})")
        self.positive = positive.item() if isinstance(positive, np.generic) else positive
        self.level = level
        self.correct = y_true == y_pred
        self.is_pos = y_true == positive
        self.pred_pos = y_pred == positive
        self.compared = ("error_rate", "fpr", "fnr") if positive is not None else ("error_rate",)
        self.interval = (f"Wilson score interval, {level:.0%} (error, false positive and false "
                         f"negative rates); Newcombe's hybrid score interval for a gap")
        self.probs, self.prob_labels = _calibration_inputs(proba, y_true, positive, labels)
        self.calibration = ("not computed: no probabilities given (pass proba=)"
                            if self.probs is None else
                            f"expected calibration error per cell, {N_BINS} equal-width "
                            f"bins of the top-class probability")

    def cell(self, m):
        n = int(m.sum())
        errors = int((~self.correct[m]).sum())
        out = {"n": n, "accuracy": 1 - errors / n,
               "error_rate": _rate(errors, n, self.level)}
        if self.positive is not None:
            neg, pos = m & ~self.is_pos, m & self.is_pos
            out["fpr"] = _rate(int(self.pred_pos[neg].sum()), int(neg.sum()), self.level)
            out["fnr"] = _rate(int((~self.pred_pos[pos]).sum()), int(pos.sum()), self.level)
        if self.probs is not None:
            out["ece"] = calibration_error(self.probs[m], self.prob_labels[m])["ece"]
        return out


def _calibration_inputs(proba, y_true, positive, labels):
    """(probs (N, K), integer labels (N,)) for calibration_error, or (None, None)."""
    if proba is None:
        return None, None
    try:
        p = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("proba must be numbers: (N, K) class probabilities or (N,) "
                         "probabilities of the positive class") from None
    n = len(y_true)
    if p.ndim not in (1, 2) or len(p) != n:
        raise ValueError(f"proba must be (N, K) or (N,) with N = {n} examples, got shape "
                         f"{p.shape}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        row = int(np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)).reshape(n, -1)
                                 .any(1))[0])
        raise ValueError(f"proba must lie in [0, 1]; row {row} holds {p[row].tolist()}")
    if p.ndim == 1:
        if positive is None or len(labels) > 2:
            raise ValueError(f"a 1-D proba is the probability of the positive class of a binary "
                             f"task; these labels are {labels.tolist()} with positive="
                             f"{positive!r}: give (N, K) probabilities instead")
        return np.stack([1 - p, p], axis=1), (y_true == positive).astype(np.int64)
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > _PROBA_SUM_TOLERANCE)
    if len(off):
        raise ValueError(f"each row of proba must sum to 1; row {off[0]} sums to "
                         f"{sums[off[0]]:.6g}")
    k = p.shape[1]
    if y_true.dtype.kind not in "iub" or y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"with (N, {k}) proba, column k is the probability of label k, so "
                         f"y_true must be integers in [0, {k}); got labels "
                         f"{np.unique(y_true)[:10].tolist()}")
    return p, y_true.astype(np.int64)


class _Regression:
    primary = "mae"
    compared = ("mae", "rmse")
    positive = None
    calibration = ("not available without predictive intervals: interval coverage needs a "
                   "model that predicts intervals")

    def __init__(self, y_true, y_pred, level, seed):
        yt, yp = _numeric("y_true", y_true), _numeric("y_pred", y_pred)
        self.y_true, self.err = yt, yp - yt
        self.level, self.seed = level, seed
        self.interval = (f"percentile bootstrap, {level:.0%}, {N_BOOT} resamples of each cell "
                         f"(MAE; RMSE as the root of the mean squared error's interval)")
        self.cells_seen = 0

    def cell(self, m):
        e, y = self.err[m], self.y_true[m]
        n = len(e)
        ss_res, ss_tot = float(np.sum(e * e)), float(np.sum((y - y.mean()) ** 2))
        out = {"n": n, "mae": {"value": float(np.mean(np.abs(e))), "ci": [None, None]},
               "rmse": {"value": math.sqrt(ss_res / n), "ci": [None, None]},
               "r2": 1 - ss_res / ss_tot if ss_tot > 0 else None}
        if ss_tot == 0:
            out["r2_note"] = "the target is constant in this cell, so R^2 is undefined"
        if n >= 2:  # one example resamples to itself: no interval
            rng = np.random.default_rng((self.seed, self.cells_seen))
            abs_means, sq_means = _bootstrap_means(np.abs(e), e * e, rng)
            alpha = (1 - self.level) / 2
            out["mae"]["ci"] = np.quantile(abs_means, [alpha, 1 - alpha]).tolist()
            out["rmse"]["ci"] = np.sqrt(np.quantile(sq_means, [alpha, 1 - alpha])).tolist()
        self.cells_seen += 1
        return out


def _numeric(name, y):
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"regression needs numeric {name}; got values such as "
                         f"{np.asarray(y)[:3].tolist()}") from None
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        raise ValueError(f"{name} must be finite for regression; entry {bad[0]} is {y[bad[0]]}")
    return y


def _bootstrap_means(a, b, rng):
    """Means of ``a`` and of ``b`` over the same N_BOOT resamples, drawn in bounded chunks."""
    n = len(a)
    rows = max(1, _BOOT_DRAWS // n)
    out_a, out_b = [], []
    for start in range(0, N_BOOT, rows):
        idx = rng.integers(0, n, size=(min(rows, N_BOOT - start), n))  # (B, n)
        out_a.append(a[idx].mean(axis=1))
        out_b.append(b[idx].mean(axis=1))
    return np.concatenate(out_a), np.concatenate(out_b)
