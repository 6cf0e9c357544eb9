"""Load a finished run, audit it, and write its model card.

    card = build_report("runs/mlp-20260101-120000")   # writes card.json and card.html
    write_model_card(run_dir)                          # the same, sized for the end of training

Everything here is evaluation over the run's own splits, rebuilt from config.json with the
same seed, so the audit sees exactly the data the run trained, validated and tested on.
"""

import csv
import os

import numpy as np

from layerwise.audit import calibration, data_checks, explain, groups, plots, shift
from layerwise.audit.card import write_card
from layerwise.autograd import Tensor, no_grad
from layerwise.errors import RunError
from layerwise.train.finished import FinishedRun as LoadedRun  # noqa: F401  (the audit's name)
from layerwise.train.finished import load_finished_run
from layerwise.train.rundir import RunLock

N_EXPLAIN = 10


def split_arrays(dataset):
    """(inputs, labels) NumPy arrays of a TensorDataset or a Subset of one."""
    idx = None
    while hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
        idx = dataset.indices if idx is None else dataset.indices[idx]
        dataset = dataset.dataset
    x, y = (t.data for t in dataset.tensors[:2])
    return (x, y) if idx is None else (x[idx], y[idx])


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


def predict_logits(model, x, batch_size=1000):
    """Logits (N, K) as float64, in eval mode and without a graph."""
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
    k = int(max(y_tr.max(), y_te.max()) + 1)
    logits_va, logits_te = predict_logits(run.model, x_va), predict_logits(run.model, x_te)
    probs_te = calibration.softmax(logits_te)
    pred_te = probs_te.argmax(1)
    correct = (pred_te == y_te).astype(np.float64)
    figures, card = {}, {}

    card["metrics"] = {
        "split": "test", "n": len(y_te),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": list(groups.wilson_interval(int(correct.sum()), len(correct))),
        "nll": calibration.nll(logits_te, y_te),
        "interval": "Wilson score interval of the test accuracy",
    }
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y_te, pred_te), 1)
    card["metrics"]["confusion_matrix"] = confusion.tolist()
    figures["confusion_matrix"] = plots.confusion_matrix(confusion)

    per_class = groups.per_class_metrics(y_te, pred_te, k)
    by_class = groups.group_metrics(y_te, pred_te, y_te)
    by_true = _summary(by_class)
    by_true.pop("fairness", None)  # parity between true classes is no fairness question
    card["disaggregated"] = {"per_class": per_class, "by_true_class": by_true}
    names = sorted(by_class["groups"], key=int)
    figures["per_class"] = _bars(by_class, names, "recall (accuracy on the class)")
    if group_labels is not None:
        g = np.asarray(group_labels)
        table = groups.group_metrics(y_te, pred_te, g)
        card["disaggregated"]["by_" + group_name] = _summary(table)
        figures["per_group"] = _bars(table, sorted(table["groups"]), "accuracy")

    before = calibration.calibration_error(probs_te, y_te)
    t = calibration.fit_temperature(logits_va, y_va)
    after = calibration.calibration_error(calibration.softmax(logits_te, t), y_te)
    card["calibration"] = {
        "ece": before["ece"], "mce": before["mce"], "n_bins": before["n_bins"],
        "temperature": t, "ece_scaled": after["ece"], "mce_scaled": after["mce"],
        "val_nll": calibration.nll(logits_va, y_va),
        "val_nll_scaled": calibration.nll(logits_va, y_va, t),
        "bins": before["bins"], "bins_scaled": after["bins"],
        "method": "15 equal-width confidence bins on the test split; temperature fit on the "
                  "validation split by minimising its NLL"}
    figures["reliability"] = plots.reliability_diagram(before, after)

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
    card["data_checks"] = _data_checks(x_tr, y_tr, x_va, x_te, y_te, probs_te, k, full)
    return card, figures


def _summary(table):
    keys = ("groups", "gap", "ratio", "warnings", "positive", "fairness")
    return {k: table[k] for k in keys if k in table}


def _bars(table, names, ylabel):
    rows = [table["groups"][n]["accuracy"] for n in names]
    return plots.group_bars(names, [r["value"] for r in rows], [r["ci"][0] for r in rows],
                            [r["ci"][1] for r in rows], ylabel)


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


