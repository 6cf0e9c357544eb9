"""The model card (Mitchell et al. 2019) of any model on any data, in one call:

    import layerwise as lw
    card = lw.audit.card(model, (x_test, y_test), groups={"sex": sex, "race": race},
                         train=(x_train, y_train), val=(x_val, y_val), out="card",
                         intended_use="ranking loan applications for a second reading",
                         intended_users="the bank's credit officers")
    card["disaggregated"]["headline"]   # "Worst group: sex=F & race=b, error rate 0.180 ..."

    splits = lw.data.table_splits("adult.csv", target="income", groups=["sex", "race"])
    lw.audit.card(model, splits, out="card")  # its test split, group columns, train and val

The model: a layerwise Module, any function of a NumPy batch, or an object with
``predict_proba`` (a scikit-learn classifier) or ``predict``. Per example it returns K class
logits (one logit of class 1 for a binary classifier), or a regression's value, or three
columns (low, prediction, high) of a predictive interval of ``interval_level``.

The card: metrics with intervals, calibration (ECE and a temperature fitted on ``val``; a
regression's interval coverage) and data checks when ``train`` is given (sections.py); the
audit on people for the group columns named (people.py); the intended use as stated, and
when, with which layerwise, it was written (here). Runs of ``layerwise train`` get the same
sections from ``build_report`` (report.py); card_html.py writes them.
"""

import datetime
import json
import os

import numpy as np

import layerwise
from layerwise.audit import calibration
from layerwise.audit.card_html import write_card
from layerwise.audit.disaggregate import MIN_CELL, group_columns
from layerwise.audit.people import people_section
from layerwise.audit.predictions import (
    classifier_logits,
    examples,
    host,
    model_outputs,
    regression_values,
    resolve_task,
)
from layerwise.audit.sections import (
    INTERVAL_LEVEL,
    classification_sections,
    data_checks_section,
    majority_accuracy,
    mean_baseline,
    regression_sections,
)
from layerwise.autograd import Tensor
from layerwise.data import TensorDataset

ECE_CAVEAT = 0.05  # above this ECE the caveats call the confidences miscalibrated
NO_INTENDED_USE = ("No intended use was stated for this model, so nothing here says which "
                   "uses its figures support; state it with intended_use= (lw.audit.card) or "
                   "--intended-use TEXT (layerwise train).")
NO_GROUPS = ("No group columns were given, so this card cannot show how the model does for "
             "different groups of the people it affects; name them with groups= "
             "(lw.audit.card), --group COL (layerwise train on a table) or --groups FILE "
             "(layerwise audit).")
OTHER_DATA = ("Evaluated only on the test data given; performance on people, places or times "
              "that data does not represent is unknown.")


def card(model, test, groups=None, *, task=None, train=None, val=None, out=None,
         intended_use=None, intended_users=None, name=None, classes=None, positive=None,
         interval_level=INTERVAL_LEVEL, min_cell=MIN_CELL, batch_size=None):
    """Audit ``model`` on ``test``; returns the card (a JSON-ready dict) and, with ``out``,
    writes card.json and card.html into that directory.

    ``test``: a dataset of (x, y) pairs (a TensorDataset, a split of ``table_splits``), a pair
    (x, y), or a whole TableSplits (its test split, and its train and val splits and group
    columns unless given). ``groups``: {column: one label per test example}, or with a
    TableSplits a list of its group columns. ``task``: "classification" or "regression";
    read off the labels and outputs when None. ``val`` fits the temperature; ``train`` is
    checked for duplicates, class balance and copies of test examples. ``classes``: class
    names in label order. ``positive``: the class whose false positive and false negative
    rates are reported (default 1 for a binary task). Cells under ``min_cell`` examples are
    shown with a warning but not ranked.
    """
    for arg, text in (("intended_use", intended_use), ("intended_users", intended_users),
                      ("name", name)):
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise TypeError(f"{arg} must be a non-empty string, got {text!r}")
    if isinstance(min_cell, bool) or not isinstance(min_cell, (int, np.integer)) or min_cell < 1:
        raise ValueError(f"min_cell must be an integer >= 1 (default {MIN_CELL}), got "
                         f"{min_cell!r}")
    if isinstance(interval_level, bool) or not isinstance(interval_level, (int, float)) or \
            not 0 < interval_level < 1:
        raise ValueError(f"interval_level must be the nominal coverage of the model's "
                         f"intervals, strictly between 0 and 1 (e.g. 0.9), got {interval_level!r}")
    out = _check_out(out)  # before the work: a bad path fails at once
    source, splits = {"given_as": type(test).__name__}, None
    if _is_table_splits(test):
        splits = test
        test = splits["test"]
        train = splits["train"] if train is None else train
        val = splits["val"] if val is None else val
        task = splits.task if task is None else task
        classes = splits.classes if classes is None else classes
        groups = _table_groups(splits, groups)
        source.update(table=splits.info.get("path"), target=splits.info.get("target"),
                      split_by=splits.info.get("split_by"))
    content, figures, sizes = evaluate(model, test, groups, task=task, train=train, val=val,
                                       classes=classes, positive=positive, min_cell=min_cell,
                                       interval_level=interval_level, batch_size=batch_size,
                                       table=splits)
    parameters = model.num_parameters() if hasattr(model, "num_parameters") else None
    result = {
        "model_details": {
            "name": name or type(model).__name__,
            "description": f"{type(model).__name__}"
                           + (f" with {parameters:,} parameters" if parameters else "")
                           + f", audited with lw.audit.card on its {sizes['test']:,} test "
                             f"examples",
            "task": content["metrics"]["task"], "parameters": parameters,
            "layerwise_version": layerwise.__version__},
        "written": written("lw.audit.card"),
        "intended_use": intended_use_section(intended_use, intended_users, "the caller"),
        "data": {"source": source, "splits": sizes},
        **content,
    }
    result["caveats"] = caveats(result, OTHER_DATA)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        write_card(out, result, figures)
    return result


