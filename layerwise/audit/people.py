"""The audit on the people a model affects, as a model card shows it: ``disaggregate`` over the
group columns a user names and their intersections, one headline line naming the worst group,
interval coverage per cell for a regression that predicts intervals, and a bar plot per
breakdown with its intervals.

    section, figures = people_section(y, pred, {"sex": sex, "race": race}, proba=probs)
    section["headline"]
    # "Worst group: sex=F & race=b, error rate 0.180 (95% CI 0.130 to 0.243, n=180), against
    #  0.062 (95% CI 0.045 to 0.085, n=520) for the best, sex=M & race=a; gap 0.118
    #  (95% CI 0.066 to 0.179), ratio 2.90x"
"""

import numpy as np

from layerwise.audit import plots
from layerwise.audit.disaggregate import LEVEL, MIN_CELL, disaggregate, group_columns
from layerwise.audit.groups import wilson_interval

# Each breakdown gets a bar plot up to this many: every breakdown of three columns (2^3 - 1);
# four or more columns still get every table, and plots of the first seven.
MAX_PLOTS = 7
_METRIC_WORDS = {"error_rate": "error rate", "fpr": "false positive rate",
                 "fnr": "false negative rate", "mae": "MAE", "rmse": "RMSE"}


def people_section(y_true, y_pred, groups, task="classification", proba=None, positive=None,
                   intervals=None, min_cell=MIN_CELL, level=LEVEL):
    """(the card's section, figures): disaggregate's result with "headline" added.

    ``intervals``: (low, high) arrays of a regression's predictive intervals; each cell then
    gains "coverage", the share of its targets inside their interval with a Wilson interval.
    """
    result = disaggregate(y_true, y_pred, groups, task=task, proba=proba, positive=positive,
                          min_cell=min_cell, level=level)
    if intervals is not None:
        _add_coverage(result, groups, y_true, intervals, level)
    result["headline"] = headline(result)
    figures = {f"people_{i}": _bars(b, result["primary"])
               for i, b in enumerate(result["breakdowns"][:MAX_PLOTS])}
    return result, figures


def cell_name(cell):
    """'sex=F & race=b': the cell's values, joined as a reader says them."""
    return " & ".join(f"{c}={v}" for c, v in cell["values"].items())


def headline(result):
    """One line: the worst group of all breakdowns against the best of its own breakdown.

    Breakdowns whose cells are large enough to rank come first; among them the one with the
    worst value of the primary metric, the finer one (more columns) on a tie.
    """
    metric = result["primary"]
    word = _METRIC_WORDS[metric]
    pick = None
    for b in result["breakdowns"]:
        compare = b["compare"].get(metric)
        if compare is None or compare["worst"] == compare["best"]:
            continue
        trusted = not compare["basis"].startswith("all")
        key = (trusted, compare["worst_value"], len(b["columns"]))
        if pick is None or key > pick[0]:
            pick = (key, b, compare)
    if pick is None:
        return (f"Worst group: none to name; no group column splits the {result['n']:,} test "
                f"examples into two or more groups with a measured {word}")
    (trusted, _, _), breakdown, compare = pick
    cells = {c["label"]: c for c in breakdown["cells"]}
    worst, best = cells[compare["worst"]], cells[compare["best"]]
    ci_words = f"{result['level']:.0%} CI"
    line = (f"Worst group: {cell_name(worst)}, {word} {_value_ci(worst, metric, ci_words)}, "
            f"against {_value_ci(best, metric, ci_words)} for the best, {cell_name(best)}; "
            f"gap {_num(compare['gap'], metric)}")
    if "gap_ci" in compare:
        lo, hi = compare["gap_ci"]
        line += f" ({ci_words} {_num(lo, metric)} to {_num(hi, metric)})"
    if compare["ratio"] is not None:
        line += f", ratio {compare['ratio']:.2f}x"
    else:
        line += f", ratio unbounded (the best group's {word} is 0)"
    if not trusted:
        line += (f"; no group has {result['min_cell']} examples, so this ranking is not to be "
                 f"trusted")
    return line


def _num(v, metric):
    # rates read best with three decimals; errors in a target's units with four digits
    return f"{v:.3f}" if metric in ("error_rate", "fpr", "fnr") else f"{v:.4g}"


def _value_ci(cell, metric, ci_words):
    entry = cell[metric]
    lo, hi = entry["ci"]
    interval = (f"{ci_words} {_num(lo, metric)} to {_num(hi, metric)}, " if lo is not None
                else "no interval from one example, ")
    return f"{_num(entry['value'], metric)} ({interval}n={cell['n']:,})"


def _add_coverage(result, groups, y_true, intervals, level):
    """Each cell's interval coverage: targets inside [low, high], with a Wilson interval."""
    low, high = intervals
    y = np.asarray(y_true, np.float64)
    inside = (low <= y) & (y <= high)  # (N,) bool
    columns = group_columns(groups, len(y))
    result["calibration"] = (f"interval coverage per cell: the share of its targets inside "
                             f"the model's (low, high) interval, with a Wilson {level:.0%} "
                             f"interval")
    result["overall"]["coverage"] = _share(inside, np.ones(len(y), bool), level)
    for b in result["breakdowns"]:
        for cell in b["cells"]:
            m = np.ones(len(y), bool)
            for c, v in cell["values"].items():
                m &= columns[c] == v
            cell["coverage"] = _share(inside, m, level)


def _share(hits, mask, level):
    n, k = int(mask.sum()), int(hits[mask].sum())
    return {"value": k / n, "ci": list(wilson_interval(k, n, level)), "count": k, "of": n}


def _bars(breakdown, metric):
    """The breakdown's cells as bars of ``metric`` with their intervals (none: a bare bar)."""
    cells = breakdown["cells"]
    names = [" & ".join(c["values"].values()) for c in cells]
    values = [c[metric]["value"] for c in cells]
    lows = [c[metric]["ci"][0] if c[metric]["ci"][0] is not None else v
            for c, v in zip(cells, values)]
    highs = [c[metric]["ci"][1] if c[metric]["ci"][1] is not None else v
             for c, v in zip(cells, values)]
    top = 1.15 * max(highs) if max(highs) > 0 else 1.0
    top = min(top, 1.0) if metric in ("error_rate", "fpr", "fnr") else top
    return plots.group_bars(names, values, lows, highs,
                            f"{_METRIC_WORDS[metric]} by {breakdown['name']}", ylim=(0.0, top))