def _data_checks(x_tr, y_tr, x_va, x_te, y_te, probs_te, k, full):
    leak_test = data_checks.check_contamination(x_tr, x_te, other_name="test")
    leak_val = data_checks.check_contamination(x_tr, x_va, other_name="validation")
    leak_test_val = data_checks.check_contamination(x_va, x_te, other_name="test")
    dups = data_checks.find_duplicates(x_tr, y_tr)
    issues = data_checks.find_label_issues(probs_te, y_te)
    return {"contamination_test": leak_test.to_dict(), "contamination_val": leak_val.to_dict(),
            "contamination_test_in_val": leak_test_val.to_dict(),
            "train_duplicates": len(dups["duplicate_groups"]),
            "train_conflicting_labels": len(dups["conflicting_groups"]),
            "class_balance_train": data_checks.class_balance(y_tr, k),
            "label_issues_test": {"indices": issues["indices"][:20],
                                  "suggested": issues["suggested"][:20],
                                  "count": len(issues["indices"]),
                                  "method": issues["method"] + " (the trained model, which "
                                            "never saw the test split)"}}


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


def _caveats(card):
    out = []
    cal = card.get("calibration")
    if cal and cal["ece"] > 0.05:
        out.append(f"Confidences are miscalibrated (ECE {cal['ece']:.3f}); divide the logits by "
                   f"T = {cal['temperature']:.2f} for ECE {cal['ece_scaled']:.3f}.")
    rob = card.get("robustness", {}).get("corruptions")
    if rob:
        worst = min((min(v), kind) for kind, v in rob.items()
                    if kind not in ("clean", "severities", "n", "note"))
        out.append(f"Brittle under shift: accuracy falls from {rob['clean']:.1%} to "
                   f"{worst[0]:.1%} under '{worst[1]}' at the highest severity.")
    dc = card.get("data_checks", {})
    if dc.get("contamination_test", {}).get("n_leaked"):
        out.append(f"{dc['contamination_test']['n_leaked']} test examples also appear in "
                   "training: the test metrics overstate performance.")
    if dc.get("contamination_test_in_val", {}).get("n_leaked"):
        out.append(f"{dc['contamination_test_in_val']['n_leaked']} test examples also appear in "
                   "validation: choices made on validation scores have seen the test set.")
    details = card["model_details"]
    if "int8" in (details.get("final_model") or ""):
        out.append(f"This card audits model.safetensors, the float32 model before "
                   f"quantization; the int8 model {details['final_model']} is measured only "
                   f"in metrics.json (accuracy, agreement with the original, size, latency).")
    for table in card.get("disaggregated", {}).values():
        out.extend(table.get("warnings", []) if isinstance(table, dict) else [])
    out.append("Evaluated only on held-out splits of the same source; performance on other "
               "handwriting, scanners or image sizes is unknown." if card["model_details"]["task"]
               == "image" else "Evaluated only on held-out text from the same source.")
    return out


def build_report(run_dir, group_labels=None, group_name="group", full=True, write=True):
    """Audit the run in ``run_dir`` and write card.json + card.html there; returns the card."""
    run = load_run(run_dir)
    if group_labels is not None and run.kind != "image":
        raise RunError(f"--groups needs an image classifier; {run_dir} is a {run.kind!r} run "
                       f"(a language model), whose card has no per-example predictions")
    if group_labels is not None and \
            len(group_labels) != len(run.splits["test"]):
        raise RunError(f"the groups give {len(group_labels)} labels but the test split has "
                       f"{len(run.splits['test'])} examples; give one group per test example")
    card = {"model_details": _details(run)}
    figures = {}
    if run.history:
        figures["training_curves"] = plots.training_curves(run.history)
    card["intended_use"] = (
        "Classifying centred 28x28 grey-scale handwritten digits (MNIST style) for teaching "
        "and experiments. Not for decisions about people, or for other kinds of images."
        if run.kind == "image" else
        "Teaching and experiments with language models on the run's own corpus; not for "
        "producing text that people will rely on.")
    card["data"] = {"source": run.config.get("data"),
                    "splits": {name: len(ds) for name, ds in run.splits.items()}}
    card["training_metrics"] = run.metrics
    if run.kind == "image":
        audit, figs = audit_run(run, group_labels, group_name, full=full)
        card.update(audit)
        figures.update(figs)
    elif any(hasattr(m, "store_attn_weights") for _, m in run.model.named_modules()):
        card["explanations"], figures["attention"] = _attention(run)
    card["training_cost"] = training_cost(run_dir, run.metrics)
    card["caveats"] = _caveats(card)
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