def evaluate(model, test, groups=None, task=None, train=None, val=None, classes=None,
             positive=None, min_cell=MIN_CELL, interval_level=INTERVAL_LEVEL, batch_size=None,
             table=None):
    """(sections, figures, split sizes) of ``model`` on its data: the sections metrics,
    disaggregated, calibration and, with ``train``, data_checks. ``table``: the TableSplits
    the splits come from, whose group labels the copy check compares too."""
    x_te, y_te = examples(test, "test")
    if groups is not None:
        groups = group_columns(groups, len(y_te))
    out, kind = model_outputs(model, x_te, task, batch_size)
    task = resolve_task(task, out, kind, y_te)
    split_x = {"test": x_te}
    split_y = {}
    for role, data in (("train", train), ("val", val)):
        if data is not None:
            split_x[role], split_y[role] = examples(data, role)
    figures, sections = {}, {}
    if task == "classification":
        logits, y = classifier_logits(out, kind, y_te, "test")
        k = logits.shape[1]
        if classes is not None and len(classes) != k:
            raise ValueError(f"classes names {len(classes)} classes but the model gives {k} "
                             f"class scores per example; give one name per class, in label "
                             f"order")
        if positive is not None and positive not in range(k):
            raise ValueError(f"positive must be a class label in 0..{k - 1}, got {positive!r}")
        if "train" in split_y:
            _check_train_labels(split_y["train"], k)
        logits_va = y_va = None
        if "val" in split_x:
            out_va, kind_va = model_outputs(model, split_x["val"], task, batch_size)
            logits_va, y_va = classifier_logits(out_va, kind_va, split_y["val"], "val", k)
        sections, figures = classification_sections(logits, y, logits_va, y_va, classes)
        if "train" in split_y:
            sections["metrics"]["majority_accuracy"] = majority_accuracy(split_y["train"], y)
        probs = calibration.softmax(logits)
        positive = 1 if positive is None and k == 2 else positive
        people = {"proba": probs, "positive": positive} if groups is not None else None
        pred = probs.argmax(1)
    else:
        pred, intervals, y = regression_values(out, y_te, "test")
        sections, figures = regression_sections(pred, y, intervals, interval_level)
        if "train" in split_y:
            sections["metrics"]["baseline"] = mean_baseline(split_y["train"], y)
        if "train" in split_y:
            _check_train_labels(split_y["train"], None)
        people = {"intervals": intervals} if groups is not None else None
    dis = sections.setdefault("disaggregated", {})
    if people is not None:
        dis["groups"], people_figs = people_section(y, pred, groups, task,
                                                    min_cell=min_cell, **people)
        dis["headline"] = dis["groups"].pop("headline")
        figures.update(people_figs)
    else:
        dis["note"] = NO_GROUPS
    if "train" in split_x:
        probs_te = calibration.softmax(logits) if task == "classification" else None
        if table is None and split_x["train"].ndim < 3:  # rows of a table given as arrays
            table = {role: TensorDataset(split_x[role], split_y.get(role, y_te))
                     for role in split_x}
        sections["data_checks"] = data_checks_section(
            split_x["train"], split_y["train"], split_x["test"], y, split_x.get("val"), task,
            probs_te, table)
    sizes = {role: len(split_x[role]) for role in ("train", "val", "test") if role in split_x}
    return sections, figures, sizes


# --- inputs ----------------------------------------------------------------------------------


def _check_train_labels(y, num_classes):
    """The training split's labels: class indices 0..K-1, or finite regression targets."""
    if y.dtype.kind not in "iubf" or not np.isfinite(y.astype(np.float64)).all():
        raise ValueError(f"the train labels must be finite numbers, got values such as "
                         f"{y[:5].tolist()}")
    if num_classes is None:
        return
    if not np.all(y == np.round(y)) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"the model gives {num_classes} class scores per example, so the train "
                         f"labels must be integers 0..{num_classes - 1}; they run from "
                         f"{y.min()} to {y.max()}")


def _is_table_splits(data):
    return isinstance(data, dict) and hasattr(data, "groups") and hasattr(data, "info")


