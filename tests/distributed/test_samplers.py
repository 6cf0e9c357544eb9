"""DistributedSampler against PyTorch's algorithm, written out by hand (torch is not imported
in the tests): the epoch's order padded to a multiple of the ranks by repeating its first
indices (or cut, with drop_last), rank r taking indices[r::num_replicas]; ShardSampler; and
the DataLoader reading through a sampler and resuming with it."""

import pytest

import layerwise as lw
from layerwise.data import DataLoader, DistributedSampler, ShardSampler, TensorDataset


def shares(n, replicas, **options):
    return [list(DistributedSampler(range(n), replicas, r, **options)) for r in range(replicas)]


def test_unshuffled_shares_are_pytorchs_lists():
    # torch.utils.data.DistributedSampler(range(10), 3, r, shuffle=False): padded with 0, 1
    assert shares(10, 3, shuffle=False) == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
    # drop_last: 10 -> 9 samples, 3 each
    assert shares(10, 3, shuffle=False, drop_last=True) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    # an even split needs no padding
    assert shares(8, 2, shuffle=False) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    # fewer samples than ranks: the order repeated as often as needed
    assert shares(2, 5, shuffle=False) == [[0], [1], [0], [1], [0]]
    assert [len(DistributedSampler(range(11), 4, r)) for r in range(4)] == [3] * 4


def interleaved(lists):
    """The padded order the ranks' lists were dealt from."""
    return [lists[i % len(lists)][i // len(lists)] for i in range(sum(map(len, lists)))]


@pytest.mark.parametrize("n, replicas", [(10, 3), (7, 2), (12, 4), (3, 4)])
def test_shuffled_shares_deal_one_padded_permutation(n, replicas):
    lists = shares(n, replicas, seed=5)
    order = interleaved(lists)
    total = len(order)
    assert total == replicas * -(-n // replicas)
    assert sorted(order[:n]) == list(range(n))  # one permutation of every sample ...
    assert order[n:] == (order[:n] * total)[:total - n]  # ... padded with its first indices


def test_the_shuffle_depends_on_seed_and_epoch_only():
    first = DistributedSampler(range(20), 2, 0, seed=3)
    again = DistributedSampler(range(20), 2, 0, seed=3)
    assert list(first) == list(again)
    order0 = list(first)
    first.set_epoch(1)
    assert list(first) != order0  # a new shuffle each epoch
    other_seed = DistributedSampler(range(20), 2, 0, seed=4)
    assert list(other_seed) != order0


@pytest.mark.parametrize("replicas, rank, message", [
    (2, 2, "rank must be in [0, 1]"), (2, -1, "rank must be in [0, 1]"),
    (0, 0, "num_replicas must be at least 1"),
])
def test_a_rank_outside_the_job_is_refused_in_one_line(replicas, rank, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")) as err:
        DistributedSampler(range(4), replicas, rank)
    assert "\n" not in str(err.value)


def test_bad_seed_and_epoch_are_refused():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        DistributedSampler(range(4), 2, 0, seed=-1)
    with pytest.raises(ValueError, match="epoch must be a non-negative int, got 'one'"):
        DistributedSampler(range(4), 2, 0).set_epoch("one")
    with pytest.raises(TypeError, match="rank must be an int, got 1.5"):
        DistributedSampler(range(4), 2, 1.5)


def test_shard_sampler_reads_each_sample_once():
    assert [list(ShardSampler(range(10), 3, r)) for r in range(3)] == \
        [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(ShardSampler(range(10), 3, r)) for r in range(3)] == [4, 3, 3]


def dataset(n=10):
    return TensorDataset(lw.tensor([[float(i)] for i in range(n)]), lw.arange(n))


def test_loader_reads_the_samplers_order_in_batches():
    sampler = DistributedSampler(range(10), 3, 1, shuffle=False)
    loader = DataLoader(dataset(), batch_size=3, sampler=sampler)
    assert len(loader) == 2
    assert [y.tolist() for _, y in loader] == [[1, 4, 7], [0]]


def test_loader_with_a_sampler_resumes_mid_epoch():
    def build():
        sampler = DistributedSampler(range(10), 2, 1, seed=7)
        return DataLoader(dataset(), batch_size=2, sampler=sampler), sampler

    loader, sampler = build()
    sampler.set_epoch(3)
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    rest = [y.tolist() for _, y in batches]
    resumed, resumed_sampler = build()  # a new process: epoch 0 until the state is loaded
    resumed.load_state_dict(state)
    assert resumed_sampler.epoch == 3
    assert [y.tolist() for _, y in resumed] == rest and len(rest) == 2


def test_loader_refuses_a_state_of_another_number_of_ranks():
    saved = DataLoader(dataset(), batch_size=2, sampler=DistributedSampler(range(10), 2, 0))
    other = DataLoader(dataset(), batch_size=2, sampler=DistributedSampler(range(10), 3, 0))
    with pytest.raises(ValueError, match="num_replicas=2 but this sampler has num_replicas=3"):
        other.load_state_dict(saved.state_dict())
    plain = DataLoader(dataset(), batch_size=2)
    with pytest.raises(ValueError, match="saved with a sampler state but this loader has none"):
        plain.load_state_dict(saved.state_dict())


def test_sampler_and_shuffle_together_are_refused():
    with pytest.raises(ValueError, match="sampler and shuffle=True"):
        DataLoader(dataset(), sampler=ShardSampler(range(10), 1, 0), shuffle=True)
