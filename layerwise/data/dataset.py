"""Datasets and the ways to cut them: TensorDataset, Subset, random_split, stratified_split.

A dataset is anything with ``__getitem__(i)`` and ``__len__()``, as in PyTorch. Splits return
Subsets (``random_split``) or index arrays (``stratified_split``); both draw their randomness
from a generator seeded by the caller, so a split can be reproduced from its seed alone.
"""

import abc
import itertools
import math
import warnings

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor


class Dataset(abc.ABC):
    """A map-style dataset: ``dataset[i]`` is the i-th sample, ``len(dataset)`` their number."""

    @abc.abstractmethod
    def __getitem__(self, index):
        ...

    @abc.abstractmethod
    def __len__(self):
        ...


def _as_array(value):
    if isinstance(value, Tensor):
        return value.data
    return xp.asarray(value)


class TensorDataset(Dataset):
    """Samples are rows of tensors that share their first dimension: ``ds[i] = (x[i], y[i])``.

    ``DataLoader`` recognises this class (and Subsets of it) and batches it with one
    fancy-index per tensor instead of one Python call per sample.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor, got none")
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor(_as_array(t)) for t in tensors)
        for k, t in enumerate(self.tensors):
            if t.ndim == 0:
                raise ValueError(
                    f"TensorDataset tensor {k} is 0-d; every tensor needs a first (sample) "
                    f"dimension"
                )
        sizes = [t.shape[0] for t in self.tensors]
        if len(set(sizes)) != 1:
            shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
            raise ValueError(
                f"TensorDataset tensors must have the same size in dim 0, got sizes {sizes} "
                f"(shapes {shapes})"
            )

    def __getitem__(self, index):
        return tuple(Tensor(t.data[index]) for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        indices = xp.asarray(_as_array(indices))
        if indices.ndim != 1:
            raise ValueError(f"Subset indices must be 1-D, got shape {indices.shape}")
        if indices.size == 0:
            indices = indices.astype(xp.int64)  # an empty list arrives as float64
        if not xp.issubdtype(indices.dtype, xp.integer):
            raise TypeError(f"Subset indices must be integers, got dtype {indices.dtype}")
        n = len(dataset)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(
                f"Subset indices must lie in [{-n}, {n - 1}] for a dataset of {n} samples, "
                f"got min {int(indices.min())}, max {int(indices.max())}"
            )
        self.dataset = dataset
        self.indices = indices.astype(xp.int64) % max(n, 1)  # negative -> positive, once

    def __getitem__(self, index):
        if isinstance(index, (list, tuple)):
            return [self.dataset[int(self.indices[i])] for i in index]
        return self.dataset[int(self.indices[index])]

    def __len__(self):
        return int(self.indices.shape[0])


def _generator(seed):
    """A private generator for ``seed``, or the global one when ``seed`` is None."""
    return backend.rng() if seed is None else xp.random.default_rng(seed)


def _split_lengths(lengths, n):
    """Counts from ``lengths``: either counts summing to ``n`` or fractions summing to 1.

    Fractions follow torch.utils.data.random_split: floor each share, then hand the
    leftover samples out one at a time, round-robin from the first split.
    """
    lengths = list(lengths)
    total = sum(lengths)
    if math.isclose(total, 1) and total <= 1:
        for k, frac in enumerate(lengths):
            if not 0 <= frac <= 1:
                raise ValueError(f"fraction at index {k} must be in [0, 1], got {frac}")
        counts = [math.floor(n * frac) for frac in lengths]
        for k in range(n - sum(counts)):
            counts[k % len(counts)] += 1
        for k, c in enumerate(counts):
            if c == 0:
                warnings.warn(f"random_split: length of split at index {k} is 0", stacklevel=3)
        return counts
    if any(int(x) != x or x < 0 for x in lengths):
        raise ValueError(f"lengths must be non-negative integer counts or fractions, got {lengths}")
    if total != n:
        raise ValueError(
            f"sum of input lengths {lengths} is {total}, which does not equal the length of "
            f"the dataset ({n}); pass counts summing to {n} or fractions summing to 1"
        )
    return [int(x) for x in lengths]


def random_split(dataset, lengths, seed=None):
    """Split ``dataset`` into non-overlapping Subsets of the given lengths (PyTorch semantics).

    ``lengths`` are counts summing to ``len(dataset)`` or fractions summing to 1. With a
    ``seed`` the split depends on the seed only (the global generator is not touched);
    without one it draws from ``layerwise.backend.rng()``.
    """
    counts = _split_lengths(lengths, len(dataset))
    perm = _generator(seed).permutation(len(dataset))
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    return [Subset(dataset, perm[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=0):
    """Index arrays (one per fraction, e.g. train, val, test) that keep each class's share.

    For a class with ``n_c`` members, split k receives ``n_c * fractions[k]`` of them rounded
    by the largest-remainder method, so every count is within 1 of its exact share and a
    class appears in every split whose exact share is at least one sample. Ties in the
    rounding go to the split that is furthest behind its overall target, so split sizes
    also stay close to ``len(labels) * fractions[k]``. The arrays are disjoint, cover
    ``range(len(labels))``, are sorted, and depend only on ``labels``, ``fractions`` and ``seed``.
    """
    labels = _as_array(labels)
    if labels.ndim != 1:
        raise ValueError(f"stratified_split expects 1-D labels, got shape {labels.shape}")
    fractions = [float(f) for f in fractions]
    if not fractions or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    gen = xp.random.default_rng(seed)
    classes, inverse = xp.unique(labels, return_inverse=True)
    # Stable sort by class after a shuffle: members of each class in a seeded random order.
    shuffled = gen.permutation(labels.shape[0])
    by_class = shuffled[xp.argsort(inverse.reshape(-1)[shuffled], kind="stable")]
    class_sizes = xp.bincount(inverse.reshape(-1), minlength=len(classes))

    fracs = xp.asarray(fractions)
    parts = [[] for _ in fractions]
    assigned = xp.zeros(len(fractions))
    target = xp.zeros(len(fractions))
    start = 0
    for n_c in class_sizes.tolist():
        members = by_class[start:start + n_c]
        start += n_c
        exact = n_c * fracs
        counts = xp.floor(exact + 1e-9).astype(xp.int64)
        target += exact
        leftover = n_c - int(counts.sum())
        if leftover > 0:
            remainder = xp.round(exact - counts, 9)
            deficit = target - (assigned + counts)
            # Largest remainder first; among equal remainders, the split most behind target.
            order = xp.lexsort((-deficit, -remainder))
            counts[order[:leftover]] += 1
        assigned += counts
        bounds = xp.concatenate(([0], xp.cumsum(counts)))
        for k in range(len(fractions)):
            parts[k].append(members[bounds[k]:bounds[k + 1]])
    return tuple(
        xp.sort(xp.concatenate(p)).astype(xp.int64) if p else xp.zeros(0, xp.int64) for p in parts
    )
