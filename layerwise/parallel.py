"""One training step's forward and backward as two halves of the batch, one per core.

Why: a step spends part of its time in elementwise passes (layer norm, GELU, softmax, the
residual adds) that run on one core, between matrix products that use both. Run as two
halves of the batch at once, each half's products on one BLAS thread, everything runs on
both cores and OpenBLAS's workers are parked once a step instead of around every op that
splits itself (the attention, GELU and batched-product fast paths, ops/fast/). GPT workload
of bench/ (B=16, T=128): 99.7 -> 87.7 ms a step. Small steps lose: the MLP workload's 4.7 ms
step ran 0.75x.

It gives the gradients of the whole batch only for a model that treats its samples
independently, so it refuses batch norm (statistics over half the batch) and dropout (its
draws would depend on which half ran first) in training mode. The two halves' gradients are
added in a fixed order, first half first, so the result does not depend on which thread ran
first; it differs from one pass over the whole batch in the last bits, as any other order of
the same sums would.

    loss = lw.parallel.backward_in_halves(model, lambda x, y: F.cross_entropy(model(x), y), x, y)
    optimizer.step()
"""

from layerwise.autograd import engine, recording
from layerwise.autograd.tensor import Tensor
from layerwise.backend import threads, xp


def backward_in_halves(model, loss_fn, *batch, reduction="mean"):
    """``loss_fn(*batch).backward()`` computed as two halves of the batch on two cores.

    ``batch`` holds Tensors or arrays whose first dim is the batch (at least 2); ``loss_fn``
    maps a part of them to a scalar loss, the ``reduction`` ("mean" or "sum") of per-sample
    losses that each weigh the same. The gradients are added into ``.grad`` as
    ``backward()`` adds them; returns the whole batch's loss as a Tensor without a graph.
    Without two BLAS threads to use, the halves run one after the other.
    """
    _check(model, batch, reduction)
    n = batch[0].shape[0]
    cut = n // 2
    parts = (slice(0, cut), slice(cut, n))
    weights = (cut / n, (n - cut) / n) if reduction == "mean" else (1.0, 1.0)

    def half(i):
        loss = loss_fn(*[item[parts[i]] for item in batch])
        if loss.data.size != 1:
            raise ValueError(f"backward_in_halves needs loss_fn to return a scalar loss, "
                             f"got shape {tuple(loss.shape)}")
        (loss * weights[i]).backward()
        return loss.data

    (first_loss, first), (second_loss, second) = threads.run_pair(
        lambda: _with_sink(half, 0), lambda: _with_sink(half, 1))
    _add_grads(first, second)
    total = weights[0] * first_loss.reshape(()) + weights[1] * second_loss.reshape(())
    return Tensor(xp.asarray(total, dtype=first_loss.dtype))


def _with_sink(work, i):
    """(work(i), the leaf gradients its backward passes made): they go into this thread's
    sink (engine.py), not .grad, so that two threads never add into the same .grad at once."""
    engine.sink.grads = {}
    try:
        return work(i), engine.sink.grads
    finally:
        engine.sink.grads = None


def _add_grads(first, second):
    """Each tensor's two gradients summed, first half first, into its ``.grad``: the end of
    one backward pass, whose post-accumulate-grad hooks and queued callbacks run here."""
    handed_out = set()
    with engine.backward_pass():
        for key, (tensor, g) in first.items():
            other = second.pop(key, None)
            engine._accumulate_leaf(tensor, g if other is None else g + other[1], handed_out)
        for tensor, g in second.values():  # reached by the second half only
            engine._accumulate_leaf(tensor, g, handed_out)


def _check(model, batch, reduction):
    from layerwise.nn.batchnorm import _BatchNorm
    from layerwise.nn.dropout import Dropout
    from layerwise.nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"backward_in_halves needs the model (an nn.Module) to check it, got "
                        f"{type(model).__name__}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"backward_in_halves reduction must be 'mean' or 'sum', got "
                         f"{reduction!r}")
    if not batch:
        raise ValueError("backward_in_halves needs the batch: at least one Tensor or array")
    sizes = [item.shape[0] if getattr(item, "ndim", 0) else None for item in batch]
    if sizes[0] is None or sizes[0] < 2 or any(size != sizes[0] for size in sizes):
        shapes = [tuple(getattr(item, "shape", ())) for item in batch]
        raise ValueError(f"backward_in_halves splits the batch along its first dim, which must "
                         f"be the same and at least 2 in every part; got shapes {shapes}")
    if recording.active is not None:
        raise RuntimeError("backward_in_halves cannot run inside lw.compile's recording")
    for name, module in model.named_modules():
        if not module.training:
            continue
        label = f"{name or 'the model'} ({type(module).__name__})"
        if isinstance(module, _BatchNorm):
            raise ValueError(f"backward_in_halves would give {label} the statistics of half the "
                             "batch; use it with the batch norm in eval mode, or without")
        rate = module.p if isinstance(module, Dropout) else getattr(module, "dropout", 0)
        if isinstance(rate, (int, float)) and rate > 0:
            raise ValueError(f"backward_in_halves with dropout in training mode ({label}, rate "
                             f"{rate}): its draws would depend on which half ran first; set "
                             "the rate to 0")
