"""Shift and out-of-distribution checks over a model's outputs.

    auroc(max_softmax(logits_in), max_softmax(logits_out))   # 1.0: OOD perfectly told apart
    corrupt(images, "blur", severity=3)

Scores are "higher = more in-distribution": max softmax probability (Hendrycks & Gimpel 2017)
and negative energy logsumexp(logits) (Liu et al. 2020). Corruptions act on images
(N, C, H, W) in [0, 1] and keep that range; severity 1..5 scales each one.
"""

import numpy as np

CORRUPTIONS = ("darker", "brighter", "contrast", "noise", "blur", "shift")
SEVERITIES = (1, 2, 3, 4, 5)


def max_softmax(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=1)  # the top class has exp(0) = 1 in the numerator


def energy_score(logits):
    """-E(x) = logsumexp(logits): higher for inputs like the training data."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def auroc(pos, neg):
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"auroc needs both classes, got {len(pos)} positives and "
                         f"{len(neg)} negatives")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks over ties
    sorted_s = scores[order]
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def uniform_noise_like(images, seed=0):
    """A far-OOD set: i.i.d. uniform [0, 1] pixels in the images' shape."""
    return np.random.default_rng(seed).random(np.shape(images)).astype(np.float32)


def _blur(x, radius):
    # separable box blur of width 2r+1 with edge padding, along H then W
    k = 2 * radius + 1
    pad = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="edge")
    c = np.cumsum(np.pad(pad, ((0, 0), (0, 0), (1, 0), (0, 0))), axis=2)
    x = (c[:, :, k:] - c[:, :, :-k]) / k  # (N, C, H, W + 2r)
    c = np.cumsum(np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 0))), axis=3)
    return (c[:, :, :, k:] - c[:, :, :, :-k]) / k  # (N, C, H, W)


def _shift(x, pixels):
    # move right and down by ``pixels``, filling with zeros (MNIST's background)
    out = np.zeros_like(x)
    out[:, :, pixels:, pixels:] = x[:, :, :x.shape[2] - pixels, :x.shape[3] - pixels]
    return out


def corrupt(images, kind, severity, seed=0):
    """``images`` (N, C, H, W) in [0, 1] under corruption ``kind`` at ``severity`` 1..5."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    x = np.asarray(images, np.float64)
    s = severity
    if kind == "darker":
        out = x * (1 - 0.15 * s)  # 0.85 .. 0.25 of the brightness
    elif kind == "brighter":
        out = x + 0.12 * s  # raises the background too, as brighter lighting would
    elif kind == "contrast":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        out = mean + (x - mean) * (1 - 0.18 * s)
    elif kind == "noise":
        out = x + np.random.default_rng(seed).normal(0, 0.08 * s, x.shape)
    elif kind == "blur":
        out = _blur(x, s)  # box width 3 .. 11
    else:
        out = _shift(x, s)  # 1 .. 5 pixels
    return np.clip(out, 0, 1).astype(np.float32)


def corruption_table(predict, images, labels, kinds=CORRUPTIONS, severities=SEVERITIES, seed=0):
    """Accuracy under each corruption and severity: {"clean": acc, kind: [acc per severity]}.

    ``predict(images) -> predicted labels``.
    """
    labels = np.asarray(labels)
    table = {"clean": float(np.mean(predict(images) == labels)), "severities": list(severities)}
    for kind in kinds:
        table[kind] = [float(np.mean(predict(corrupt(images, kind, s, seed)) == labels))
                       for s in severities]
    return table
