"""Data checks before training: contamination, duplicates, class balance, label issues, drift.

    report = check_contamination(train_x, test_x)          # exact + near copies, as pairs
    if report.exact_pairs or report.near_pairs: raise ContaminationError(report.message())

All of it is NumPy over arrays of examples (rows are flattened), so it runs on any split.
Near-duplicates: each row is flattened and standardised (zero mean, unit variance), and two
rows are near copies when their RMS distance is below ``near_threshold``. For standardised
rows that distance is sqrt(2 (1 - r)) with r the Pearson correlation, so the default 0.15
means r > 0.989. Measured on the shipped 5k digits: Gaussian pixel noise of sigma 0.04
(clipped to [0, 1]) moves a copy at most 0.13 away (all found), while the closest pair of
distinct images is 0.196 apart (none flagged).
"""

import hashlib
from dataclasses import dataclass, field

import numpy as np

from layerwise.train.checkpoint import RunError

NEAR_THRESHOLD = 0.15


class ContaminationError(RunError):
    """Test examples leak into the training split. A RunError, so the CLI prints its one-line
    message and exits 1."""


def _rows(x):
    x = np.asarray(getattr(x, "data", x))
    return x.reshape(len(x), -1)


def content_hashes(x):
    """One SHA-1 hex digest per example of its exact bytes (dtype and values)."""
    rows = np.ascontiguousarray(_rows(x))
    return [hashlib.sha1(r.tobytes()).hexdigest() for r in rows]


def _standardise(rows):
    rows = rows.astype(np.float64)
    rows = rows - rows.mean(axis=1, keepdims=True)
    std = rows.std(axis=1, keepdims=True)
    return rows / np.where(std > 0, std, 1.0)


