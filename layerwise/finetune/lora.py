"""LoRA: low-rank adapters for Linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

A frozen weight W (out, in) is adapted by a trainable low-rank product:

    y = x W^T + b + (alpha / r) * x A^T B^T,    A (r, in), B (out, r)

A starts Kaiming-uniform and B at zero (section 4.1), so the adapted model starts exactly as
the pre-trained one. Only A and B train: r (in + out) numbers per layer instead of in * out.
``merge`` folds the update into W (W += alpha/r * B A) so inference costs nothing extra;
``unmerge`` takes it out again to keep training.

LoRALinear keeps the original ``weight`` and ``bias`` Parameters under their own names, so
the state dict keeps every key of the plain model ("fc.weight") and adds "fc.lora_A" and
"fc.lora_B" (the loralib layout).

    model = apply_lora(model, ["*.c_attn", "*.c_proj"], r=4, alpha=8)
    opt = AdamW(trainable_parameters(model), lr=1e-3)
"""

import copy
import math
from fnmatch import fnmatchcase

from layerwise.backend import xp
from layerwise.nn import functional as F
from layerwise.nn import init
from layerwise.nn.dropout import Dropout
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter


class LoRALinear(Module):
    """A Linear whose frozen weight is adapted by ``alpha / r * B @ A``."""

    def __init__(self, linear, r=8, alpha=16, dropout=0.0):
        super().__init__()
        if not isinstance(linear, Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(linear).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
        if alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0 (often 2 r), got {alpha!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameters, now frozen
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        dtype = self.weight.dtype
        self.lora_A = Parameter(xp.empty((r, self.in_features), dtype=dtype))
        self.lora_B = Parameter(xp.zeros((self.out_features, r), dtype=dtype))
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and the LoRA code
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_dropout = Dropout(dropout)
        self.merged = False

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)  # (..., out)
        return y + update * self.scaling

    def delta_weight(self):
        """The (out, in) update alpha/r * B A that merging adds to the weight."""
        return (self.lora_B.data @ self.lora_A.data) * self.scaling

    def merge(self):
        if not self.merged:
            self.weight.data += self.delta_weight().astype(self.weight.dtype)
            self.merged = True

    def unmerge(self):
        if self.merged:
            self.weight.data -= self.delta_weight().astype(self.weight.dtype)
            self.merged = False

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, merged={self.merged}")


def _set_child(model, path, module):
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    container = getattr(parent, "_modules", None)
    if container is not None and leaf in container:
        container[leaf] = module
    else:
        setattr(parent, leaf, module)


def apply_lora(model, target_modules, r=8, alpha=16, dropout=0.0, trainable=(), inplace=True):
    """Replace each Linear whose dotted module name matches a glob in ``target_modules`` by a
    LoRALinear, freeze every other parameter (except those matching ``trainable``, e.g. a new
    head "fc.*"), and return the model. ``inplace=False`` converts a deep copy instead."""
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    if not inplace:
        model = copy.deepcopy(model)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear)]
    chosen = [(n, m) for n, m in linears if any(fnmatchcase(n, pat) for pat in target_modules)]
    if not chosen:
        raise ValueError(f"target_modules {list(target_modules)} match no Linear of "
                         f"{type(model).__name__}; its Linear layers are "
                         f"{[n for n, _ in linears][:12]}")
    for p in model.parameters():
        p.requires_grad = False
    for name, linear in chosen:
        _set_child(model, name, LoRALinear(linear, r=r, alpha=alpha, dropout=dropout))
    if trainable:
        from layerwise.finetune.freeze import unfreeze

        unfreeze(model, trainable)
    return model


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """Fold every adapter into its weight (outputs unchanged, no extra cost at inference)."""
    for m in lora_layers(model):
        m.merge()
    return model


def unmerge_lora(model):
    """Take every merged adapter back out of its weight."""
    for m in lora_layers(model):
        m.unmerge()
    return model


def lora_state_dict(model):
    """Only the adapter weights: the small file a LoRA fine-tune needs to ship."""
    return {k: v for k, v in model.state_dict().items()
            if k.endswith((".lora_A", ".lora_B"))}
