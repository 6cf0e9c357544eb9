"""TensorDataset, Subset, random_split and stratified_split, checked by their properties."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.data import Dataset, Subset, TensorDataset, random_split, stratified_split


def make_dataset(n=10):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64) % 4
    return TensorDataset(lw.tensor(x), lw.tensor(y)), x, y


def test_dataset_is_abstract():
    with pytest.raises(TypeError):
        Dataset()


def test_tensor_dataset_rows():
    ds, x, y = make_dataset(7)
    assert len(ds) == 7
    xi, yi = ds[5]
    np.testing.assert_array_equal(xi.numpy(), x[5])
    assert yi.item() == y[5]
    assert isinstance(xi, lw.Tensor)


def test_tensor_dataset_size_mismatch_quotes_sizes():
    with pytest.raises(ValueError, match=r"\[5, 4\]"):
        TensorDataset(lw.zeros(5, 2), lw.zeros(4))


def test_subset_maps_indices_and_accepts_negative():
    ds, x, _ = make_dataset(10)
    sub = Subset(ds, [7, 2, -1])
    assert len(sub) == 3
    for k, i in enumerate([7, 2, 9]):
        np.testing.assert_array_equal(sub[k][0].numpy(), x[i])
    with pytest.raises(IndexError, match="10"):
        Subset(ds, [10])


@pytest.mark.parametrize("lengths", [[3, 7], [5, 5, 0], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33]])
def test_random_split_disjoint_complete(lengths):
    ds, _, _ = make_dataset(10)
    parts = random_split(ds, lengths, seed=3)
    got = np.concatenate([p.indices for p in parts])
    assert sorted(got.tolist()) == list(range(10))
    assert sum(len(p) for p in parts) == 10
    if all(isinstance(v, int) for v in lengths):
        assert [len(p) for p in parts] == lengths


def test_random_split_fractions_follow_pytorch_rounding():
    ds, _, _ = make_dataset(10)
    # floor(10 * f) = [3, 3, 3], the one leftover goes to the first split (round-robin).
    assert [len(p) for p in random_split(ds, [1 / 3, 1 / 3, 1 / 3], seed=0)] == [4, 3, 3]
    ds11, _, _ = make_dataset(11)
    assert [len(p) for p in random_split(ds11, [0.25] * 4, seed=0)] == [3, 3, 3, 2]


def test_random_split_seed_is_deterministic_and_independent_of_global():
    ds, _, _ = make_dataset(50)
    lw.manual_seed(1)
    a = random_split(ds, [20, 30], seed=11)
    lw.manual_seed(2)
    b = random_split(ds, [20, 30], seed=11)
    np.testing.assert_array_equal(a[0].indices, b[0].indices)
    c = random_split(ds, [20, 30], seed=12)
    assert not np.array_equal(a[0].indices, c[0].indices)
    # Without a seed the global generator decides, so lw.manual_seed reproduces it.
    lw.manual_seed(5)
    d1 = random_split(ds, [20, 30])
    lw.manual_seed(5)
    d2 = random_split(ds, [20, 30])
    np.testing.assert_array_equal(d1[1].indices, d2[1].indices)


def test_random_split_bad_lengths():
    ds, _, _ = make_dataset(10)
    with pytest.raises(ValueError, match="does not equal the length of the dataset"):
        random_split(ds, [3, 3])


def imbalanced_labels(seed=0):
    rng = np.random.default_rng(seed)
    sizes = {0: 97, 1: 40, 2: 13, 3: 3, 7: 250}
    labels = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    return rng.permutation(labels), sizes


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.9, 0.1), (0.5, 0.25, 0.25)]
)
def test_stratified_split_properties(fractions):
    labels, sizes = imbalanced_labels()
    parts = stratified_split(labels, fractions, seed=4)
    assert len(parts) == len(fractions)
    union = np.concatenate(parts)
    assert len(union) == len(labels) and len(np.unique(union)) == len(labels)  # disjoint, complete
    for part, frac in zip(parts, fractions):
        for c, n_c in sizes.items():
            count = int((labels[part] == c).sum())
            assert abs(count - n_c * frac) < 1 + 1e-9, (c, count, n_c * frac)
            if n_c * frac >= 1:
                assert count >= 1
        # Overall split size also stays within one sample of its target per class at worst.
        assert abs(len(part) - len(labels) * frac) <= len(sizes)


def test_stratified_split_deterministic_for_seed():
    labels, _ = imbalanced_labels()
    a = stratified_split(labels, seed=9)
    b = stratified_split(lw.tensor(labels), seed=9)
    c = stratified_split(labels, seed=10)
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa, pb)
    assert any(not np.array_equal(pa, pc) for pa, pc in zip(a, c))


def test_stratified_split_balanced_ties_spread_across_classes():
    # 10 classes of 5: exact shares (4, 0.5, 0.5); ties must not all go to the same split.
    labels = np.repeat(np.arange(10), 5)
    _, val, test = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    assert len(val) == len(test) == 5


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(np.zeros(10), (0.5, 0.4))
