"""The model card (Mitchell et al. 2019, "Model Cards for Model Reporting") as card.json and a
self-contained card.html: plain HTML with inline CSS and the figures as data-URI PNGs, so the
file opens anywhere, offline, with no assets beside it.
"""

import html
import json
import math
import os

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
             f'<p class="sub">{html.escape(d["description"])}</p>']
    m = card.get("metrics")
    kpis = []
    if m:
        lo, hi = m["accuracy_ci95"]
        kpis.append((f"{m['accuracy']:.1%}", f"test accuracy (95% CI {lo:.1%}&ndash;{hi:.1%})"))
    if "calibration" in card:
        kpis.append((f"{card['calibration']['ece']:.3f}", "ECE (15 bins)"))
    if "robustness" in card:
        kpis.append((f"{card['robustness']['ood']['auroc_max_softmax']:.3f}",
                     "OOD AUROC vs noise"))
    kpis.append((f"{d['parameters']:,}", "parameters"))
    parts.append('<div class="kpis">' + "".join(
        f"<div class='kpi'><b>{v}</b><span>{label}</span></div>" for v, label in kpis) + "</div>")

    parts.append("<h2>Model details</h2>")
    parts.append(_table(["field", "value"], [
        ["recipe", html.escape(d["recipe"])], ["task", html.escape(d["task"])],
        ["seed", _fmt(d["seed"])], ["layerwise", _fmt(d["layerwise_version"])],
        ["hyperparameters", "<code>" + html.escape(json.dumps(d["hyperparameters"])) + "</code>"],
    ] + ([["compressed from", html.escape(d["compressed_from"])],
          ["compression", "<code>" + html.escape(json.dumps(
              [{k: v for k, v in step.items() if k != "losses"} for step in d["compression"]]))
           + "</code>"]] if "compressed_from" in d else []), left=True))
    parts.append(f"<h2>Intended use</h2><p>{html.escape(card['intended_use'])}</p>")
    data = card["data"]
    parts.append("<h2>Data</h2>" + _table(
        ["split", "examples"], [[k, v] for k, v in data["splits"].items()])
        + f"<p class='note'>source: {html.escape(json.dumps(data['source']))}</p>")
    dc = card.get("data_checks")
    if dc:
        ct, cv = dc["contamination_test"], dc["contamination_val"]
        bal = dc["class_balance_train"]
        leaks = (f"{ct['n_leaked']} ({len(ct['exact_pairs'])} exact, "
                 f"{len(ct['near_pairs'])} near)")
        rows = [["test examples found in train", leaks],
                ["validation examples found in train", f"{cv['n_leaked']}"],
                ["test examples found in validation",
                 f"{dc.get('contamination_test_in_val', {}).get('n_leaked', '&ndash;')}"],
                ["duplicate groups in train", dc["train_duplicates"]],
                ["of which with conflicting labels", dc["train_conflicting_labels"]],
                ["rare classes in train (&lt; 0.1/K)", ", ".join(map(str, bal["rare_classes"]))
                 or "none"],
                ["label-issue candidates in test", dc["label_issues_test"]["count"]]]
        parts.append("<h3>Data checks</h3>" + _table(["check", "result"], rows, left=True)
                     + f"<p class='note'>Near copies: RMS distance &lt; {ct['near_threshold']} "
                       f"between standardised images. Label issues: "
                       f"{html.escape(dc['label_issues_test']['method'])}; first indices "
                       f"{dc['label_issues_test']['indices'][:10]}.</p>")

    parts.append("<h2>Metrics</h2>")
    if m:
        parts.append(f"<p>Test accuracy <b>{m['accuracy']:.4f}</b> (95% interval "
                     f"{m['accuracy_ci95'][0]:.4f}&ndash;{m['accuracy_ci95'][1]:.4f}, n = "
                     f"{m['n']}, {html.escape(m['interval'])}); test NLL {m['nll']:.4f}.</p>")
    tm = {k: v for k, v in card.get("training_metrics", {}).items()
          if isinstance(v, (int, float))}
    if tm:
        parts.append(_table(["recorded at the end of training", "value"],
                            [[html.escape(k), _fmt(v, 4)] for k, v in tm.items()]))
    parts.append('<div class="figs">' + _img(figures, "training_curves", "training curves")
                 + _img(figures, "confusion_matrix", "confusion matrix") + "</div>")

    dis = card.get("disaggregated")
    if dis:
        parts.append("<h2>Disaggregated results</h2>")
        for key, table in dis.items():
            if key == "per_class":
                continue
            title = key.replace("by_", "by ").replace("_", " ")
            parts.append(f"<h3>Accuracy {html.escape(title)}</h3>")
            parts.append('<div class="figs"><div>' + _group_table(table) + "</div>"
                         + _img(figures, "per_group" if key != "by_true_class" else "per_class",
                                "per-group accuracy") + "</div>")
    cal = card.get("calibration")
    if cal:
        parts.append("<h2>Calibration</h2>")
        parts.append('<div class="figs"><div>' + _table(["", "before", "after scaling"], [
            ["ECE", _fmt(cal["ece"], 4), _fmt(cal["ece_scaled"], 4)],
            ["MCE", _fmt(cal["mce"], 4), _fmt(cal["mce_scaled"], 4)],
            ["validation NLL", _fmt(cal["val_nll"], 4), _fmt(cal["val_nll_scaled"], 4)],
        ]) + f"<p>Temperature T = <b>{cal['temperature']:.3f}</b>.</p><p class='note'>"
            f"{html.escape(cal['method'])}</p></div>"
            + _img(figures, "reliability", "reliability diagram") + "</div>")
    rob = card.get("robustness")
    if rob:
        ood, cor = rob["ood"], rob["corruptions"]
        parts.append("<h2>Robustness</h2>")
        parts.append(f"<p>Out-of-distribution detection against {html.escape(ood['far_ood_set'])}"
                     f": AUROC <b>{ood['auroc_max_softmax']:.3f}</b> (max softmax), "
                     f"<b>{ood['auroc_energy']:.3f}</b> (energy).</p>")
        rows = [[k] + [f"{a:.3f}" for a in v] for k, v in cor.items()
                if k not in ("clean", "severities", "n", "note")]
        parts.append('<div class="figs"><div>' + _table(
            ["corruption"] + [f"severity {s}" for s in cor["severities"]], rows)
            + f"<p class='note'>Clean accuracy {cor['clean']:.3f} on the same images: "
              f"{html.escape(cor['note'])}.</p></div>"
            + _img(figures, "corruptions", "accuracy under corruption")
            + _img(figures, "ood", "OOD score histogram") + "</div>")
    ex = card.get("explanations")
    if ex and "attention_layers" in ex:
        parts.append("<h2>Explanations</h2><p>" + html.escape(ex["method"].capitalize()) + ".</p>"
                     + _img(figures, "attention", "attention maps"))
    elif ex:
        rel = ex["ig_relative_delta"]
        parts.append("<h2>Explanations</h2>")
        parts.append(f"<p>Test images (true label y, prediction p) with the saliency and the "
                     f"integrated gradients of the predicted class (red raises the logit, blue "
                     f"lowers it; baseline {html.escape(ex['ig_baseline'])}). IG completeness "
                     f"|delta| / |F(x) - F(0)|: max <b>{max(rel):.2%}</b> at {ex['ig_steps']} "
                     f"Gauss-Legendre steps.</p>")
        parts.append(_img(figures, "saliency", "saliency and integrated gradients"))
        if "grad_cam" in figures:
            parts.append(f"<h3>Grad-CAM of layer <code>{html.escape(ex['grad_cam_layer'])}"
                         f"</code></h3>" + _img(figures, "grad_cam", "Grad-CAM"))
    cost = card["training_cost"]
    parts.append("<h2>Training cost</h2>")
    if cost["values"]:
        flat = {k: v for k, v in cost["values"].items() if k != "emissions_csv"}
        row = cost["values"].get("emissions_csv", {})
        flat.update({f"emissions.csv: {k}": _number(row[k]) for k in _EMISSION_COLUMNS
                     if k in row})
        parts.append(_table(["quantity", "value"],
                            [[html.escape(k), _fmt(v, 4)] for k, v in flat.items()]))
    if cost["note"]:
        parts.append(f"<p class='note'>{html.escape(cost['note'])}.</p>")
    parts.append("<h2>Caveats</h2><ul>" + "".join(
        f"<li>{html.escape(c)}</li>" for c in card["caveats"]) + "</ul>")
    return parts


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
