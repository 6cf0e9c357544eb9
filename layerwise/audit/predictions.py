"""What a model card measures, as arrays: the examples of a split and the model's outputs on
them, read as class logits or as predicted values (with a predictive interval, if given).

    x, y = examples(test, "test")            # a dataset, a pair (x, y), Tensors or arrays
    out, kind = model_outputs(model, x)      # (N, ...) float64; "logits" | "probabilities"
    task = resolve_task(None, out, kind, y)  # "classification" or "regression"

Every mistake a caller can make here (a model that returns the wrong shape, labels that are
not classes, regression data given to a classifier) is one ValueError or TypeError line.
"""

import numpy as np

from layerwise.autograd import Tensor, no_grad
from layerwise.data.loader import inference_batch_size
from layerwise.nn import Module

TASKS = ("classification", "regression")
_PROB_FLOOR = 1e-300  # the log of a probability of 0: a finite, very large NLL
_PROBA_SUM_TOLERANCE = 1e-3  # rows of float32 probabilities sum to 1 within ~1e-6
_SHOWN = 5  # values quoted in a message


def host(value):
    """A Tensor, a PyTorch tensor, a list or an array as a NumPy array."""
    if isinstance(value, Tensor):
        return np.asarray(value.data)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def split_arrays(dataset):
    """(inputs, labels) NumPy arrays of a TensorDataset, a Subset of one, or any dataset whose
    items are (x, y) pairs (read one by one)."""
    idx, base = None, dataset
    while hasattr(base, "indices") and hasattr(base, "dataset"):
        idx = base.indices if idx is None else base.indices[idx]
        base = base.dataset
    if hasattr(base, "tensors"):
        x, y = (t.data for t in base.tensors[:2])
        return (x, y) if idx is None else (x[idx], y[idx])
    pairs = [dataset[i] for i in range(len(dataset))]
    return (np.stack([host(p[0]) for p in pairs]), np.asarray([host(p[1]) for p in pairs]))


