"""Stateless forms of the layers and losses: ``import layerwise.nn.functional as F``.

Activations and ``linear`` come from ``layerwise.ops``; the losses are composed
from ops, except cross-entropy, which wraps the fused ``ops.loss.CrossEntropy`` after checking
its arguments (the common mistakes there deserve clear messages).
"""

from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.ops import elementwise as ew
from layerwise.ops import linear as _linear
from layerwise.ops.activation import gelu, leaky_relu, relu, sigmoid, silu, softplus, tanh
from layerwise.ops.loss import CrossEntropy, NLLLoss, sigmoid_focal_loss
from layerwise.ops.movement import pad
from layerwise.ops.random import dropout, one_hot
from layerwise.ops.reduce import log_softmax as _log_softmax
from layerwise.ops.reduce import softmax as _softmax
from layerwise.ops.conv import conv1d, conv2d, conv_transpose2d
from layerwise.ops.pool import adaptive_avg_pool2d, avg_pool2d, interpolate, max_pool2d, upsample
from layerwise.nn.batchnorm import batch_norm
from layerwise.ops.attention import scaled_dot_product_attention
from layerwise.ops.norm import layer_norm, rms_norm
from layerwise.ops.embedding import embedding

_REDUCTIONS = ("mean", "sum", "none")


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with weight laid out (out_features, in_features)."""
    return _linear.linear(check_tensor(input, "linear"), weight, bias)


def softmax(input, dim, dtype=None):
    return _softmax(input if dtype is None else ew.cast(input, dtype), dim)


def log_softmax(input, dim, dtype=None):
    return _log_softmax(input if dtype is None else ew.cast(input, dtype), dim)


# --- helpers for the losses ---------------------------------------------------------------


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name} reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _array(value):
    return value.data if isinstance(value, Tensor) else xp.asarray(value)


def _as_tensor(value, like):
    """Targets may be arrays or numbers; they take the input's dtype."""
    if isinstance(value, Tensor):
        return value
    return Tensor(xp.asarray(value, dtype=like.dtype))


def _same_shape(name, input, target):
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(
            f"{name} input and target must have the same shape, got input "
            f"{tuple(input.shape)} and target {tuple(target.shape)}; broadcasting "
            "here is usually a bug (e.g. (N, 1) against (N,): squeeze or reshape one)"
        )


def _class_rows(name, input, target, ignore_index, allow_probs):
    """Put the class dim last and flatten: (N, C, d1, ...) -> (M, C) rows.

    Returns the rows (a Tensor), the targets as an array, (M,) class indices or (M, C)
    probabilities, and the shape a reduction='none' result should take.
    """
    t = _array(target)
    if input.ndim == 0:
        raise ValueError(f"{name} needs input of shape (N, C) or (N, C, d1, ...), got a scalar")
    c = input.shape[1] if input.ndim > 1 else input.shape[0]
    if t.dtype.kind in "iu":
        expected = tuple(input.shape[:1] + input.shape[2:]) if input.ndim > 1 else ()
        if tuple(t.shape) != expected:
            raise ValueError(
                f"{name} expected class-index target of shape {expected} for input of shape "
                f"{tuple(input.shape)}, got target of shape {tuple(t.shape)}"
            )
        flat = t.reshape(-1)
        bad = (flat != ignore_index) & ((flat < 0) | (flat >= c))
        if bad.any():
            raise ValueError(
                f"{name} target {int(flat[bad][0])} is out of range for {c} classes: labels "
                f"must be in [0, {c - 1}] (or equal ignore_index={ignore_index})"
            )
    elif t.dtype.kind == "f":
        if not allow_probs:
            raise TypeError(
                f"{name} needs integer class-index targets, got dtype {t.dtype}; "
                "convert with target.long()"
            )
        if tuple(t.shape) != tuple(input.shape):
            raise ValueError(
                f"{name} got a float target of shape {tuple(t.shape)} for input of shape "
                f"{tuple(input.shape)}: class indices must be integers (target.long()), "
                f"class probabilities must have the input's shape"
            )
        flat = t.astype(input.dtype, copy=False)
        if input.ndim > 2:
            flat = xp.moveaxis(flat, 1, -1)
        flat = flat.reshape(-1, c)
    else:
        raise TypeError(
            f"{name} target must hold integer class indices or float probabilities, "
            f"got dtype {t.dtype}"
        )
    if input.ndim == 1:  # one unbatched sample
        return input.reshape(1, c), flat, ()  # flat is already (1,) or (1, C)
    rows = input
    if input.ndim > 2:
        rows = input.permute(0, *range(2, input.ndim), 1)  # (N, C, d1, ...) -> (N, d1, ..., C)
    return rows.reshape(-1, c), flat, tuple(input.shape[:1] + input.shape[2:])


