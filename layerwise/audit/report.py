"""Load a finished run, audit it, and write its model card.

    card = build_report("runs/mlp-20260101-120000")   # writes card.json and card.html
    write_model_card(run_dir)                          # the same, sized for the end of training

Everything here is evaluation over the run's own splits, rebuilt from config.json with the
same seed, so the audit sees exactly the data the run trained, validated and tested on. The
sections any model gets (metrics, the audit on people, calibration, data checks, intended use)
are model_card.py's; an image run adds robustness and explanations, a table run is audited by
its own group columns.
"""

import csv
import os

import numpy as np

from layerwise.audit import calibration, data_checks, explain, groups, plots, shift
from layerwise.audit.card_html import write_card
from layerwise.audit.model_card import (
    NO_GROUPS,
    caveats,
    evaluate,
    intended_use_section,
    written,
)
from layerwise.audit.people import people_section
from layerwise.audit.predictions import split_arrays
from layerwise.audit.sections import (
    bars,
    classification_sections,
    data_checks_section,
    summary,
)
from layerwise.autograd import Tensor, no_grad
from layerwise.data.loader import inference_batch_size
from layerwise.errors import RunError
from layerwise.train.finished import FinishedRun as LoadedRun  # noqa: F401  (the audit's name)
from layerwise.train.finished import load_finished_run
from layerwise.train.rundir import RunLock

N_EXPLAIN = 10


def check_split_contamination(splits, near_threshold=data_checks.NEAR_THRESHOLD):
    """Copies of test examples in the training split of {'train', 'test', ...} datasets.

    The check a trainer runs before training; refuse when ``report.leaked`` is not empty:
    ``raise RunError(report.message())``.
    """
    x_train, _ = split_arrays(splits["train"])
    x_test, _ = split_arrays(splits["test"])
    return data_checks.check_contamination(x_train, x_test, near_threshold=near_threshold,
                                           other_name="test")


def refuse_contamination(data, near_threshold=data_checks.NEAR_THRESHOLD):
    """Raise ContaminationError when test examples are copied into the training split.

    ``data``: a TaskData or a dict of splits; tasks without a test split pass. Meant as the
    ``check_data`` hook of ``start_run`` (skipped with ``--allow-contamination``).
    """
    from layerwise.audit import table_checks

    if table_checks.is_table(data):  # exact copies of records; near copies mean nothing here
        return table_checks.refuse_table_copies(data)
    splits = getattr(data, "splits", data)
    if "test" not in splits or "train" not in splits:
        return None
    report = check_split_contamination(splits, near_threshold)
    if report.leaked:
        raise data_checks.ContaminationError(report.message())
    return report


def load_run(run_dir):
    """The finished run, rebuilt (see layerwise.train.finished)."""
    return load_finished_run(run_dir)


def predict_logits(model, x, batch_size=None):
    """Logits (N, K) as float64, in eval mode and without a graph."""
    batch_size = batch_size or inference_batch_size(x.shape[1:])
    out = []
    with no_grad():
        for s in range(0, len(x), batch_size):
            out.append(model(Tensor(np.ascontiguousarray(x[s:s + batch_size]))).data)
    return np.concatenate(out).astype(np.float64)


# --- the audit -------------------------------------------------------------------------------


