"""Fast path of the cross-entropy: float32 logits against class indices, with no class weights
or label smoothing (a language model's or a classifier's loss), as one compiled pass over the
rows each way (fast/vecmath.py)."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.loss import CrossEntropy


@fast_path
class CrossEntropyRows(FastPath, CrossEntropy):
    """The forward keeps the probabilities and the targets; the backward writes
    (probs - one_hot(target)) * scale, zero rows where a target is ignored."""

    kernels = ("cross_entropy_rows", "cross_entropy_backward_rows")
    why = "the GPT workload's (2048, 96) logits: 1.0 -> 0.31 ms forward and backward"

    @classmethod
    def supports(cls, logits, target, weight, ignore_index, label_smoothing, reduction, *,
                 graph):
        return (target.ndim == 1 and weight is None and not label_smoothing
                and logits.dtype == xp.float32 and logits.flags.c_contiguous)

    def forward(self, logits, target, weight, ignore_index, label_smoothing, reduction):
        n, _ = logits.shape
        probs, per_row = xp.empty_like(logits), xp.empty(n, dtype=logits.dtype)  # (N, C), (N,)
        target = xp.ascontiguousarray(target, dtype=xp.int64)
        self.kernel("cross_entropy_rows")(logits, target, ignore_index, probs, per_row)
        self.reduction, self.denom = reduction, int((target != ignore_index).sum())
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
            scale = g / max(self.denom, 1) if self.reduction == "mean" else g
            scales = xp.full(len(self.target), scale, dtype=self.probs.dtype)
        grad = xp.empty_like(self.probs)
        self.kernel("cross_entropy_backward_rows")(self.probs, self.target, self.ignore_index,
                                                   scales, grad)
        return grad