def _class_weight(name, weight, c, dtype):
    if weight is None:
        return None
    w = _array(weight)
    if tuple(w.shape) != (c,):
        raise ValueError(
            f"{name} weight must have one entry per class, shape ({c},), got {tuple(w.shape)}"
        )
    return w.astype(dtype, copy=False)


# --- classification losses ----------------------------------------------------------------


def cross_entropy(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """Softmax cross-entropy of logits against class indices or class probabilities.

    input (N, C) or (N, C, d1, ...); target (N,) / (N, d1, ...) integer labels, or a float
    tensor of the input's shape holding probabilities. 'mean' over class indices divides by
    the summed weights of the targets that are not ignored, as PyTorch does.
    """
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy label_smoothing must be in [0, 1], got {label_smoothing}")
    rows, t, out_shape = _class_rows("cross_entropy", input, target, ignore_index, allow_probs=True)
    w = _class_weight("cross_entropy", weight, rows.shape[1], input.dtype)
    loss = CrossEntropy.apply(
        rows,
        target=t,
        weight=w,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    return loss.reshape(out_shape) if reduction == "none" else loss


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-input[i, target[i]] * weight[target[i]] for log-probabilities ``input`` (N, C, ...)."""
    _check_reduction("nll_loss", reduction)
    rows, t, out_shape = _class_rows("nll_loss", input, target, ignore_index, allow_probs=False)
    c = rows.shape[1]
    keep = t != ignore_index
    safe = xp.where(keep, t, 0)
    w = _class_weight("nll_loss", weight, c, input.dtype)
    row_weight = (xp.ones(len(t), dtype=input.dtype) if w is None else w[safe]) * keep  # (M,)
    loss = NLLLoss.apply(rows, target=safe, row_weight=row_weight.astype(input.dtype),
                         reduction=reduction)
    return loss.reshape(out_shape) if reduction == "none" else loss


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction="mean"):
    """Sigmoid and binary cross-entropy in the stable form (no exp of large logits):

        loss = (1 - y) x + l * softplus(-x),  l = 1 + (pos_weight - 1) y

    which is max(x, 0) - x y + log1p(exp(-|x|)) when pos_weight is None (PyTorch's formula).
    pos_weight broadcasts over the last (class) dim; weight rescales each element.
    """
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    target = _as_tensor(target, input)
    _same_shape("binary_cross_entropy_with_logits", input, target)
    # softplus has an exact sigmoid backward, so logits of exactly 0 get the right gradient.
    log_sig = softplus(-input)  # -log(sigmoid(x))
    if pos_weight is not None:
        log_sig = log_sig * (1 + (_as_tensor(pos_weight, input) - 1) * target)
    loss = (1 - target) * input + log_sig
    if weight is not None:
        loss = loss * _as_tensor(weight, input)
    return _reduce(loss, reduction)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-(y log p + (1 - y) log(1 - p)) for probabilities p; each log is clamped at -100 as in
    PyTorch, so p of exactly 0 or 1 gives a finite loss."""
    _check_reduction("binary_cross_entropy", reduction)
    target = _as_tensor(target, input)
    _same_shape("binary_cross_entropy", input, target)
    p = input.data
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"binary_cross_entropy needs probabilities in [0, 1], got values from "
            f"{float(p.min())} to {float(p.max())}; for logits use binary_cross_entropy_with_logits"
        )
    tiny = float(xp.finfo(input.dtype).tiny)  # keeps log's backward finite at p = 0

    def safe_log(x):
        return ew.clamp(ew.log(ew.clamp(x, min=tiny)), min=-100.0)

    loss = -(target * safe_log(input) + (1 - target) * safe_log(1 - input))
    if weight is not None:
        loss = loss * _as_tensor(weight, input)
    return _reduce(loss, reduction)


# --- regression losses --------------------------------------------------------------------


def mse_loss(input, target, reduction="mean"):
    _check_reduction("mse_loss", reduction)
    target = _as_tensor(target, input)
    _same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    _check_reduction("l1_loss", reduction)
    target = _as_tensor(target, input)
    _same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)


__all__ = [
    "linear",
    "relu",
    "leaky_relu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "softplus",
    "softmax",
    "log_softmax",
    "dropout",
    "one_hot",
    "pad",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "mse_loss",
    "l1_loss",
    "sigmoid_focal_loss",
    "conv1d",
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "interpolate",
    "upsample",
    "batch_norm",
    "scaled_dot_product_attention",
    "layer_norm",
    "rms_norm",
    "embedding",
]
