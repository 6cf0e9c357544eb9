"""The HTML of a detection or segmentation run's card sections (audit/scenes.py makes them):
its metrics, the breakdown by object size and class, and the drawn answers. card_html.py
calls these where a card's metrics say ``task`` "detection" or "segmentation"."""

import html

SCENE_TASKS = ("detection", "segmentation")


def kpis(card):
    """(value, label) pairs for the card's headline figures."""
    m = card["metrics"]
    if m["task"] == "detection":
        return [(f"{m['mAP']:.3f}", "test mAP@[.5:.95] (COCOeval)"),
                (f"{m['AP50']:.3f}", "test AP50"),
                (f"{card['calibration']['ece']:.3f}", "ECE of detection scores")]
    return [(f"{m['mIoU']:.3f}", "test mIoU"), (f"{m['pixel_accuracy']:.1%}", "pixel accuracy"),
            (f"{card['calibration']['ece']:.3f}", "ECE of pixel confidences")]


def metrics(m, fmt):
    """The Metrics section's opening paragraph."""
    if m["task"] == "detection":
        return (f"<p>Test mAP@[.5:.95] <b>{fmt(m['mAP'])}</b>, AP50 <b>{fmt(m['AP50'])}</b>, "
                f"AP75 {fmt(m['AP75'])}, AR@100 {fmt(m['AR100'])}; {m['n_images']:,} scenes, "
                f"{m['n']:,} objects.</p><p class='note'>{html.escape(m['method'])}</p>")
    return (f"<p>Test mIoU <b>{fmt(m['mIoU'])}</b>, pixel accuracy "
            f"<b>{fmt(m['pixel_accuracy'])}</b>; {m['n_images']:,} scenes, {m['n']:,} pixels."
            f"</p><p class='note'>{html.escape(m['method'])}</p>")


def disaggregated(dis, table, fmt):
    """Tables by object size and by class, with the headline and warnings."""
    parts = ["<h2>Disaggregated results</h2>"]
    if dis.get("headline"):
        parts.append(f'<p class="headline"><b>{html.escape(dis["headline"])}</b></p>')
    if "sizes" in dis:
        parts.append("<h3>AP by object size</h3>" + table(
            ["size", "area", "objects", "AP", "AP50"],
            [[r["label"], html.escape(r["range"]), f"{r['n_objects']:,}", fmt(r["AP"]),
              fmt(r["AP50"])] for r in dis["sizes"]]))
    rows = dis["classes"]
    if rows and "AP" in rows[0]:
        parts.append("<h3>AP by class</h3>" + table(
            ["class", "objects", "AP", "AP50"],
            [[html.escape(r["label"]), f"{r['n_objects']:,}", fmt(r["AP"]), fmt(r["AP50"])]
             for r in rows]))
    else:
        parts.append("<h3>IoU by class</h3>" + table(
            ["class", "pixels", "IoU"],
            [[html.escape(r["label"]), f"{r['n_pixels']:,}", fmt(r["IoU"])] for r in rows]))
    parts += [f'<div class="warn">{html.escape(w)}</div>' for w in dis["warnings"]]
    parts.append(f"<p class='note'>{html.escape(dis['note'])}</p>")
    return "".join(parts)


def explanations(ex, img):
    name = "detections" if ex["kind"] == "detections" else "masks"
    return (f"<h2>Explanations</h2><p>{html.escape(ex['method'].capitalize())}.</p>"
            + img(name, f"predicted {name} over test scenes"))