def audit_run(run, group_labels=None, group_name="group", full=True, seed=0):
    """All checks of an image classifier run; returns (card dict, figures dict of base64 PNGs)."""
    x_tr, y_tr = split_arrays(run.splits["train"])
    x_va, y_va = split_arrays(run.splits["val"])
    x_te, y_te = split_arrays(run.splits["test"])
    logits_va, logits_te = predict_logits(run.model, x_va), predict_logits(run.model, x_te)
    card, figures = classification_sections(logits_te, y_te, logits_va, y_va)
    probs_te = calibration.softmax(logits_te)
    pred_te = probs_te.argmax(1)
    if group_labels is not None:
        g = np.asarray(group_labels)
        table = groups.group_metrics(y_te, pred_te, g)
        dis = card["disaggregated"]
        dis["by_" + group_name] = summary(table)
        figures["per_group"] = bars(table, sorted(table["groups"]), "accuracy")
        positive = 1 if probs_te.shape[1] == 2 else None
        dis["groups"], people_figs = people_section(y_te, pred_te, {group_name: g},
                                                    proba=probs_te, positive=positive)
        dis["headline"] = dis["groups"].pop("headline")
        figures.update(people_figs)
    elif _user_data(run):
        card["disaggregated"]["note"] = NO_GROUPS

    noise = shift.uniform_noise_like(x_te, seed=seed)
    logits_noise = predict_logits(run.model, noise)
    msp_in, msp_out = shift.max_softmax(logits_te), shift.max_softmax(logits_noise)
    card["robustness"] = {
        "ood": {"far_ood_set": f"{len(noise)} images of uniform [0, 1] noise",
                "auroc_max_softmax": shift.auroc(msp_in, msp_out),
                "auroc_energy": shift.auroc(shift.energy_score(logits_te),
                                            shift.energy_score(logits_noise))}}
    figures["ood"] = plots.ood_histogram(msp_in, msp_out, "max softmax probability")
    # splits may be ordered by class: subsample at random, not the first rows
    sub = np.sort(np.random.default_rng(seed).permutation(len(x_te))[:len(x_te) if full else 200])
    n_c = len(sub)

    def predict(images):
        return predict_logits(run.model, images).argmax(1)

    table = shift.corruption_table(predict, x_te[sub], y_te[sub], seed=seed)
    card["robustness"]["corruptions"] = dict(table, n=n_c)
    card["robustness"]["corruptions"]["note"] = "full test split" if full else \
        f"{n_c} test examples drawn at random (seed {seed})"
    figures["corruptions"] = plots.corruption_curves(table)

    card["explanations"], figures["saliency"], grid_cam = _explanations(run.model, x_te, y_te,
                                                                        pred_te)
    if grid_cam is not None:
        figures["grad_cam"] = grid_cam
    card["data_checks"] = data_checks_section(x_tr, y_tr, x_te, y_te, x_va, "classification",
                                              probs_te)
    return card, figures


def audit_table(run, group_labels=None, group_name="group", group_columns=None):
    """(sections, figures) of a table run: metrics, the audit on people by the run's group
    columns (or ``group_columns`` of them) and their intersections, calibration, data checks.
    ``group_labels``: one more column, ``group_name``, of one label per test example."""
    splits = run.splits
    recorded = list((run.config.get("data") or {}).get("groups") or [])
    names = recorded if group_columns is None else list(group_columns)
    available = splits.groups.get("test", {})
    for name in names:
        if name not in available:
            raise RunError(f"group column {name!r} is not one of the run's group columns "
                           f"{recorded}; train with --group {name} to audit by it")
    columns = {name: available[name] for name in names}
    if group_labels is not None:
        if group_name in columns:
            raise RunError(f"--groups names its column {group_name!r}, which is already a group "
                           f"column of the run; name it otherwise with --group-column")
        columns[group_name] = group_labels
    sections, figures, _ = evaluate(run.model, splits["test"], columns or None, task=splits.task,
                                    train=splits["train"], val=splits["val"],
                                    classes=splits.classes, table=splits)
    return sections, figures


def _explanations(model, x_te, y_te, pred_te):
    # evenly spaced test examples: the splits may be ordered by class
    pick = np.unique(np.linspace(0, len(x_te) - 1, min(N_EXPLAIN, len(x_te))).astype(np.int64))
    x, target = np.ascontiguousarray(x_te[pick]), pred_te[pick]
    sal = explain.saliency(model, x, target)
    attr, delta, f_diff = explain.integrated_gradients(model, x, target, n_steps=50)
    rel = np.abs(delta) / np.maximum(np.abs(f_diff), 1e-12)
    titles = [f"y={int(y_te[i])} p={int(pred_te[i])}" for i in pick]
    grid = plots.image_grid(list(x), [list(sal), list(attr)], titles,
                            row_labels=["input", "saliency", "integrated\ngradients"])
    out = {"examples": pick.tolist(), "targets": target.tolist(),
           "ig_steps": 50, "ig_baseline": "black image (zeros)",
           "ig_completeness_delta": delta.tolist(), "ig_relative_delta": rel.tolist(),
           "method": "saliency = d logit / d input; integrated gradients with 50 "
                     "Gauss-Legendre nodes; completeness delta = sum(IG) - (F(x) - F(0))"}
    convs = [(name, m) for name, m in model.named_modules() if type(m).__name__ == "Conv2d"]
    cam_fig = None
    if convs:
        name, layer = convs[-1]
        cams = explain.grad_cam(model, layer, x, target)
        out["grad_cam_layer"] = f"{name} ({type(layer).__name__}, the last conv layer)"
        cam_fig = plots.image_grid(list(x), [list(cams)], titles, cmap="jet",
                                   row_labels=["input", "Grad-CAM"])
    return out, grid, cam_fig