def examples(data, role):
    """(x (N, ...), y (N,)) of a split given as a dataset or as a pair (x, y)."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise TypeError(f"{role} as a sequence must be a pair (x, y) of inputs and labels, "
                            f"got {len(data)} items")
        x, y = host(data[0]), host(data[1])
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(
            data, (str, bytes, dict, np.ndarray)):
        x, y = split_arrays(data)
        x, y = np.asarray(x), np.asarray(y)
    else:
        raise TypeError(f"{role} must be a dataset of (x, y) pairs (a TensorDataset, a split of "
                        f"table_splits), a TableSplits, or a pair (x, y) of arrays; got "
                        f"{type(data).__name__}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if x.ndim == 0 or y.ndim != 1:
        raise ValueError(f"{role}: x must be (N, ...) inputs and y (N,) labels or targets, got "
                         f"shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{role}: x has {len(x)} examples but y has {len(y)}; give one label "
                         f"or target per example")
    if len(y) == 0:
        raise ValueError(f"{role} is empty; the card needs at least one example")
    return x, y


def model_outputs(model, x, task=None, batch_size=None):
    """(outputs (N, ...) float64, kind): kind "probabilities" for ``predict_proba``, else
    "values" (logits or predicted values, as ``task`` will read them).

    A layerwise Module runs in eval mode without a graph and is left in the mode it had.
    ``batch_size`` examples go through each call (by default ``inference_batch_size``'s).
    """
    batch_size = batch_size or inference_batch_size(x.shape[1:])
    if task != "regression" and hasattr(model, "predict_proba"):
        return _batched(model.predict_proba, x, batch_size), "probabilities"
    if isinstance(model, Module):
        was_training = model.training
        model.eval()
        try:
            with no_grad():
                return _batched(lambda b: model(Tensor(np.ascontiguousarray(b))), x,
                                batch_size), "values"
        finally:
            model.train(was_training)
    if callable(model):
        return _batched(model, x, batch_size), "values"
    if hasattr(model, "predict"):
        return _batched(model.predict, x, batch_size), "values"
    raise TypeError(f"model must be a layerwise Module, a function of a batch of inputs, or an "
                    f"object with predict_proba or predict; got {type(model).__name__}")


def _batched(forward, x, batch_size):
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        got = forward(batch)
        try:
            got = host(got).astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"the model returned {type(got).__name__} for a batch of inputs of "
                             f"shape {batch.shape}; expected an array of numbers") from None
        if got.ndim == 0 or got.ndim > 2 or len(got) != len(batch):
            raise ValueError(f"the model returned shape {got.shape} for a batch of "
                             f"{len(batch)} inputs of shape {batch.shape}; expected one row per "
                             f"input: (N, K) class logits or (N,) predicted values")
        out.append(got)
    out = np.concatenate(out)
    bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))
    if len(bad):
        raise ValueError(f"the model's output for example {bad[0]} is "
                         f"{out[bad[0]].tolist()}; the card needs finite outputs")
    return out


def _columns(out):
    return 1 if out.ndim == 1 else out.shape[1]


def _integer_valued(y):
    return y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.isfinite(y))
                                     and np.all(y == np.round(y)))


def resolve_task(task, out, kind, y):
    """The task the card measures: ``task`` if given, else read off the labels and outputs.

    Integer labels and K >= 2 outputs (or probabilities) are a classifier; labels of a float
    type are a regression's targets. One output per example with labels 0 and 1 could be
    either (a binary classifier's logit, or a regression), so it needs ``task``.
    """
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None (read off the data), got "
                             f"{task!r}")
        return task
    if y.dtype.kind not in "iubf":
        raise ValueError(f"labels must be numbers (class indices 0..K-1 or regression targets)"
                         f", got {y.dtype} values such as {y[:3].tolist()}")
    if kind == "probabilities" or (y.dtype.kind in "iub" and _columns(out) >= 2):
        return "classification"
    if y.dtype.kind == "f":
        return "regression"
    if set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("the model gives one output per example and the labels are 0 and 1: "
                         "pass task='classification' (the output is the logit of class 1) or "
                         "task='regression'")
    return "regression"


def classifier_logits(out, kind, y, role="test", num_classes=None):
    """(logits (N, K) float64, labels (N,) int64) of a classifier's outputs and labels.

    One output per example is the logit of class 1 of a binary classifier; probabilities
    (``predict_proba``) become their logs, so that softmax gives them back.
    """
    if y.dtype.kind not in "iubf" or not _integer_valued(y):
        shown = y[~(y == np.round(y))][:_SHOWN] if y.dtype.kind == "f" else y[:_SHOWN]
        raise ValueError(f"a classification card needs integer class labels 0..K-1, but the "
                         f"{role} labels hold {shown.tolist()}: for regression data pass "
                         f"task='regression'")
    if kind == "probabilities":
        if out.ndim != 2 or out.shape[1] < 2:
            raise ValueError(f"predict_proba returned shape {out.shape}; expected (N, K) class "
                             f"probabilities with K >= 2")
        sums = out.sum(axis=1)
        off = np.flatnonzero((np.abs(sums - 1) > _PROBA_SUM_TOLERANCE) | (out.min(axis=1) < 0))
        if len(off):
            raise ValueError(f"predict_proba row {off[0]} is {out[off[0]].tolist()}; each row "
                             f"must be probabilities that sum to 1")
        logits = np.log(np.maximum(out, _PROB_FLOOR))
    elif _columns(out) == 1:
        z = out.reshape(-1)
        logits = np.stack([np.zeros_like(z), z], axis=1)  # softmax([0, z]) = [1 - s(z), s(z)]
    else:
        logits = out
    k = logits.shape[1]
    if num_classes is not None and k != num_classes:
        raise ValueError(f"the model gives {k} class scores on the {role} split but "
                         f"{num_classes} on the test split; a classifier returns the same K")
    labels = y.astype(np.int64)
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"the model gives {k} class scores per example, but the {role} labels "
                         f"run from {labels.min()} to {labels.max()}; a classifier over K classes "
                         f"returns (N, K) logits for labels 0..K-1")
    return logits, labels


def regression_values(out, y, role="test"):
    """(predictions (N,), intervals (low, high) or None, targets (N,) float64).

    Outputs are (N,) or (N, 1) predictions, or (N, 3) columns (low, prediction, high).
    """
    if y.dtype.kind not in "iubf":
        raise ValueError(f"a regression card needs numeric targets, but the {role} targets "
                         f"hold {y[:_SHOWN].tolist()}: for class labels pass "
                         f"task='classification'")
    targets = y.astype(np.float64)
    if not np.isfinite(targets).all():
        i = int(np.flatnonzero(~np.isfinite(targets))[0])
        raise ValueError(f"{role} target {i} is {targets[i]}; the card needs finite targets")
    if _columns(out) == 1:
        return out.reshape(-1), None, targets
    if out.shape[1] != 3:
        raise ValueError(f"a regression model must return (N,) or (N, 1) predictions, or (N, 3) "
                         f"columns (low, prediction, high) of a predictive interval; got shape "
                         f"{out.shape} (for class logits pass task='classification')")
    low, pred, high = out[:, 0], out[:, 1], out[:, 2]
    bad = np.flatnonzero((low > pred) | (pred > high))
    if len(bad):
        raise ValueError(f"the model's (N, 3) output must be ordered low <= prediction <= high, "
                         f"but row {bad[0]} is {out[bad[0]].tolist()} (for class logits pass "
                         f"task='classification')")
    return pred, (low, high), targets