def nearest_distances(a, b, exclude_self=False, max_block=10_000_000):
    """For each row of ``a``: (index of nearest row of ``b``, RMS distance after standardising).

    Rows of ``a`` go in chunks so that no distance block holds more than ``max_block`` values
    (80 MB): full MNIST, 10k test x 55k train, fits in memory this way.
    """
    za, zb = _standardise(_rows(a)), _standardise(_rows(b))
    d = za.shape[1]
    chunk = max(1, max_block // max(len(zb), 1))
    idx, dist = np.empty(len(za), np.int64), np.empty(len(za))
    for s in range(0, len(za), chunk):
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, and |z|^2 = d for a standardised row
        sq = (za[s:s + chunk] ** 2).sum(1)[:, None] + (zb ** 2).sum(1)[None] \
            - 2 * za[s:s + chunk] @ zb.T  # (chunk, len(b))
        if exclude_self:
            rows = np.arange(s, min(s + chunk, len(za)))
            sq[rows - s, rows] = np.inf
        j = sq.argmin(axis=1)
        idx[s:s + chunk] = j
        dist[s:s + chunk] = np.sqrt(np.maximum(sq[np.arange(len(j)), j], 0) / d)
    return idx, dist


@dataclass
class ContaminationReport:
    """Pairs (train index, other index) found in ``other_name`` that also sit in train."""

    other_name: str
    n_train: int
    n_other: int
    near_threshold: float
    exact_pairs: list = field(default_factory=list)
    near_pairs: list = field(default_factory=list)  # (i_train, j_other, distance), not exact

    @property
    def leaked(self):
        return sorted({j for _, j in self.exact_pairs} | {j for _, j, _ in self.near_pairs})

    def message(self):
        return (f"{len(self.leaked)} of {self.n_other} {self.other_name} examples also appear in "
                f"the training split ({len(self.exact_pairs)} exact copies, "
                f"{len(self.near_pairs)} near copies at RMS distance < {self.near_threshold} "
                f"on standardised inputs); remove them, or pass --allow-contamination to train "
                f"anyway")

    def to_dict(self):
        return {"other": self.other_name, "n_train": self.n_train, "n_other": self.n_other,
                "near_threshold": self.near_threshold, "n_leaked": len(self.leaked),
                "exact_pairs": [list(map(int, p)) for p in self.exact_pairs],
                "near_pairs": [[int(i), int(j), round(float(d), 4)]
                               for i, j, d in self.near_pairs]}


def check_contamination(train, other, near_threshold=NEAR_THRESHOLD, other_name="test",
                        near=True):
    """Exact (content hash) and near (standardised RMS distance) copies of ``other`` in ``train``.

    ``train`` and ``other`` are arrays (N, ...) of inputs. Returns a ContaminationReport; the
    caller decides whether to refuse (``raise ContaminationError(report.message())``).
    """
    if near_threshold < 0:
        raise ValueError(f"near_threshold must be >= 0, got {near_threshold}")
    train_rows, other_rows = _rows(train), _rows(other)
    if train_rows.shape[1] != other_rows.shape[1]:
        raise ValueError(f"train examples have {train_rows.shape[1]} values each but "
                         f"{other_name} examples have {other_rows.shape[1]}; compare like inputs")
    seen = {}
    for i, h in enumerate(content_hashes(train_rows)):
        seen.setdefault(h, i)
    report = ContaminationReport(other_name, len(train_rows), len(other_rows), near_threshold)
    exact = set()
    for j, h in enumerate(content_hashes(other_rows)):
        if h in seen:
            report.exact_pairs.append((seen[h], j))
            exact.add(j)
    if near and len(train_rows) and len(other_rows):
        # other x train: nearest training row of each held-out example
        nn_idx, nn_dist = nearest_distances(other_rows, train_rows)
        for j in np.flatnonzero(nn_dist < near_threshold):
            if j not in exact:
                report.near_pairs.append((int(nn_idx[j]), int(j), float(nn_dist[j])))
    return report


def find_duplicates(x, y=None):
    """Exact duplicate groups within one split, and those whose labels disagree.

    Returns {"duplicate_groups": [[i, j, ...], ...], "conflicting_groups": [...]}.
    """
    groups = {}
    for i, h in enumerate(content_hashes(x)):
        groups.setdefault(h, []).append(i)
    dup = [g for g in groups.values() if len(g) > 1]
    conflicts = []
    if y is not None:
        y = np.asarray(getattr(y, "data", y))
        conflicts = [g for g in dup if len(set(y[g].tolist())) > 1]
    return {"duplicate_groups": dup, "conflicting_groups": conflicts}


def class_balance(y, num_classes=None, rare_factor=0.1):
    """Counts and shares per class; a class is rare below ``rare_factor`` x 1/K of the data."""
    y = np.asarray(getattr(y, "data", y)).astype(np.int64)
    k = int(num_classes if num_classes is not None else y.max() + 1)
    counts = np.bincount(y, minlength=k)
    share = counts / max(len(y), 1)
    limit = rare_factor / k
    return {"counts": counts.tolist(), "share": share.tolist(), "rare_limit": limit,
            "rare_classes": [c for c in range(k) if share[c] < limit]}


# --- label issues: confident learning (Northcutt, Jiang & Chuang 2021) -----------------------


def find_label_issues(probs, labels):
    """Examples whose given label looks wrong, from out-of-sample predicted probabilities.

    Confident learning: per class j the threshold t_j is the mean predicted p(j) over examples
    labelled j. An example labelled i is "confidently" of class j when p(j) >= t_j (argmax over
    such j); it is an issue when that j != i. Ranked by self-confidence p(given label),
    lowest first. ``probs`` must be out-of-sample (cross-validation folds or a held-out model),
    or the model will have memorised the wrong labels.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n, k = probs.shape
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0
                           for j in range(k)])
    above = probs >= thresholds[None, :]  # (N, K)
    masked = np.where(above, probs, -np.inf)
    confident = masked.argmax(axis=1)
    has_any = above.any(axis=1)
    issue = has_any & (confident != labels)
    self_conf = probs[np.arange(n), labels]
    order = np.flatnonzero(issue)
    order = order[np.argsort(self_conf[order], kind="stable")]
    return {"indices": order.tolist(), "suggested": confident[order].tolist(),
            "self_confidence": self_conf[order].tolist(), "thresholds": thresholds.tolist(),
            "method": "confident learning (per-class thresholds = mean self-confidence) on "
                      "out-of-sample probabilities"}


def softmax_regression(x, y, num_classes, epochs=100, lr=0.5, l2=1e-3, seed=0):
    """Multinomial logistic regression by full-batch gradient descent; returns predict_proba."""
    x = _rows(x).astype(np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    w = np.zeros((z.shape[1], num_classes))
    b = np.zeros(num_classes)
    onehot = np.eye(num_classes)[np.asarray(y).astype(np.int64)]
    for _ in range(epochs):
        p = _softmax(z @ w + b)
        g = (p - onehot) / len(z)  # d mean-NLL / d logits
        w -= lr * (z.T @ g + l2 * w)
        b -= lr * g.sum(0)

    def predict_proba(xn):
        return _softmax(((_rows(xn).astype(np.float64) - mu) / sd) @ w + b)

    return predict_proba


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_val_probs(x, y, num_classes=None, folds=5, fit=softmax_regression, seed=0):
    """Out-of-sample probabilities (N, K): each fold predicted by a model fit on the others.

    ``fit(x, y, num_classes) -> predict_proba``; the default is ``softmax_regression``.
    """
    y = np.asarray(getattr(y, "data", y)).astype(np.int64)
    k = int(num_classes or y.max() + 1)
    if folds < 2:
        raise ValueError(f"cross-validation needs folds >= 2, got {folds}")
    perm = np.random.default_rng(seed).permutation(len(y))
    out = np.zeros((len(y), k))
    for part in np.array_split(perm, folds):
        rest = np.setdiff1d(perm, part)
        out[part] = fit(_rows(x)[rest], y[rest], k)(_rows(x)[part])
    return out


# --- drift -----------------------------------------------------------------------------------


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of 1-D samples."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def drift_report(a, b, folds=5, seed=0, top=10, max_rows=500, epochs=30):
    """Per-feature KS statistics and a domain-classifier score 2*AUC - 1 (0: no drift, 1: total).

    The domain classifier is a logistic regression telling rows of ``a`` from rows of ``b``,
    scored on cross-validation folds so the AUC is out of sample; it sees at most ``max_rows``
    rows of each set (drawn with ``seed``), which keeps it to a second or so.
    """
    from layerwise.audit.shift import auroc

    ra, rb = _rows(a).astype(np.float64), _rows(b).astype(np.float64)
    ks = np.array([ks_statistic(ra[:, f], rb[:, f]) for f in range(ra.shape[1])])
    rng = np.random.default_rng(seed)
    ra = ra[rng.permutation(len(ra))[:max_rows]]
    rb = rb[rng.permutation(len(rb))[:max_rows]]
    x = np.concatenate([ra, rb])
    d = np.concatenate([np.zeros(len(ra), np.int64), np.ones(len(rb), np.int64)])
    def fit(xs, ys, k):
        return softmax_regression(xs, ys, k, epochs=epochs)

    p = cross_val_probs(x, d, 2, folds=folds, fit=fit, seed=seed)[:, 1]
    auc = auroc(p[d == 1], p[d == 0])
    worst = np.argsort(-ks)[:top]
    return {"ks": ks.tolist(), "ks_max": float(ks.max()), "top_features": worst.tolist(),
            "domain_auc": auc, "domain_score": 2 * auc - 1}
