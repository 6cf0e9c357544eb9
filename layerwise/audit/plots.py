"""Figures for the model card, each returned as a base64 PNG string for an <img> data URI.

matplotlib runs on the Agg backend (no display needed); every function closes its figure.
"""

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

_DPI = 110


def _encode(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def training_curves(history):
    """Loss and accuracy per epoch from history.jsonl records."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    marker = "o" if len(epochs) < 20 else None  # a one-epoch run is a point, not a line
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        if any(key in h for h in history):
            axes[0].plot(epochs, [h.get(key) for h in history], style, marker=marker, label=key)
    for key, style in (("train_accuracy", "-"), ("val_accuracy", "--")):
        if any(key in h for h in history):
            axes[1].plot(epochs, [h.get(key) for h in history], style, marker=marker,
                         label=key)
    for ax, title in zip(axes, ("loss", "accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _encode(fig)


def confusion_matrix(matrix):
    """Rows: true class; columns: predicted class; counts written in the cells."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    return _encode(fig)


def reliability_diagram(before, after=None):
    """Accuracy against confidence per bin (calibration_error's "bins"), before/after scaling."""
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls=":", label="perfect")
    for stats, label, color in ((before, "model", "C0"), (after, "temperature-scaled", "C1")):
        if stats is None:
            continue
        pts = [(b["confidence"], b["accuracy"]) for b in stats["bins"] if b["count"]]
        if pts:
            c, a = zip(*pts)
            ax.plot(c, a, "o-", color=color, ms=4, label=f"{label} (ECE {stats['ece']:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _encode(fig)


def group_bars(names, values, lows, highs, ylabel="accuracy"):
    """One bar per group with its 95% interval as an error bar."""
    values = np.asarray(values, np.float64)
    err = np.array([values - np.asarray(lows, np.float64), np.asarray(highs, np.float64) - values])
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * len(names) + 1.5), 2.8))
    ax.bar(range(len(names)), values, yerr=err, capsize=3, color="C0", alpha=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel(ylabel)
    ax.set_ylim(max(0.0, float(np.nanmin(lows)) - 0.1), 1.0)
    ax.grid(axis="y", alpha=0.3)
    return _encode(fig)


def corruption_curves(table):
    """Accuracy against severity, one line per corruption, the clean accuracy dashed."""
    fig, ax = plt.subplots(figsize=(5, 3))
    sev = table["severities"]
    for kind, accs in table.items():
        if kind in ("clean", "severities"):
            continue
        ax.plot(sev, accs, "o-", ms=3, label=kind)
    ax.axhline(table["clean"], color="gray", ls="--", lw=1, label="clean")
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(sev)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _encode(fig)


def _resize_nearest(m, h, w):
    """A (h', w') map shown over an (h, w) image: nearest-neighbour resize (Grad-CAM maps
    live at the conv layer's resolution)."""
    if m.shape == (h, w):
        return m
    rows = np.arange(h) * m.shape[0] // h
    cols = np.arange(w) * m.shape[1] // w
    return m[rows[:, None], cols[None, :]]


def image_grid(images, map_rows, titles, cmap="seismic", row_labels=None):
    """Input images (top row) above rows of their maps (``map_rows``: lists of n maps), as one
    mosaic.

    One imshow of a pre-coloured mosaic instead of many subplots: far less drawing time.
    "seismic" maps are drawn symmetric around zero (red positive, blue negative), others from
    zero to their maximum; each map is scaled on its own.
    """
    n, rows = len(images), len(map_rows) + 1
    colour = matplotlib.colormaps[cmap]
    h, w = np.asarray(images[0]).squeeze().shape
    gap = 2
    mosaic = np.ones((rows * (h + gap) - gap, n * (w + gap) - gap, 3))  # RGB
    for k in range(n):
        c = k * (w + gap)
        img = np.asarray(images[k], np.float64).squeeze()  # (H, W)
        mosaic[:h, c:c + w] = img[..., None]
        for r, maps in enumerate(map_rows, start=1):
            m = _resize_nearest(np.asarray(maps[k], np.float64).squeeze(), h, w)
            lim = float(np.abs(m).max()) or 1.0
            scaled = (m / lim + 1) / 2 if cmap == "seismic" else m / lim
            top = r * (h + gap)
            mosaic[top:top + h, c:c + w] = colour(np.clip(scaled, 0, 1))[..., :3]
    tile = 0.85 if n > 2 else 1.8  # inches per image: a single example is shown large
    fig, ax = plt.subplots(figsize=(tile * n + 1.0, tile * rows + 0.3))
    ax.imshow(mosaic, interpolation="nearest")
    for k, title in enumerate(titles):
        ax.text(k * (w + gap) + w / 2, -2, title, ha="center", va="bottom", fontsize=6.5)
    for r, label in enumerate(row_labels or []):
        ax.text(-3, r * (h + gap) + h / 2, label, ha="right", va="center", fontsize=7)
    ax.axis("off")
    return _encode(fig)


def ood_histogram(scores_in, scores_out, label):
    fig, ax = plt.subplots(figsize=(4, 2.6))
    bins = np.linspace(min(np.min(scores_in), np.min(scores_out)),
                       max(np.max(scores_in), np.max(scores_out)), 30)
    ax.hist(scores_in, bins=bins, alpha=0.6, label="test digits", density=True)
    ax.hist(scores_out, bins=bins, alpha=0.6, label="uniform noise", density=True)
    ax.set_xlabel(label)
    ax.legend(fontsize=8)
    return _encode(fig)


def attention_heatmaps(maps, tokens):
    """One heatmap per layer of attention weights averaged over heads: rows are queries."""
    fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps), 3.6), squeeze=False)
    for layer, (ax, w) in enumerate(zip(axes[0], maps)):
        ax.imshow(np.asarray(w)[0].mean(axis=0), cmap="viridis", vmin=0)  # (T, S)
        ax.set_title(f"layer {layer} (mean over heads)", fontsize=8)
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels(tokens, fontsize=6)
        ax.set_yticks(range(len(tokens)))
        ax.set_yticklabels(tokens, fontsize=6)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    return _encode(fig)