def attention_example(run, index=0, max_tokens=None):
    """(ids (1, T), a label per token) of validation sequence ``index`` as the model sees it.

    A masked-LM sequence is cut at its first [PAD]: without the attention mask, which
    attention_maps does not pass, the maps would spread onto the padding.
    """
    x, _ = split_arrays(run.splits["val"])
    row, specials = x[index], ()
    if run.kind == "mlm":
        from layerwise.train.recipes.masked_lm import SPECIALS, special_ids

        specials = SPECIALS
        pads = np.flatnonzero(row == special_ids(run.tokenizer)["[PAD]"])
        row = row[:pads[0]] if len(pads) else row
    ids = np.ascontiguousarray(row[None, :max_tokens])  # (1, T)
    return ids, explain.token_labels(run.tokenizer, ids[0], specials)


def _attention(run, n_tokens=24):
    """Attention maps of a transformer on the start of the first validation sequence."""
    ids, tokens = attention_example(run, 0, n_tokens)
    maps = explain.attention_maps(run.model, Tensor(ids))
    return ({"attention_layers": len(maps), "attention_tokens": tokens,
             "method": "attention weights of each layer on the first validation tokens, "
                       "averaged over heads"},
            plots.attention_heatmaps(maps, tokens))


# --- training cost (issue 5 writes it; we only read) -------------------------------------------

_COST_WORDS = ("second", "energy", "kwh", "joule", "co2", "carbon", "emission", "flop", "power",
               "memory")


def training_cost(run_dir, metrics):
    """What the run recorded about its cost: metrics.json entries and emissions.csv, if any."""
    cost = {k: v for k, v in metrics.items() if any(w in k.lower() for w in _COST_WORDS)}
    path = os.path.join(run_dir, "emissions.csv")
    if os.path.isfile(path):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows:
            cost["emissions_csv"] = rows[-1]
    measured = any(k != "train_seconds" for k in cost)
    return {"measured": measured, "values": cost,
            "note": None if measured else "energy and emissions were not measured for this run"}


# --- the card ----------------------------------------------------------------------------------


def _details(run):
    hp = run.config.get("hyperparameters", {})
    return {"name": os.path.basename(os.path.normpath(run.run_dir)),
            "recipe": run.recipe.name, "description": run.recipe.description,
            "task": run.kind, "parameters": run.model.num_parameters(),
            "seed": run.config.get("seed"), "hyperparameters": hp,
            "layerwise_version": run.config.get("layerwise_version"),
            # a `layerwise compress` run: what was done to which model
            **({"compressed_from": run.config["compressed_from"],
                "compression": run.config.get("compression", []),
                "final_model": run.config.get("final_model")}
               if "compressed_from" in run.config else {})}


_DIGITS_USE = ("Classifying centred 28x28 grey-scale handwritten digits (MNIST style) for "
               "teaching and experiments. Not for decisions about people, or for other kinds "
               "of images.")
_SCENES_USE = ("Finding and labelling handwritten digits in synthetic grey scenes, for teaching "
               "and experiments with detection and segmentation. Not for decisions about "
               "people, or for photographs or documents.")
_CORPUS_USE = ("Teaching and experiments with language models on the run's own corpus; not for "
               "producing text that people will rely on.")
_SCOPE = {
    "digits": "Evaluated only on held-out splits of the same source; performance on other "
              "handwriting, scanners or image sizes is unknown.",
    "image": "Evaluated only on held-out splits of the same image folder; performance on images "
             "from other sources, cameras or sizes is unknown.",
    "table": "Evaluated only on held-out rows of the same table; performance on people, places "
             "or times the table does not represent is unknown.",
    "text": "Evaluated only on held-out text from the same source.",
    "scenes": "Evaluated only on scenes built the same way from held-out digits; performance "
              "on real photographs, other backgrounds, sizes or crowding is unknown.",
    "coco": "Evaluated only on held-out images of the same annotation file; performance on "
            "images from other sources is unknown.",
}


