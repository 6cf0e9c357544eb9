"""Calibration: ECE and MCE over 15 equal-width confidence bins, reliability-diagram data, and
temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

    stats = calibration_error(probs, labels)      # {"ece", "mce", "bins": [...]}
    t = fit_temperature(val_logits, val_labels)   # then softmax(logits / t)
"""

import numpy as np

N_BINS = 15


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration_error(probs, labels, n_bins=N_BINS):
    """ECE (weighted mean |accuracy - confidence| over bins) and MCE (its max over non-empty bins).

    Confidence is the top probability; bins are (k/n, (k+1)/n], with 0 in the first bin, so a
    confidence of exactly 1.0 falls in the last one.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, K) with one label per row, got probs "
                         f"{probs.shape} and labels {labels.shape}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    nz = count > 0
    acc = np.where(nz, acc_sum / np.maximum(count, 1), np.nan)
    mean_conf = np.where(nz, conf_sum / np.maximum(count, 1), np.nan)
    gap = np.abs(acc - mean_conf)
    ece = float(np.sum(count[nz] / len(labels) * gap[nz]))
    mce = float(gap[nz].max()) if nz.any() else 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    bins = [{"low": float(edges[k]), "high": float(edges[k + 1]), "count": int(count[k]),
             "accuracy": None if not nz[k] else float(acc[k]),
             "confidence": None if not nz[k] else float(mean_conf[k])} for k in range(n_bins)]
    return {"ece": ece, "mce": mce, "n_bins": n_bins, "bins": bins}


def nll(logits, labels, temperature=1.0):
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(labels).astype(np.int64)].mean())


def fit_temperature(logits, labels, low=0.05, high=20.0, iters=80):
    """The temperature T > 0 minimising validation NLL of softmax(logits / T).

    NLL is convex in beta = 1/T (a log-sum-exp of linear functions minus a linear one), so a
    golden-section search on log beta finds the minimum. T = 1 is kept if nothing beats it,
    so the NLL never rises; dividing by T > 0 never changes the argmax.
    """
    a, b = np.log(1 / high), np.log(1 / low)
    g = (np.sqrt(5) - 1) / 2

    def f(log_beta):
        return nll(logits, labels, 1 / np.exp(log_beta))

    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    t = float(1 / np.exp((a + b) / 2))
    return t if nll(logits, labels, t) <= nll(logits, labels, 1.0) else 1.0
