"""Cross-entropy as one fused op: log-softmax and the negative log-likelihood together; the
negative log-likelihood alone, for log-probabilities a model computed itself; and the sigmoid
focal loss of dense detectors, composed from other ops.

Fused because the gradient of the pair is simply ``softmax - target`` (scaled), computed
from the saved probabilities in one pass; composing log_softmax, gather and mean would
save and walk three arrays and build three graph nodes per step. The common case (float32
logits, class indices, no class weights or label smoothing) has compiled row loops in
fast/loss.py.
"""

from layerwise.backend import xp
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.ops import elementwise as ew
from layerwise.ops.activation import sigmoid, softplus


class CrossEntropy(Function):
    """Rows of ``logits`` (N, C) against targets: class indices (N,) or probabilities (N, C).

    Each row's loss is sum_c a[i, c] * (-log p[i, c]) with coefficients
        a[i, c] = w[c] * ((1 - eps) * t[i, c] + eps / C)
    (t one-hot or given probabilities, w class weights, eps label smoothing), zero for
    ignored rows. d loss_i / d logits_i = p_i * sum_c a[i, c] - a_i.
    """

    def forward(self, logits, target, weight, ignore_index, label_smoothing, reduction):
        n, c = logits.shape
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_p = shifted - xp.log(sum_exp)
        w = xp.ones(c, dtype=logits.dtype) if weight is None else weight.astype(logits.dtype)

        if target.ndim == 1:  # class indices
            keep = target != ignore_index
            safe = xp.where(keep, target, 0)
            coef = xp.zeros_like(logits)
            coef[xp.arange(n), safe] = (1 - label_smoothing) * w[safe]
            if label_smoothing:
                coef += (label_smoothing / c) * w
            coef *= keep[:, None]
            denom = (w[safe] * keep).sum()  # PyTorch's 'mean': divide by the summed target weights
        else:  # class probabilities
            coef = w * ((1 - label_smoothing) * target + label_smoothing / c)
            denom = n

        with xp.errstate(invalid="ignore"):  # 0 * -inf: a class masked out of a row's logits
            terms = coef * log_p
        per_row = -xp.where(coef == 0, 0, terms).sum(axis=1)  # (N,); such a class adds nothing
        self.reduction, self.denom = reduction, denom
        if self.needs_input_grad and self.needs_input_grad[0]:
            self.probs, self.coef = exp / sum_exp, coef
        if reduction == "none":
            return per_row
        if reduction == "sum":
            return per_row.sum()
        return per_row.sum() / denom

    def backward(self, g):
        grad = self.probs * self.coef.sum(axis=1, keepdims=True) - self.coef
        if self.reduction == "none":
            return grad * g[:, None]
        if self.reduction == "mean":
            if not self.denom:  # every target ignored: no gradient, rather than 0 * (g / 0)
                return xp.zeros_like(grad)
            return grad * (g / self.denom)
        return grad * g


class NLLLoss(Function):
    """-log_probs[i, target[i]] * row_weight[i] over rows (N, C), as one node: the picked values'
    gradient is -row_weight (scaled by the reduction), everything else 0. ``row_weight`` (N,)
    holds each row's class weight, 0 for ignored rows; 'mean' divides by its sum."""

    def forward(self, log_probs, target, row_weight, reduction):
        n = log_probs.shape[0]
        self.shape, self.target, self.row_weight = log_probs.shape, target, row_weight
        self.reduction, self.denom = reduction, row_weight.sum()
        per_row = -log_probs[xp.arange(n), target] * row_weight  # (N,)
        if reduction == "none":
            return per_row
        total = per_row.sum()
        if reduction == "sum":
            return total
        with xp.errstate(invalid="ignore"):  # every row ignored: NaN, as PyTorch gives
            return total / self.denom

    def backward(self, g):
        grad = xp.zeros(self.shape, dtype=self.row_weight.dtype)
        if self.reduction == "mean" and not self.denom:  # every row ignored: no gradient
            return grad
        scale = g if self.reduction != "mean" else g / self.denom
        grad[xp.arange(self.shape[0]), self.target] = -self.row_weight * scale
        return grad


# --- composed losses ----------------------------------------------------------------------


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection", eq. 5), with
    torchvision.ops' signature and defaults:

        loss = alpha_t * (1 - p_t) ** gamma * BCE(x, y),   p = sigmoid(x)
        p_t = p y + (1 - p)(1 - y),   alpha_t = alpha y + (1 - alpha)(1 - y)

    so well-classified elements (p_t near 1) count little; alpha < 0 leaves out alpha_t.
    inputs: logits of any shape; targets: the same shape, 0/1 labels or soft ones in [0, 1].
    reduction 'none' (the default, per element), 'mean' or 'sum'. Composed from ops (no
    backward of its own); the cross-entropy is binary_cross_entropy_with_logits' stable form.
    """
    check_tensor(inputs, "sigmoid_focal_loss", "inputs")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"sigmoid_focal_loss reduction must be 'none', 'mean' or 'sum', got "
                         f"{reduction!r}")
    if not isinstance(targets, Tensor):
        targets = Tensor(xp.asarray(targets, dtype=inputs.dtype))
    elif targets.dtype != inputs.dtype:
        targets = ew.cast(targets, inputs.dtype)
    if tuple(targets.shape) != tuple(inputs.shape):
        raise ValueError(f"sigmoid_focal_loss inputs and targets must have the same shape, got "
                         f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}")
    p = sigmoid(inputs)
    ce = (1 - targets) * inputs + softplus(-inputs)  # -y log p - (1 - y) log(1 - p), no exp(x)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
