"""Which samples each process of a data-parallel job reads (``DataLoader(sampler=...)``).

    sampler = DistributedSampler(train_set)          # this rank's share, from lw.distributed
    loader = DataLoader(train_set, batch_size=32, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                     # a new shuffle (the Trainer calls it)
        for x, y in loader: ...

``DistributedSampler`` is PyTorch's algorithm: the epoch's order (a permutation seeded by
``seed + epoch``, or 0..n-1), padded by repeating its first indices up to a multiple of the
number of ranks (or cut down to one, with ``drop_last``), and rank r takes every
``num_replicas``-th index from position r. Every rank gets the same number of samples, so
every rank takes the same number of steps; the permutation is NumPy's, not torch's.

``ShardSampler`` reads each sample exactly once over all ranks, shares differing by one: for
evaluation, where a repeated sample would count twice in the summed metrics.
"""

import math
import numbers

from layerwise import distributed
from layerwise.backend import xp


def _replicas_and_rank(num_replicas, rank):
    if num_replicas is None:
        num_replicas = distributed.world_size()
    if rank is None:
        rank = distributed.rank()
    for name, value in (("num_replicas", num_replicas), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}] for {num_replicas} "
                         f"replicas, got {rank}")
    return int(num_replicas), int(rank)


class DistributedSampler:
    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        self.num_replicas, self.rank = _replicas_and_rank(num_replicas, rank)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.dataset = dataset
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            order = xp.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = xp.arange(n)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > n:  # repeat the first indices (all of them, as often as needed)
            order = xp.resize(order, self.total_size)
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Shuffle anew for ``epoch``: call it before each epoch's iteration, on every rank."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def state_dict(self):
        return {"epoch": self.epoch, "seed": self.seed, "num_replicas": self.num_replicas,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state):
        for key in ("num_replicas", "shuffle", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has "
                    f"{key}={getattr(self, key)!r}; resume on as many processes and with the "
                    f"settings it was saved with")
        self.seed = int(state["seed"])
        self.set_epoch(state["epoch"])


class ShardSampler:
    """Samples rank, rank + num_replicas, ...: every sample once over all ranks, no padding."""

    def __init__(self, dataset, num_replicas=None, rank=None):
        self.num_replicas, self.rank = _replicas_and_rank(num_replicas, rank)
        self.dataset = dataset

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self):
        return len(range(self.rank, len(self.dataset), self.num_replicas))
