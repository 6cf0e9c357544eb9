"""Cross-entropy as one fused op: log-softmax and the negative log-likelihood together; and
the negative log-likelihood alone, for log-probabilities a model computed itself.

Fused because the gradient of the pair is simply ``softmax - target`` (scaled), computed
from the saved probabilities in one pass; composing log_softmax, gather and mean would
save and walk three arrays and build three graph nodes per step. The common case (float32
logits, class indices, no class weights or label smoothing) has compiled row loops in
fast/loss.py.
"""

from layerwise.backend import xp
from layerwise.autograd.function import Function


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
