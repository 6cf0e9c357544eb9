"""DataLoader: batches from a dataset, optionally shuffled, with a state that resumes mid-epoch."""

import math
import numbers

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor
from layerwise.data.dataset import Subset, TensorDataset

# Input values one no-graph forward pass holds, at most: past this a conv net's columns and
# activations leave the cache and each example costs more. Measured, ms per example: the U-Net
# on 96x96 scenes 24.6 at batch 256 and 10.4 at 32; the digit CNN 0.25 at 1,000 and 0.18 at 250.
INFERENCE_BATCH_VALUES = 1 << 18
MAX_INFERENCE_BATCH = 1000


def inference_batch_size(sample_shape):
    """Examples per forward pass of evaluation (no graph) for inputs of ``sample_shape``: as
    many as hold INFERENCE_BATCH_VALUES values, from 1 to MAX_INFERENCE_BATCH."""
    values = max(1, math.prod(sample_shape))
    return max(1, min(MAX_INFERENCE_BATCH, INFERENCE_BATCH_VALUES // values))


def sample_shape(dataset):
    """The shape of one input of ``dataset`` (its first), () for an empty one."""
    if len(dataset) == 0:
        return ()
    first = dataset[0]
    first = first[0] if isinstance(first, (tuple, list)) else first
    return tuple(getattr(first, "shape", ()))


def evaluation_loader(dataset):
    """A DataLoader over ``dataset`` in order, in batches of ``inference_batch_size``."""
    return DataLoader(dataset, batch_size=inference_batch_size(sample_shape(dataset)))


def default_collate(samples):
    """Stack a list of samples into a batch, field by field (as torch's default_collate).

    Tensors and arrays are stacked along a new first dim; Python ints become int64,
    floats float64 and bools bool tensors; tuples, lists and dicts are collated per field;
    anything else (strings, say) is returned as a list.
    """
    first = samples[0]
    if isinstance(first, Tensor):
        return Tensor(xp.stack([s.data for s in samples]))  # B x (sample shape)
    if isinstance(first, xp.ndarray):
        return Tensor(xp.stack(samples))
    if isinstance(first, (bool, xp.bool_)):
        return Tensor(xp.asarray(samples, dtype=xp.bool_))
    if isinstance(first, xp.generic):  # numpy scalars keep their dtype
        return Tensor(xp.asarray(samples, dtype=first.dtype))
    if isinstance(first, numbers.Integral):
        return Tensor(xp.asarray(samples, dtype=xp.int64))
    if isinstance(first, numbers.Real):
        return Tensor(xp.asarray(samples, dtype=xp.float64))
    if isinstance(first, dict):
        return {key: default_collate([s[key] for s in samples]) for key in first}
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError(
                f"default_collate: every sample must have the same number of fields, got "
                f"lengths {sorted({len(s) for s in samples})}"
            )
        fields = [default_collate(list(f)) for f in zip(*samples)]
        return tuple(fields) if isinstance(first, tuple) else fields
    return list(samples)


def _tensor_source(dataset):
    """(arrays, index map or None) when ``dataset`` is a TensorDataset or Subsets of one."""
    index_map = None
    while isinstance(dataset, Subset):
        index_map = dataset.indices if index_map is None else dataset.indices[index_map]
        dataset = dataset.dataset
    if type(dataset) is not TensorDataset:  # a subclass may override __getitem__
        return None
    return tuple(t.data for t in dataset.tensors), index_map


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size``.

    Each pass (epoch) over the loader yields ``len(loader)`` batches; the last one is
    smaller unless ``drop_last``. With ``shuffle``, every epoch draws a fresh permutation
    from the loader's own generator, seeded by ``seed`` (or, when ``seed`` is None, by a
    number drawn from ``layerwise.backend.rng()`` when a shuffling loader is built), so a
    fixed seed gives the same sequence of epochs in every run.

    A TensorDataset (or a Subset of one) takes a fast path: each batch is one fancy-index
    into each underlying array, yielding a tuple of Tensors. Any other dataset is read one
    sample at a time and batched by ``collate_fn`` (``default_collate`` by default).

    Resuming: ``state_dict()`` returns a JSON-serialisable dict holding the generator state
    at the start of the current epoch, the number of epochs completed and the number of
    batches already yielded in the current epoch. A loader built on the same dataset with
    the same ``batch_size``/``shuffle``/``drop_last`` that calls ``load_state_dict(d)``
    then yields, on its next ``iter()``, exactly the batches an uninterrupted loader would
    have yielded next: the rest of the interrupted epoch, then the following epochs::

        state = loader.state_dict()          # after k batches of epoch e
        ...
        loader.load_state_dict(state)
        for batch in loader: ...             # batches k, k+1, ... of epoch e

    Starting a new ``iter()`` without loading a state begins a new epoch, as in PyTorch.
    The state follows the most recently started iterator.

    ``sampler``: what to read each epoch instead, in its order (an iterable of indices with a
    length, e.g. ``DistributedSampler``: one process's share); it excludes ``shuffle``, as in
    PyTorch. A sampler with ``state_dict()`` has its state (its epoch) in the loader's.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 collate_fn=None, sampler=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        if sampler is not None and shuffle:
            raise ValueError("sampler and shuffle=True are two ways to order the samples; "
                             "give one (the sampler shuffles, if it is asked to)")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        # Without a seed, take one from the global generator so lw.manual_seed governs it;
        # an unshuffled loader never draws, so it leaves the global stream untouched.
        if seed is None:
            seed = int(backend.rng().integers(2**63)) if shuffle else 0
        self.seed = int(seed)
        self._generator = xp.random.default_rng(self.seed)
        self._fast = _tensor_source(dataset) if collate_fn is None else None
        self._epoch = 0             # epochs completed
        self._position = 0          # batches yielded in the current epoch
        self._epoch_rng_state = self._generator.bit_generator.state
        self._resume = False        # next iter() continues the current epoch

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self):
        """The number of epochs completed."""
        return self._epoch

    def _order(self):
        """This epoch's sample order; draws from the generator only when shuffling."""
        if self.sampler is not None:
            return xp.asarray(list(self.sampler), dtype=xp.int64)
        n = len(self.dataset)
        return self._generator.permutation(n) if self.shuffle else xp.arange(n)

    def __iter__(self):
        if self._resume:
            # Rewind to the epoch's start and redraw the same permutation.
            self._generator.bit_generator.state = self._epoch_rng_state
            start = self._position
            self._resume = False
        else:
            self._epoch_rng_state = self._generator.bit_generator.state
            self._position = start = 0
        order = self._order()
        return self._batches(order, start)

    def _batches(self, order, start):
        n_batches = len(self)
        for b in range(start, n_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = self._fetch(idx)
            # Book-keep before yielding so a state_dict taken after this batch counts it.
            self._position = b + 1
            if self._position == n_batches:
                self._epoch += 1
                self._position = 0
                self._epoch_rng_state = self._generator.bit_generator.state
            yield batch

    def _fetch(self, idx):
        if self._fast is not None:
            arrays, index_map = self._fast
            if index_map is not None:
                idx = index_map[idx]
            return tuple(Tensor(a[idx]) for a in arrays)  # one fancy-index per array
        collate = self.collate_fn or default_collate
        return collate([self.dataset[int(i)] for i in idx])

    # --- resuming -----------------------------------------------------------------------
    def state_dict(self):
        """A JSON-serialisable snapshot from which ``load_state_dict`` resumes iteration."""
        return {
            "epoch": self._epoch,
            "batches_yielded": self._position,
            "generator": self._epoch_rng_state,
            "seed": self.seed,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "sampler": _sampler_state(self.sampler),
        }

    def load_state_dict(self, state):
        """Restore a ``state_dict()``; the next ``iter()`` continues where it left off."""
        for key, mine in (("num_samples", len(self.dataset)), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle), ("drop_last", self.drop_last)):
            if state[key] != mine:
                raise ValueError(
                    f"loader state has {key}={state[key]!r} but this loader has {key}={mine!r}; "
                    f"resume with a loader built like the one that was saved"
                )
        saved_sampler, mine = state.get("sampler"), _sampler_state(self.sampler)
        if (saved_sampler is None) != (mine is None):
            raise ValueError(
                f"loader state was saved {'with' if mine is None else 'without'} a sampler "
                f"state but this loader has {'none' if mine is None else 'one'}; resume with "
                f"a loader built like the one that was saved")
        position = int(state["batches_yielded"])
        if not 0 <= position < max(len(self), 1):
            raise ValueError(
                f"batches_yielded={position} is out of range for a loader of {len(self)} batches"
            )
        if mine is not None:
            self.sampler.load_state_dict(saved_sampler)
        self.seed = int(state["seed"])
        self._generator = xp.random.default_rng(self.seed)
        self._generator.bit_generator.state = state["generator"]
        self._epoch_rng_state = self._generator.bit_generator.state
        self._epoch = int(state["epoch"])
        self._position = position
        self._resume = True


def _sampler_state(sampler):
    """The sampler's state when it has one to restore (an epoch), else None."""
    return sampler.state_dict() if hasattr(sampler, "state_dict") else None
