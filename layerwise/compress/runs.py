"""Reading a trained run back (model and data), and measuring a model before and after.

``load_run(run_dir)`` rebuilds the recipe's model from config.json, loads model.safetensors
into it and loads the run's data splits, as ``layerwise train`` made them.
"""

import time

from layerwise.autograd import no_grad
from layerwise.backend import xp
from layerwise.data import DataLoader
from layerwise.train.finished import load_finished_run
from layerwise.train.recipes import TaskData


def load_run(run_dir):
    """(model in eval mode, config dict, TaskData) of a finished run."""
    run = load_finished_run(run_dir)
    return run.model, run.config, TaskData(run.splits, run.tokenizer, run.info)


def predict(model, dataset, batch_size=500):
    """(top-1 class of every example, labels), in dataset order."""
    preds, labels = [], []
    with no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            preds.append(model(x).data.argmax(axis=-1))
            labels.append(y.data)
    return xp.concatenate(preds), xp.concatenate(labels)


def latency_ms(model, example, repeats=20):
    """Median milliseconds of one forward on ``example`` (after one warm-up call)."""
    times = []
    with no_grad():
        model(example)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2] * 1e3)


def count_params(model):
    """Stored numbers: parameters, plus int8 weights kept as buffers, plus CSR non-zeros."""
    from layerwise.compress.sparse import SparseLinear
    total = sum(int(v.data.size) for k, v in model.state_dict().items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    for _, m in model.named_modules():
        if isinstance(m, SparseLinear):
            total += int(m.weight_csr.nnz) + (m.out_features if m.bias is not None else 0)
    return total


def count_nonzero(model):
    """Non-zero stored numbers (what pruning removes), counted like count_params."""
    from layerwise.compress.sparse import SparseLinear
    total = sum(int((v.data != 0).sum()) for k, v in model.state_dict().items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    for _, m in model.named_modules():
        if isinstance(m, SparseLinear):
            bias = 0 if m.bias is None else int((m.bias.data != 0).sum())
            total += int(m.weight_csr.nnz) + bias
    return total
