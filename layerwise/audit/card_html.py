"""The model card (Mitchell et al. 2019, "Model Cards for Model Reporting") as card.json and a
self-contained card.html: plain HTML with inline CSS and the figures as data-URI PNGs, so the
file opens anywhere, offline, with no assets beside it. The card's content comes from
model_card.py (any model) and report.py (a finished run).
"""

import html
import json
import math
import os

from layerwise.audit import card_scenes
from layerwise.audit.people import cell_name
from layerwise.serialization import write_text_atomic

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1d2330;
     max-width:980px;margin:24px auto;padding:0 20px;line-height:1.45;background:#fff}
h1{font-size:26px;margin-bottom:2px} h2{font-size:19px;border-bottom:2px solid #e4e7ee;
     padding-bottom:4px;margin-top:34px} h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6478;margin-top:0} .kpis{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.kpi{background:#f3f5fa;border-radius:8px;padding:10px 14px;min-width:140px}
.kpi b{display:block;font-size:21px} .kpi span{color:#5b6478;font-size:12px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
td,th{border-bottom:1px solid #e4e7ee;padding:4px 10px;text-align:right}
th{background:#f7f8fb;text-align:center} td.t{text-align:left}
td:first-child,th:first-child{text-align:left}
.warn{background:#fff6e5;border-left:4px solid #f0a500;padding:6px 12px;margin:6px 0}
.note{color:#5b6478;font-size:12.5px} img{max-width:100%;margin:4px 0}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
code{background:#f3f5fa;padding:1px 4px;border-radius:3px;font-size:12px}
.headline{background:#eef3ff;border-left:4px solid #3d6fd8;padding:8px 12px;margin:8px 0}
"""


# the headline columns of a CodeCarbon-style emissions.csv (card.json keeps the whole row)
_EMISSION_COLUMNS = ("duration", "energy_consumed", "emissions", "cpu_energy", "gpu_energy",
                     "country_iso_code", "pue")


def _number(text):
    """A CSV cell as a float where it is one (emissions.csv holds only text)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "&ndash;"
    if isinstance(v, float) and v != 0 and abs(v) < 10 ** -digits:
        return f"{v:.{digits}g}"  # a few joules in kWh: keep the significant digits
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _ci(entry):
    lo, hi = entry["ci"]
    return "&ndash;" if lo is None else f"{lo:.3f}&ndash;{hi:.3f}"


def _cell(c):
    # numbers line up on the right, words and code on the left
    text = str(c)
    numeric = text[:1].isdigit() or text[:1] in ("-", ".") or text.startswith("&ndash;")
    return f"<td>{text}</td>" if numeric else f"<td class='t'>{text}</td>"


def _table(header, rows, left=False):
    head = "".join(f"<th>{h}</th>" for h in header)
    cell = (lambda c: f"<td class='t'>{c}</td>") if left else _cell
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(figures, name, alt):
    if name not in figures:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{figures[name]}">'


def _group_table(table):
    rows = []
    for name, r in table["groups"].items():
        row = [html.escape(name), r["n"], _fmt(r["accuracy"]["value"]), _ci(r["accuracy"])]
        if "tpr" in r:
            row += [_fmt(r["tpr"]["value"]), _fmt(r["fpr"]["value"])]
        rows.append(row)
    header = ["group", "n", "accuracy", "95% interval"]
    if rows and len(rows[0]) > 4:
        header += ["TPR", "FPR"]
    gap = table["gap"]
    out = _table(header, rows)
    ratio = table["ratio"]["value"]
    out += (f"<p>Largest accuracy gap: <b>{gap['value']:.3f}</b> ({html.escape(gap['best'])} vs "
            f"{html.escape(gap['worst'])}); ratio worst/best {_fmt(ratio)}.</p>")
    fair = table.get("fairness")
    if fair:
        out += (f"<p>Demographic-parity difference <b>{fair['demographic_parity_difference']:.3f}"
                f"</b>, equalized-odds difference <b>{fair['equalized_odds_difference']:.3f}</b>"
                f" <span class='note'>({html.escape(fair['definition'])})</span>.</p>")
    out += "".join(f'<div class="warn">{html.escape(w)}</div>' for w in table["warnings"])
    return out


def _sections(card, figures):
    d = card["model_details"]
    parts = [f"<h1>Model card: {html.escape(d['name'])}</h1>",
             f'<p class="sub">{html.escape(d.get("description") or "")}</p>']
    w = card.get("written")
    if w:
        parts.append(f"<p class='note'>Card written {html.escape(w['date'])} by "
                     f"{html.escape(w['by'])} with layerwise {html.escape(w['layerwise_version'])}"
                     f".</p>")
    parts.append(_kpis(card))
    parts.append(_details(d))
    parts.append(_intended_use(card["intended_use"]))
    parts.append(_data(card))
    parts.append(_metrics(card, figures))
    if card.get("disaggregated") and _scene_task(card):
        parts.append(card_scenes.disaggregated(card["disaggregated"], _table, _fmt))
    elif card.get("disaggregated"):
        parts.append(_disaggregated(card["disaggregated"], figures))
    if card.get("calibration"):
        parts.append(_calibration(card["calibration"], figures))
    if card.get("robustness"):
        parts.append(_robustness(card["robustness"], figures))
    if card.get("explanations") and _scene_task(card):
        parts.append(card_scenes.explanations(card["explanations"],
                                              lambda name, alt: _img(figures, name, alt)))
    elif card.get("explanations"):
        parts.append(_explanations(card["explanations"], figures))
    if "training_cost" in card:
        parts.append(_cost(card["training_cost"]))
    parts.append("<h2>Caveats</h2><ul>" + "".join(
        f"<li>{html.escape(c)}</li>" for c in card["caveats"]) + "</ul>")
    return parts


def _scene_task(card):
    return (card.get("metrics") or {}).get("task") in card_scenes.SCENE_TASKS


def _kpis(card):
    m, kpis = card.get("metrics"), []
    if _scene_task(card):
        kpis = card_scenes.kpis(card)
    elif m and m.get("task") == "regression":
        lo, hi = m["mae_ci95"]
        kpis.append((f"{m['mae']:.4g}", f"test MAE (95% CI {lo:.4g}&ndash;{hi:.4g})"))
        kpis.append((_fmt(m["r2"]), "test R&sup2;"))
    elif m:
        lo, hi = m["accuracy_ci95"]
        kpis.append((f"{m['accuracy']:.1%}", f"test accuracy (95% CI {lo:.1%}&ndash;{hi:.1%})"))
    cal = card.get("calibration") or {}
    if _scene_task(card):
        pass  # its ECE is among the task's own figures
    elif cal.get("task", "classification") == "classification" and "ece" in cal:
        kpis.append((f"{cal['ece']:.3f}", f"ECE ({cal['n_bins']} bins)"))
    elif cal.get("intervals"):
        kpis.append((f"{cal['coverage']['value']:.1%}",
                     f"interval coverage (nominal {cal['nominal']:.0%})"))
    if "robustness" in card:
        kpis.append((f"{card['robustness']['ood']['auroc_max_softmax']:.3f}",
                     "OOD AUROC vs noise"))
    if card["model_details"].get("parameters"):
        kpis.append((f"{card['model_details']['parameters']:,}", "parameters"))
    return '<div class="kpis">' + "".join(
        f"<div class='kpi'><b>{v}</b><span>{label}</span></div>" for v, label in kpis) + "</div>"


def _details(d):
    rows = [[label, html.escape(str(d[key]))] for label, key in
            (("recipe", "recipe"), ("task", "task"), ("predicts", "predicts"))
            if d.get(key) is not None]
    if "seed" in d:
        rows.append(["seed", _fmt(d["seed"])])
    if d.get("layerwise_version"):
        rows.append(["layerwise", _fmt(d["layerwise_version"])])
    if d.get("hyperparameters") is not None:
        rows.append(["hyperparameters",
                     "<code>" + html.escape(json.dumps(d["hyperparameters"])) + "</code>"])
    if "compressed_from" in d:
        rows += [["compressed from", html.escape(d["compressed_from"])],
                 ["compression", "<code>" + html.escape(json.dumps(
                     [{k: v for k, v in step.items() if k != "losses"}
                      for step in d["compression"]])) + "</code>"]]
    return "<h2>Model details</h2>" + _table(["field", "value"], rows, left=True)


def _intended_use(use):
    if isinstance(use, str):  # a card written before the intended use had its own fields
        return f"<h2>Intended use</h2><p>{html.escape(use)}</p>"
    out = "<h2>Intended use</h2>"
    if use.get("use"):
        out += f"<p>{html.escape(use['use'])}</p>"
    if use.get("users"):
        out += f"<p><b>Intended users:</b> {html.escape(use['users'])}</p>"
    if use.get("stated_by"):
        out += f"<p class='note'>As stated by {html.escape(use['stated_by'])}.</p>"
    if use.get("warning"):
        out += f'<div class="warn">{html.escape(use["warning"])}</div>'
    return out


def _data(card):
    data = card["data"]
    out = ("<h2>Data</h2>" + _table(["split", "examples"],
                                    [[k, f"{v:,}"] for k, v in data["splits"].items()])
           + f"<p class='note'>source: {html.escape(json.dumps(data['source']))}</p>")
    dc = card.get("data_checks")
    if not dc:
        return out
    rows = []
    for key, label in (("contamination_test", "test examples found in train"),
                       ("contamination_val", "validation examples found in train"),
                       ("contamination_test_in_val", "test examples found in validation")):
        c = dc.get(key)
        if c is None:
            rows.append([label, "&ndash; (no validation split)"])
        elif dc.get("near_checked", True):
            rows.append([label, (f"{c['n_leaked']} ({len(c['exact_pairs'])} exact, "
                                 f"{len(c['near_pairs'])} near)")])
        else:
            rows.append([label, f"{c['n_leaked']} ({c['share']:.2%}, exact copies)"])
    rows += [["duplicate groups in train", dc["train_duplicates"]],
             ["of which with conflicting labels", dc["train_conflicting_labels"]]]
    if "class_balance_train" in dc:
        bal = dc["class_balance_train"]
        rows.append(["rare classes in train (&lt; 0.1/K)",
                     ", ".join(map(str, bal["rare_classes"])) or "none"])
        rows.append(["label-issue candidates in test", dc["label_issues_test"]["count"]])
    for role, s in (dc.get("target_summary") or {}).items():
        rows.append([f"target in {role}", (f"mean {s['mean']:.4g}, std {s['std']:.4g}, range "
                                           f"{s['min']:.4g} to {s['max']:.4g}")])
    notes = [f"Copies: {html.escape(dc['method'])}."] if "method" in dc else []
    if dc.get("near_checked", True):
        notes.append(f"Near copies: RMS distance &lt; {dc['contamination_test']['near_threshold']}"
                     f" between standardised images.")
    if "label_issues_test" in dc:
        notes.append(f"Label issues: {html.escape(dc['label_issues_test']['method'])}; first "
                     f"indices {dc['label_issues_test']['indices'][:10]}.")
    return (out + "<h3>Data checks</h3>" + _table(["check", "result"], rows, left=True)
            + f"<p class='note'>{' '.join(notes)}</p>")


def _metrics(card, figures):
    m = card.get("metrics")
    parts = ["<h2>Metrics</h2>"]
    if _scene_task(card):
        parts.append(card_scenes.metrics(m, _fmt))
    elif m and m.get("task") == "regression":
        r2 = "&ndash;" if m["r2"] is None else f"{m['r2']:.4f}"
        parts.append(f"<p>Test MAE <b>{m['mae']:.4g}</b> (95% interval {m['mae_ci95'][0]:.4g}"
                     f"&ndash;{m['mae_ci95'][1]:.4g}), RMSE <b>{m['rmse']:.4g}</b> "
                     f"({m['rmse_ci95'][0]:.4g}&ndash;{m['rmse_ci95'][1]:.4g}), "
                     f"R&sup2; <b>{r2}</b>; n = {m['n']:,}, {html.escape(m['interval'])}.</p>")
        if "baseline" in m:
            b = m["baseline"]
            parts.append(f"<p class='note'>Predicting {html.escape(b['predict'])} for every "
                         f"example: MAE {b['mae']:.4g}, RMSE {b['rmse']:.4g}.</p>")
    elif m:
        parts.append(f"<p>Test accuracy <b>{m['accuracy']:.4f}</b> (95% interval "
                     f"{m['accuracy_ci95'][0]:.4f}&ndash;{m['accuracy_ci95'][1]:.4f}, n = "
                     f"{m['n']:,}, {html.escape(m['interval'])}); test NLL {m['nll']:.4f}.</p>")
        if "majority_accuracy" in m:
            parts.append(f"<p class='note'>Always answering the training split's most frequent "
                         f"class: accuracy {m['majority_accuracy']:.4f}.</p>")
        if m.get("classes"):
            parts.append(f"<p class='note'>Classes, in label order: "
                         f"{html.escape(', '.join(m['classes']))}.</p>")
    tm = {k: v for k, v in card.get("training_metrics", {}).items()
          if isinstance(v, (int, float))}
    if tm:
        parts.append(_table(["recorded at the end of training", "value"],
                            [[html.escape(k), _fmt(v, 4)] for k, v in tm.items()]))
    parts.append('<div class="figs">' + _img(figures, "training_curves", "training curves")
                 + _img(figures, "confusion_matrix", "confusion matrix")
                 + _img(figures, "predicted_vs_true", "predicted against true") + "</div>")
    return "".join(parts)


def _disaggregated(dis, figures):
    parts = ["<h2>Disaggregated results</h2>"]
    if "groups" in dis:
        parts.append(_people(dis, figures))
    elif dis.get("note"):
        parts.append(f'<div class="warn">{html.escape(dis["note"])}</div>')
    for key, table in dis.items():
        if not key.startswith("by_") or (key != "by_true_class" and "groups" in dis):
            continue  # a --groups table is shown with the group columns when there are some
        title = key.replace("by_", "by ").replace("_", " ")
        parts.append(f"<h3>Accuracy {html.escape(title)}</h3>")
        parts.append('<div class="figs"><div>' + _group_table(table) + "</div>"
                     + _img(figures, "per_group" if key != "by_true_class" else "per_class",
                            "per-group accuracy") + "</div>")
    return "".join(parts)


_RATES = (("error_rate", "error rate"), ("fpr", "FPR"), ("fnr", "FNR"))
_ERRORS = (("mae", "MAE"), ("rmse", "RMSE"))


def _people(dis, figures):
    """The audit on people: the headline, then a table, comparison and plot per breakdown."""
    g = dis["groups"]
    parts = [f'<p class="headline"><b>{html.escape(dis["headline"])}</b></p>',
             (f"<p class='note'>Each group column and each intersection of them; "
              f"{html.escape(g['interval'])}. Cells under {g['min_cell']} examples (marked *) "
              f"are shown but not ranked. Calibration per cell: "
              f"{html.escape(g['calibration'])}.</p>")]
    for i, b in enumerate(g["breakdowns"]):
        parts.append(f"<h3>By {html.escape(b['name'])}</h3>")
        header, rows = _people_rows(b["cells"], g["task"])
        names = {c["label"]: cell_name(c) for c in b["cells"]}
        compare = "".join(f"<p>{html.escape(_compare_line(c, names, g['task']))}</p>"
                          for c in b["compare"].values())
        warns = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in g["warnings"]
                        if w.startswith(b["name"] + ": "))
        parts.append('<div class="figs"><div>' + _table(header, rows) + compare + warns
                     + "</div>" + _img(figures, f"people_{i}", f"by {b['name']}") + "</div>")
    return "".join(parts)


def _people_rows(cells, task):
    metrics = _RATES if task == "classification" else _ERRORS
    present = [(k, label) for k, label in metrics if k in cells[0]]
    header = ["group", "n"]
    for _, label in present:
        header += [label, "95% interval"]
    extra = [k for k in ("ece", "r2", "coverage") if k in cells[0]]
    header += [{"ece": "ECE", "r2": "R&sup2;", "coverage": "interval coverage"}[k]
               for k in extra] + (["95% interval"] if "coverage" in extra else [])
    rows = []
    for c in cells:
        name = html.escape(cell_name(c))
        row = [name + (" *" if c["small"] else ""), f"{c['n']:,}"]
        digits = 3 if task == "classification" else 4
        for k, _ in present:
            row += [_fmt(c[k]["value"], digits), _ci(c[k])]
        for k in extra:
            row.append(_fmt(c[k]["value"] if isinstance(c[k], dict) else c[k], 3))
        if "coverage" in extra:
            row.append(_ci(c["coverage"]))
        rows.append(row)
    return header, rows


def _compare_line(c, names, task):
    word = dict(_RATES + _ERRORS)[c["metric"]]
    fmt = "{:.3f}" if task == "classification" else "{:.4g}"
    line = (f"{word}: worst {names[c['worst']]} ({fmt.format(c['worst_value'])}), best "
            f"{names[c['best']]} ({fmt.format(c['best_value'])}); gap {fmt.format(c['gap'])}")
    if "gap_ci" in c:
        line += f" (95% CI {fmt.format(c['gap_ci'][0])} to {fmt.format(c['gap_ci'][1])})"
    ratio = f"ratio {c['ratio']:.2f}x" if c["ratio"] is not None else "ratio unbounded"
    return f"{line}, {ratio}; ranked among {c['basis']}."


def _calibration(cal, figures):
    parts = ["<h2>Calibration</h2>"]
    if cal.get("task") == "regression" and not cal["intervals"]:
        return parts[0] + f'<div class="warn">{html.escape(cal["note"])}</div>'
    if cal.get("task") == "regression":
        cov = cal["coverage"]
        return (parts[0] + f"<p>The model's intervals hold <b>{cov['value']:.1%}</b> of the test"
                f" targets (95% CI {cov['ci'][0]:.1%}&ndash;{cov['ci'][1]:.1%}, {cov['count']:,}"
                f" of {cov['of']:,}) against a nominal <b>{cal['nominal']:.0%}</b>: "
                f"{html.escape(cal['verdict'])}. Below the interval {cal['below']:.1%}, above "
                f"{cal['above']:.1%}; mean width {cal['mean_width']:.4g}.</p><p class='note'>"
                f"{html.escape(cal['method'])}.</p>")
    if cal["temperature"] is None:
        rows = [["ECE", _fmt(cal["ece"], 4)], ["MCE", _fmt(cal["mce"], 4)]]
        table, t_line = _table(["", "test"], rows), ""
    else:
        table = _table(["", "before", "after scaling"], [
            ["ECE", _fmt(cal["ece"], 4), _fmt(cal["ece_scaled"], 4)],
            ["MCE", _fmt(cal["mce"], 4), _fmt(cal["mce_scaled"], 4)],
            ["validation NLL", _fmt(cal["val_nll"], 4), _fmt(cal["val_nll_scaled"], 4)]])
        t_line = f"<p>Temperature T = <b>{cal['temperature']:.3f}</b>.</p>"
    return (parts[0] + '<div class="figs"><div>' + table + t_line
            + f"<p class='note'>{html.escape(cal['method'])}</p></div>"
            + _img(figures, "reliability", "reliability diagram") + "</div>")


def _robustness(rob, figures):
    ood, cor = rob["ood"], rob["corruptions"]
    rows = [[k] + [f"{a:.3f}" for a in v] for k, v in cor.items()
            if k not in ("clean", "severities", "n", "note")]
    return ("<h2>Robustness</h2>"
            f"<p>Out-of-distribution detection against {html.escape(ood['far_ood_set'])}"
            f": AUROC <b>{ood['auroc_max_softmax']:.3f}</b> (max softmax), "
            f"<b>{ood['auroc_energy']:.3f}</b> (energy).</p>"
            + '<div class="figs"><div>' + _table(
                ["corruption"] + [f"severity {s}" for s in cor["severities"]], rows)
            + f"<p class='note'>Clean accuracy {cor['clean']:.3f} on the same images: "
              f"{html.escape(cor['note'])}.</p></div>"
            + _img(figures, "corruptions", "accuracy under corruption")
            + _img(figures, "ood", "OOD score histogram") + "</div>")


def _explanations(ex, figures):
    if "attention_layers" in ex:
        return ("<h2>Explanations</h2><p>" + html.escape(ex["method"].capitalize()) + ".</p>"
                + _img(figures, "attention", "attention maps"))
    rel = ex["ig_relative_delta"]
    out = ("<h2>Explanations</h2>"
           f"<p>Test images (true label y, prediction p) with the saliency and the "
           f"integrated gradients of the predicted class (red raises the logit, blue "
           f"lowers it; baseline {html.escape(ex['ig_baseline'])}). IG completeness "
           f"|delta| / |F(x) - F(0)|: max <b>{max(rel):.2%}</b> at {ex['ig_steps']} "
           f"Gauss-Legendre steps.</p>"
           + _img(figures, "saliency", "saliency and integrated gradients"))
    if "grad_cam" in figures:
        out += (f"<h3>Grad-CAM of layer <code>{html.escape(ex['grad_cam_layer'])}"
                f"</code></h3>" + _img(figures, "grad_cam", "Grad-CAM"))
    return out


def _cost(cost):
    out = "<h2>Training cost</h2>"
    if cost["values"]:
        flat = {k: v for k, v in cost["values"].items() if k != "emissions_csv"}
        row = cost["values"].get("emissions_csv", {})
        flat.update({f"emissions.csv: {k}": _number(row[k]) for k in _EMISSION_COLUMNS
                     if k in row})
        out += _table(["quantity", "value"],
                      [[html.escape(k), _fmt(v, 4)] for k, v in flat.items()])
    if cost["note"]:
        out += f"<p class='note'>{html.escape(cost['note'])}.</p>"
    return out


def render_html(card, figures):
    """The card as one self-contained HTML document."""
    title = html.escape(card["model_details"]["name"])
    body = "\n".join(_sections(card, figures))
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Model card: {title}</title><style>{_CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def _plain(obj):
    """JSON-safe: NaN becomes null (JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def write_card(run_dir, card, figures):
    """Write card.json (no figures) and card.html (figures inline) into ``run_dir``."""
    write_text_atomic(os.path.join(run_dir, "card.json"),
                      json.dumps(_plain(card), indent=2) + "\n")
    write_text_atomic(os.path.join(run_dir, "card.html"), render_html(card, figures))
    return os.path.join(run_dir, "card.html")
