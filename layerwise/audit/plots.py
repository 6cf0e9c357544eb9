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


_LONG_TICK = 6  # characters: longer group names are slanted so that they do not overlap


def group_bars(names, values, lows, highs, ylabel="accuracy", ylim=None):
    """One bar per group with its 95% interval as an error bar.

    ``ylim``: (bottom, top); by default from just below the lowest interval up to 1, for an
    accuracy."""
    values = np.asarray(values, np.float64)
    err = np.array([values - np.asarray(lows, np.float64), np.asarray(highs, np.float64) - values])
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * len(names) + 1.5), 2.8))
    ax.bar(range(len(names)), values, yerr=err, capsize=3, color="C0", alpha=0.8)
    ax.set_xticks(range(len(names)))
    slanted = any(len(str(n)) > _LONG_TICK for n in names)
    ax.set_xticklabels(names, rotation=30 if slanted else 0, ha="right" if slanted else "center",
                       fontsize=8 if slanted else None)
    ax.set_ylabel(ylabel)
    ax.set_ylim(ylim if ylim is not None else (max(0.0, float(np.nanmin(lows)) - 0.1), 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _encode(fig)


_SCATTER_POINTS = 2000  # drawn at most; a denser cloud hides nothing more and draws slowly


def predicted_vs_true(y, pred, intervals=None, seed=0):
    """A regression's predictions against the targets, with the model's intervals if any."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    pick = np.arange(len(y))
    if len(y) > _SCATTER_POINTS:
        pick = np.sort(np.random.default_rng(seed).permutation(len(y))[:_SCATTER_POINTS])
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    if intervals is not None:
        low, high = (np.asarray(b, np.float64)[pick] for b in intervals)
        ax.vlines(y[pick], low, high, color="C1", alpha=0.25, lw=1, label="interval")
    ax.scatter(y[pick], pred[pick], s=6, alpha=0.5, color="C0", label="prediction")
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls=":", label="perfect")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
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


def _as_rgb(image):
    """(H, W, 3) in [0, 1] of an image (1, H, W), (3, H, W) or (H, W): grey repeated."""
    img = np.asarray(image, np.float64)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.clip(img, 0, 1)


def _as_map(values):
    """(H, W) of a map over an image; a channel axis (C, H, W) is summed: a pixel's
    attribution is that of its colours together (integrated gradients add up)."""
    m = np.asarray(values, np.float64)
    return m.sum(axis=0) if m.ndim == 3 else m


def image_grid(images, map_rows, titles, cmap="seismic", row_labels=None):
    """Input images (top row) above rows of their maps (``map_rows``: lists of n maps), as one
    mosaic. Images are (C, H, W) with 1 (grey) or 3 (RGB) channels, or (H, W).

    One imshow of a pre-coloured mosaic instead of many subplots: far less drawing time.
    "seismic" maps are drawn symmetric around zero (red positive, blue negative), others from
    zero to their maximum; each map is scaled on its own.
    """
    n, rows = len(images), len(map_rows) + 1
    colour = matplotlib.colormaps[cmap]
    h, w = _as_rgb(images[0]).shape[:2]
    gap = 2
    mosaic = np.ones((rows * (h + gap) - gap, n * (w + gap) - gap, 3))  # RGB
    for k in range(n):
        c = k * (w + gap)
        mosaic[:h, c:c + w] = _as_rgb(images[k])  # (H, W, 3)
        for r, maps in enumerate(map_rows, start=1):
            m = _resize_nearest(_as_map(maps[k]), h, w)
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
    ax.hist(scores_in, bins=bins, alpha=0.6, label="test images", density=True)
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