def _table_groups(splits, groups):
    """The test split's group labels of the columns named (all of the table's by default)."""
    available = splits.groups.get("test", {})
    if groups is None:
        return {c: available[c] for c in available} or None
    if isinstance(groups, dict):
        return groups
    names = [groups] if isinstance(groups, str) else list(groups)
    for c in names:
        if c not in available:
            raise ValueError(f"group column {c!r} is not one of the table's group columns "
                             f"{list(available)}; name them in table_splits(groups=[...])")
    return {c: available[c] for c in names}


def _check_out(out):
    """``out`` as a path where a card may be written: a directory (or none yet), holding no
    card.json or card.html that layerwise did not write."""
    if out is None:
        return None
    try:
        path = os.fspath(out)
    except TypeError:
        raise TypeError(f"out must be a directory path, got {type(out).__name__}") from None
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"out={path!r} is a file; give a directory to write card.json and "
                         f"card.html into")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"out={path!r} lies under {parent!r}, which is a file; give a "
                         f"directory path")
    ours = _is_card(os.path.join(path, "card.json"))
    for fname in ("card.json", "card.html"):
        target = os.path.join(path, fname)
        if os.path.lexists(target) and not ours:
            raise FileExistsError(f"{target} exists and is not a card layerwise wrote; choose "
                                  f"another out directory, or move the file away")
    return path


def _is_card(path):
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and "model_details" in found and "caveats" in found


# --- who, when, what for ---------------------------------------------------------------------


def written(by):
    """When the card was written, with which layerwise, by what."""
    return {"date": datetime.date.today().isoformat(),
            "layerwise_version": layerwise.__version__, "by": by}


def intended_use_section(use, users=None, stated_by=None):
    """The intended use and users as stated, or a warning that none was."""
    return {"use": use, "users": users, "stated_by": stated_by if use else None,
            "warning": None if use else NO_INTENDED_USE}


def caveats(card, scope):
    """What a reader must know before trusting the card's figures; ``scope``: the last line,
    on data the evaluation did not cover."""
    out = []
    warning = (card.get("intended_use") or {}).get("warning")
    if warning:
        out.append(warning)
    cal = card.get("calibration") or {}
    if cal.get("task") == "classification" and cal["ece"] > ECE_CAVEAT:
        if cal["temperature"] is None:
            fix = "give a validation split (val=) to fit a temperature."
        elif cal["ece_scaled"] < cal["ece"]:
            fix = (f"divide the logits by T = {cal['temperature']:.2f} for ECE "
                   f"{cal['ece_scaled']:.3f}.")
        else:
            fix = (f"the temperature fitted on validation (T = {cal['temperature']:.2f}) does "
                   f"not lower it on test (ECE {cal['ece_scaled']:.3f}).")
        out.append(f"Confidences are miscalibrated (ECE {cal['ece']:.3f}); {fix}")
    if cal.get("task") == "regression":
        if not cal["intervals"]:
            out.append(cal["note"])
        elif cal["verdict"] != "consistent with its nominal level":
            cov = cal["coverage"]
            out.append(f"The model's intervals cover {cov['value']:.1%} of test targets (95% CI "
                       f"{cov['ci'][0]:.1%} to {cov['ci'][1]:.1%}) against a nominal "
                       f"{cal['nominal']:.0%}: it {cal['verdict']}.")
    rob = (card.get("robustness") or {}).get("corruptions")
    if rob:
        worst = min((min(v), kind) for kind, v in rob.items()
                    if kind not in ("clean", "severities", "n", "note"))
        out.append(f"Brittle under shift: accuracy falls from {rob['clean']:.1%} to "
                   f"{worst[0]:.1%} under '{worst[1]}' at the highest severity.")
    dc = card.get("data_checks") or {}
    leaked = (dc.get("contamination_test") or {}).get("n_leaked")
    if leaked and dc.get("near_checked", True):
        out.append(f"{leaked} test examples also appear in training: the test metrics "
                   "overstate performance.")
    elif leaked:
        share = dc["contamination_test"]["share"]
        out.append(f"{leaked} test rows ({share:.2%}) are exact copies of training rows; up to "
                   f"{dc['copy_threshold']:.0%} can be distinct records that happen to match, "
                   f"more would mean the test metrics overstate performance.")
    if (dc.get("contamination_test_in_val") or {}).get("n_leaked"):
        out.append(f"{dc['contamination_test_in_val']['n_leaked']} test examples also appear in "
                   "validation: choices made on validation scores have seen the test set.")
    details = card["model_details"]
    if "int8" in (details.get("final_model") or ""):
        out.append(f"This card audits model.safetensors, the float32 model before "
                   f"quantization; the int8 model {details['final_model']} is measured only "
                   f"in metrics.json (accuracy, agreement with the original, size, latency).")
    dis = card.get("disaggregated") or {}
    for key, table in dis.items():
        # with group columns audited, a --groups table's warnings are theirs, said once
        if key.startswith("by_") and not (key != "by_true_class" and "groups" in dis):
            out.extend(table.get("warnings", []))
    if "groups" in dis:
        out.extend(dis["groups"]["warnings"])
    out.append(scope)
    return out
