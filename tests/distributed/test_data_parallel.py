"""DistributedDataParallel in real `mpiexec` jobs of 2 and 3 ranks, against one process
computing the whole batch (float64).

Each job runs DDP_SCRIPT: every rank builds its model from a seed of its own (so only the
broadcast from rank 0 can make them equal), takes its rows of a global batch, and prints what
it found; the reference is the same model, built from rank 0's seed, on all the rows.
"""

import textwrap

import pytest

from tests.distributed.jobs import run_job

TIGHT = 1e-12  # float64: the ranks' sum of two means differs from one mean in the last bits

DDP_SCRIPT = textwrap.dedent('''
    import json
    import os
    import sys

    import numpy as np

    import layerwise as lw
    from layerwise import distributed as dist, nn
    from layerwise.data import DataLoader, DistributedSampler, ShardSampler, TensorDataset
    from layerwise.nn import functional as F
    from layerwise.nn.parallel import DistributedDataParallel as DDP
    from layerwise.train import Trainer

    dist.init()
    rank, world = dist.rank(), dist.world_size()
    lw.set_default_dtype(lw.float64)
    PER_RANK = 4
    data = np.random.default_rng(0)
    X = data.normal(size=(3, world * PER_RANK, 6))  # three steps of a global batch
    Y = data.integers(0, 4, size=(3, world * PER_RANK))
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    result = {"rank": rank}


    def mlp(seed):
        lw.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


    def loss_of(model, x, y):
        return F.cross_entropy(model(lw.tensor(x)), lw.tensor(y))


    def grad_error(model, reference):
        return max(float(np.abs(p.grad.data - q.grad.data).max())
                   for p, q in zip(model.parameters(), reference.parameters()))


    # the gradient of the whole batch, one bucket per parameter and one bucket in all
    for cap in (1e-6, 25):
        model, reference = mlp(seed=rank), mlp(seed=0)
        ddp = DDP(model, bucket_cap_mb=cap)
        loss_of(ddp, X[0][mine], Y[0][mine]).backward()
        loss_of(reference, X[0], Y[0]).backward()
        result[f"grad_error_{cap}"] = grad_error(model, reference)
        result[f"buckets_{cap}"] = len(ddp._bucket_list)

    # three steps of SGD with momentum
    model, reference = mlp(seed=rank), mlp(seed=0)
    ddp = DDP(model, bucket_cap_mb=1e-6)
    steppers = [lw.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for m in (model, reference)]
    for step in range(3):
        for optimizer in steppers:
            optimizer.zero_grad()
        loss_of(ddp, X[step][mine], Y[step][mine]).backward()
        loss_of(reference, X[step], Y[step]).backward()
        for optimizer in steppers:
            optimizer.step()
    weights = [p.data.tolist() for p in model.parameters()]
    result["same_weights_everywhere"] = all(w == weights for w in dist.all_gather_json(weights))
    result["weight_error"] = max(float(np.abs(p.data - q.data).max())
                                 for p, q in zip(model.parameters(), reference.parameters()))

    # no_sync: two micro-batches, one allreduce
    model, reference, own = mlp(seed=rank), mlp(seed=0), mlp(seed=0)
    ddp = DDP(model)
    with ddp.no_sync():
        loss_of(ddp, X[0][mine], Y[0][mine]).backward()
    loss_of(own, X[0][mine], Y[0][mine]).backward()  # inside no_sync: this rank's rows alone
    result["no_sync_local_error"] = grad_error(model, own)
    loss_of(ddp, X[1][mine], Y[1][mine]).backward()
    (loss_of(reference, X[0], Y[0]) + loss_of(reference, X[1], Y[1])).backward()
    result["no_sync_error"] = grad_error(model, reference)

    # the output layer's bucket starts while backward has yet to reach the first layer
    model = mlp(seed=rank)
    ddp = DDP(model, bucket_cap_mb=1e-6)
    first_layer_pending, all_reduce = [], dist.all_reduce

    def recording(tensor, op="sum", async_op=False):
        first_layer_pending.append(model[0].weight.grad is None)
        return all_reduce(tensor, op, async_op)

    dist.all_reduce = recording
    loss_of(ddp, X[0][mine], Y[0][mine]).backward()
    dist.all_reduce = all_reduce
    result["first_layer_pending"] = first_layer_pending

    # batch norm: rank 0's buffers at construction and before each training forward
    lw.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5))
    norm = net[1]
    norm.running_mean.data[...] = rank + 1.0
    norm.running_var.data[...] = rank + 2.0
    ddp = DDP(net)
    result["mean_at_start"] = norm.running_mean.data.tolist()
    result["var_at_start"] = norm.running_var.data.tolist()
    norm.running_mean.data[...] = 10.0 * (rank + 1)  # apart again: a forward takes rank 0's
    batch_mean = net[0](lw.tensor(X[0][mine])).data.mean(axis=0)
    ddp(lw.tensor(X[0][mine]))
    result["mean_after_forward"] = norm.running_mean.data.tolist()
    result["expected_mean_after_forward"] = (0.9 * 10.0 + 0.1 * batch_mean).tolist()
    ddp.eval()
    norm.running_mean.data[...] = 10.0 * (rank + 1)
    ddp(lw.tensor(X[0][mine]))  # evaluation reads uneven shares: nothing is broadcast
    result["mean_after_eval"] = norm.running_mean.data.tolist()

    # validation over uneven shares, summed over the ranks by the Trainer
    V = TensorDataset(lw.tensor(data.normal(size=(11, 6))), lw.tensor(data.integers(0, 4, 11)))
    model, reference = mlp(seed=rank), mlp(seed=0)
    ddp = DDP(model)
    share = DataLoader(V, batch_size=4, sampler=ShardSampler(V))
    trainer = Trainer(ddp, lw.optim.SGD(model.parameters(), lr=0.1), train_loader=share)
    alone = Trainer(reference, lw.optim.SGD(reference.parameters(), lr=0.1),
                    train_loader=DataLoader(V, batch_size=4))
    result["eval"] = trainer.evaluate(share)
    result["eval_alone"] = alone.evaluate(DataLoader(V, batch_size=4))

    # the samplers, with the rank and size taken from lw.distributed
    result["sampler"] = list(DistributedSampler(range(10), shuffle=False))
    result["shard"] = list(ShardSampler(range(10)))

    # a rank that built another model
    try:
        DDP(nn.Linear(6, 8 if rank < world - 1 else 9))
        result["mismatch"] = None
    except ValueError as err:
        result["mismatch"] = str(err)
    with open(os.path.join(sys.argv[1], f"rank-{rank}.json"), "w") as f:
        json.dump(result, f)
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "ddp_job.py"
    path.write_text(DDP_SCRIPT)
    return path


def _check_job(results, world):
    for rank, r in enumerate(results):
        # gradients: one bucket per parameter (4) or one for all; equal to the whole batch's
        assert (r["buckets_1e-06"], r["buckets_25"]) == (4, 1)
        assert r["grad_error_1e-06"] < TIGHT and r["grad_error_25"] < TIGHT, r
        # weights after three steps: the same bits on every rank, one process's up to rounding
        assert r["same_weights_everywhere"] is True
        assert r["weight_error"] < 1e-10, r["weight_error"]
        # gradient accumulation
        assert r["no_sync_local_error"] < TIGHT and r["no_sync_error"] < TIGHT, r
        # one allreduce per parameter; the first while the first layer had no gradient yet
        assert r["first_layer_pending"][0] is True and len(r["first_layer_pending"]) == 4
        # batch norm's buffers: rank 0's at construction; before a training forward too
        assert r["mean_at_start"] == [1.0] * 5 and r["var_at_start"] == [2.0] * 5
        assert r["mean_after_forward"] == pytest.approx(r["expected_mean_after_forward"],
                                                        abs=TIGHT)
        assert r["mean_after_eval"] == [10.0 * (rank + 1)] * 5
        # validation metrics over uneven shares equal one process's over all the samples
        assert r["eval"]["accuracy"] == r["eval_alone"]["accuracy"]
        assert r["eval"]["loss"] == pytest.approx(r["eval_alone"]["loss"], abs=TIGHT)
        # the sampler's share, padded by repeating the first indices (PyTorch's rule)
        padded = list(range(10)) + list(range(10))[:-10 % world]
        assert r["sampler"] == padded[rank::world]
        assert r["shard"] == list(range(rank, 10, world))
        assert r["mismatch"] is not None and f"rank {world - 1} built a different model" \
            in r["mismatch"] and "build the same model on every rank" in r["mismatch"]


def test_ddp_on_two_ranks_equals_one_process_on_the_whole_batch(script):
    _check_job(run_job(2, script), world=2)


def test_ddp_on_three_ranks_with_uneven_shares(script):
    _check_job(run_job(3, script), world=3)
