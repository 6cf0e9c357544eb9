"""Fast path of the cross-entropy: float32 logits against class indices, with or without class
weights and with no label smoothing (a language model's, a classifier's or a segmenter's loss),
as one compiled pass over the rows each way (fast/vecmath.py)."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.loss import CrossEntropy


@fast_path
class CrossEntropyRows(FastPath, CrossEntropy):
    """The forward keeps the probabilities and the targets; the backward writes
    (probs - one_hot(target)) * scale, zero rows where a target is ignored. Class weights
    scale each row's loss and gradient by its target's weight, and 'mean' divides by the
    summed weights, as PyTorch does."""

    kernels = ("cross_entropy_rows", "cross_entropy_backward_rows")
    why = ("the GPT workload's (2048, 96) logits: 1.0 -> 0.31 ms forward and backward; the "
           "U-Net's (73728, 11) with class weights: 25.7 -> 6.8 ms")

    @classmethod
    def supports(cls, logits, target, weight, ignore_index, label_smoothing, reduction, *,
                 graph):
        return (target.ndim == 1 and not label_smoothing
                and logits.dtype == xp.float32 and logits.flags.c_contiguous)

    def forward(self, logits, target, weight, ignore_index, label_smoothing, reduction):
        n, _ = logits.shape
        probs, per_row = xp.empty_like(logits), xp.empty(n, dtype=logits.dtype)  # (N, C), (N,)
        target = xp.ascontiguousarray(target, dtype=xp.int64)
        self.kernel("cross_entropy_rows")(logits, target, ignore_index, probs, per_row)
        kept = target != ignore_index
        if weight is None:
            self.row_weight, self.denom = None, int(kept.sum())
        else:  # (N,): each row's target weight, 0 where ignored
            weight = weight.astype(logits.dtype)
            self.row_weight = xp.where(kept, weight[xp.where(kept, target, 0)], 0)
            per_row *= self.row_weight
            self.denom = self.row_weight.sum()
        self.reduction = reduction
        self.probs, self.target, self.ignore_index = probs, target, ignore_index
        if reduction == "none":
            return per_row
        if reduction == "sum":
            return per_row.sum()
        return per_row.sum() / self.denom  # NaN when every target is ignored, as in PyTorch

    def backward(self, g):
        if self.reduction == "none":
            scales = xp.ascontiguousarray(g, dtype=self.probs.dtype)  # (N,)
        else:
            # every target ignored (denom 0): the kernel writes zero rows whatever the scale
            scale = g / (self.denom or 1) if self.reduction == "mean" else g
            scales = xp.full(len(self.target), scale, dtype=self.probs.dtype)
        if self.row_weight is not None:
            scales = scales * self.row_weight
        grad = xp.empty_like(self.probs)
        self.kernel("cross_entropy_backward_rows")(self.probs, self.target, self.ignore_index,
                                                   scales, grad)
        return grad