def _user_data(run):
    return (run.config.get("data") or {}).get("source") == "user"


def _intended_use(run):
    """The run's stated use; for the shipped data only, the recipe's own; else a warning."""
    text, users = run.config.get("intended_use"), run.config.get("intended_users")
    if text:
        return intended_use_section(text, users, "the run's config (layerwise train "
                                                 "--intended-use)")
    default = None if _user_data(run) else (
        _DIGITS_USE if run.kind == "image" else _CORPUS_USE if run.kind in ("lm", "mlm")
        else _SCENES_USE if run.kind in ("detect", "segment") else None)
    if default is None:
        return intended_use_section(None)
    return intended_use_section(default, None, f"the '{run.recipe.name}' recipe, for the data "
                                               f"it ships with")


def _scope(run):
    if run.kind in ("detect", "segment"):
        return _SCOPE["coco" if _user_data(run) else "scenes"]
    if run.kind == "image":
        return _SCOPE["image" if _user_data(run) else "digits"]
    return _SCOPE.get(run.kind, _SCOPE["text"])


def build_report(run_dir, group_labels=None, group_name="group", full=True, write=True,
                 group_columns=None):
    """Audit the run in ``run_dir`` and write card.json + card.html there; returns the card.

    ``group_labels``: one group per test example, a column named ``group_name`` (image and
    table runs); ``group_columns``: which of a table run's group columns to audit by (default
    all it was trained with).
    """
    run = load_run(run_dir)
    if group_labels is not None and run.kind not in ("image", "table"):
        why = ("a language model, whose card has no per-example predictions"
               if run.kind in ("lm", "mlm") else "whose card breaks its test scenes down by "
               "object size and class")
        raise RunError(f"--groups needs an image classifier or a table run; {run_dir} is a "
                       f"{run.kind!r} run, {why}")
    if group_columns is not None and run.kind != "table":
        raise RunError(f"--group-column without --groups picks one of a table run's group "
                       f"columns; {run_dir} is a {run.kind!r} run: give --groups FILE too")
    if group_labels is not None and \
            len(group_labels) != len(run.splits["test"]):
        raise RunError(f"the groups give {len(group_labels)} labels but the test split has "
                       f"{len(run.splits['test'])} examples; give one group per test example")
    card = {"model_details": _details(run), "written": written("layerwise (build_report)")}
    figures = {}
    if run.history:
        figures["training_curves"] = plots.training_curves(run.history)
    card["intended_use"] = _intended_use(run)
    card["data"] = {"source": run.config.get("data"),
                    "splits": {name: len(ds) for name, ds in run.splits.items()}}
    card["training_metrics"] = run.metrics
    if run.kind == "image":
        audit, figs = audit_run(run, group_labels, group_name, full=full)
        card.update(audit)
        figures.update(figs)
    elif run.kind == "table":
        audit, figs = audit_table(run, group_labels, group_name, group_columns)
        card["model_details"]["predicts"] = audit["metrics"]["task"]
        card.update(audit)
        figures.update(figs)
    elif run.kind in ("detect", "segment"):
        from layerwise.audit.scenes import audit_detection, audit_segmentation

        audit, figs = (audit_detection if run.kind == "detect" else audit_segmentation)(run)
        card.update(audit)
        figures.update(figs)
    elif any(hasattr(m, "store_attn_weights") for _, m in run.model.named_modules()):
        card["explanations"], figures["attention"] = _attention(run)
    card["training_cost"] = training_cost(run_dir, run.metrics)
    card["caveats"] = caveats(card, _scope(run))
    if run.kind in ("detect", "segment"):
        card["caveats"][-1:-1] = card["disaggregated"]["warnings"]
    if "energy_warnings" in card["training_cost"]["values"]:
        card["caveats"].append("Training energy and CO2e are estimates: "
                               + card["training_cost"]["values"]["energy_warnings"] + ".")
    if write:
        with RunLock(run_dir):  # not while a resume of the run rewrites it
            write_card(run_dir, card, figures)
    return card


def write_model_card(run_dir):
    """The end-of-training card: the full audit with the corruption table on 200 test images."""
    return build_report(run_dir, full=False)
