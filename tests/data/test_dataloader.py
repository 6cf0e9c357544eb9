"""DataLoader: batch sizes, shuffling, the TensorDataset fast path, and resuming mid-epoch."""

import json

import numpy as np
import pytest

import layerwise as lw
from layerwise.data import DataLoader, Dataset, Subset, TensorDataset, default_collate


class ListDataset(Dataset):
    """A plain dataset (no fast path) holding the same rows as a TensorDataset."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __getitem__(self, i):
        return lw.tensor(self.x[i]), lw.tensor(self.y[i])

    def __len__(self):
        return len(self.x)


def arrays(n=23):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    return x, y


def as_numpy(batches):
    return [tuple(t.numpy() for t in b) for b in batches]


@pytest.mark.parametrize("n,bs,drop_last,expect", [
    (23, 5, False, [5, 5, 5, 5, 3]), (23, 5, True, [5, 5, 5, 5]), (20, 5, False, [5] * 4),
    (3, 8, False, [3]), (3, 8, True, []),
])
def test_batch_sizes_and_len(n, bs, drop_last, expect):
    x, y = arrays(n)
    ds = TensorDataset(lw.tensor(x), lw.tensor(y))
    loader = DataLoader(ds, batch_size=bs, drop_last=drop_last)
    sizes = [b[0].shape[0] for b in loader]
    assert sizes == expect
    assert len(loader) == len(expect)


def test_unshuffled_order_is_dataset_order():
    x, y = arrays()
    batches = list(DataLoader(TensorDataset(lw.tensor(x), lw.tensor(y)), batch_size=4))
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64


def test_shuffle_is_a_permutation_per_epoch_and_seeded():
    x, y = arrays()
    ds = TensorDataset(lw.tensor(x), lw.tensor(y))
    a = DataLoader(ds, batch_size=4, shuffle=True, seed=7)
    epochs = [np.concatenate([b[1].numpy() for b in a]) for _ in range(3)]
    for e in epochs:
        assert sorted(e.tolist()) == y.tolist()
    assert not np.array_equal(epochs[0], epochs[1])  # a new permutation each epoch
    assert not np.array_equal(epochs[0], y)
    b = DataLoader(ds, batch_size=4, shuffle=True, seed=7)
    again = [np.concatenate([b[1].numpy() for b in b]) for _ in range(3)]
    for e1, e2 in zip(epochs, again):
        np.testing.assert_array_equal(e1, e2)
    # Rows stay paired with their labels after shuffling.
    for xb, yb in a:
        np.testing.assert_array_equal(xb.numpy(), x[yb.numpy()])


def test_unseeded_loader_follows_manual_seed():
    x, y = arrays()
    ds = TensorDataset(lw.tensor(x), lw.tensor(y))
    lw.manual_seed(3)
    first = [b[1].numpy() for b in DataLoader(ds, batch_size=5, shuffle=True)]
    lw.manual_seed(3)
    second = [b[1].numpy() for b in DataLoader(ds, batch_size=5, shuffle=True)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shuffle", [False, True])
def test_fast_path_equals_generic_path(shuffle):
    x, y = arrays(31)
    fast_ds = Subset(TensorDataset(lw.tensor(x), lw.tensor(y)), np.arange(30, 2, -1))
    slow_ds = Subset(ListDataset(x, y), np.arange(30, 2, -1))
    fast = DataLoader(fast_ds, batch_size=6, shuffle=shuffle, seed=2)
    slow = DataLoader(slow_ds, batch_size=6, shuffle=shuffle, seed=2)
    assert fast._fast is not None and slow._fast is None
    for _ in range(2):
        fb, sb = list(fast), list(slow)
        assert len(fb) == len(sb) == 5
        for f, s in zip(fb, sb):
            assert isinstance(f, tuple) and isinstance(s, tuple)
            for ft, st in zip(f, s):
                assert ft.dtype == st.dtype and ft.shape == st.shape
                np.testing.assert_array_equal(ft.numpy(), st.numpy())


def test_custom_collate_fn_is_used():
    x, y = arrays(6)
    loader = DataLoader(TensorDataset(lw.tensor(x), lw.tensor(y)), batch_size=4,
                        collate_fn=lambda samples: len(samples))
    assert list(loader) == [4, 2]


def test_default_collate_numbers_dicts_and_arrays():
    batch = default_collate([{"a": 1, "b": 0.5, "c": np.ones(2, np.float32)},
                             {"a": 2, "b": 1.5, "c": np.zeros(2, np.float32)}])
    assert batch["a"].dtype == np.int64 and batch["a"].tolist() == [1, 2]
    assert batch["b"].dtype == np.float64 and batch["b"].tolist() == [0.5, 1.5]
    assert batch["c"].shape == (2, 2) and batch["c"].dtype == np.float32


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(TensorDataset(lw.zeros(3)), batch_size=0)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_resume_mid_epoch_matches_uninterrupted(fast, k):
    x, y = arrays(23)
    ds = TensorDataset(lw.tensor(x), lw.tensor(y)) if fast else ListDataset(x, y)

    def build():
        return DataLoader(ds, batch_size=4, shuffle=True, seed=5)  # 6 batches per epoch

    reference = build()
    ref_batches = as_numpy(reference) + as_numpy(reference) + as_numpy(reference)

    interrupted = build()
    as_numpy(interrupted)  # epoch 0, complete
    it = iter(interrupted)
    seen = [tuple(t.numpy() for t in next(it)) for _ in range(k)]  # k batches of epoch 1
    state = json.loads(json.dumps(interrupted.state_dict()))
    assert state["epoch"] == 1 and state["batches_yielded"] == k

    resumed = build()
    resumed.load_state_dict(state)
    rest = as_numpy(resumed) + as_numpy(resumed)  # rest of epoch 1, then epoch 2
    got = seen + rest
    expected = ref_batches[6:]
    assert len(got) == len(expected) == 12
    for g, e in zip(got, expected):
        for gt, et in zip(g, e):
            np.testing.assert_array_equal(gt, et)
    assert resumed.epoch == 3


def test_state_after_last_batch_starts_next_epoch():
    x, y = arrays(8)
    ds = TensorDataset(lw.tensor(x), lw.tensor(y))
    a = DataLoader(ds, batch_size=4, shuffle=True, seed=0)
    it = iter(a)
    next(it), next(it)  # both batches taken, StopIteration not yet seen
    state = json.loads(json.dumps(a.state_dict()))
    assert (state["epoch"], state["batches_yielded"]) == (1, 0)
    b = DataLoader(ds, batch_size=4, shuffle=True, seed=0)
    b.load_state_dict(state)
    a_next = as_numpy(a)
    b_next = as_numpy(b)
    for ab, bb in zip(a_next, b_next):
        np.testing.assert_array_equal(ab[1], bb[1])


def test_load_state_dict_rejects_a_different_loader():
    ds = TensorDataset(lw.zeros(10))
    state = DataLoader(ds, batch_size=2).state_dict()
    with pytest.raises(ValueError, match="batch_size=2 but this loader has batch_size=3"):
        DataLoader(ds, batch_size=3).load_state_dict(state)


@pytest.mark.parametrize("shape, batch", [
    ((1, 28, 28), (1 << 18) // 784),  # a digit: 334 a batch
    ((1, 96, 96), (1 << 18) // 9216),  # a 96x96 scene: 28
    ((14,), 1000),  # a table row: capped
    ((3, 1024, 1024), 1),  # one image past the budget still goes through alone
])
def test_inference_batches_hold_a_bounded_number_of_input_values(shape, batch):
    from layerwise.data.loader import evaluation_loader, inference_batch_size

    assert inference_batch_size(shape) == batch
    if np.prod(shape) <= 9216:
        ds = TensorDataset(lw.zeros((1200, *shape)), lw.zeros(1200))
        sizes = [len(y) for _, y in evaluation_loader(ds)]
        assert sizes[0] == batch and sum(sizes) == 1200
