"""Unstructured magnitude pruning: weights set to zero, and kept at zero while fine-tuning.

    pruned = magnitude_prune(model, 0.8)               # a Pruned copy; model is untouched
    Trainer(pruned, optim.AdamW(pruned.parameters()), callbacks=[KeepPruned(pruned)]).fit()
    small = pruned.remove()                            # the plain model, zeros permanent

The masks live in the Pruned wrapper, not on the layers: ``Pruned.forward`` multiplies them
into the weights before every forward, so the model trains with the mask applied whatever the
optimizer does between steps (Adam's momentum would otherwise revive pruned weights), and
KeepPruned re-applies them after each step so checkpoints saved mid-training are sparse too.
Magnitude pruning after Han et al. 2015 ("Learning both weights and connections");
the gradual schedule is Zhu & Gupta 2017 ("To prune, or not to prune"), eq. 1.
"""

import copy

from layerwise import nn
from layerwise.backend import xp
from layerwise.compress._tree import find
from layerwise.nn.module import Module
from layerwise.train.callbacks import Callback

PRUNABLE = (nn.Linear, nn.Conv2d, nn.Conv1d)


class Pruned(Module):
    """A model with a 0/1 mask on some weights; forward applies the masks first."""

    def __init__(self, model, masks):
        super().__init__()
        self.model = model
        self._masks = _MaskTable(masks)  # a plain holder: the attribute walk does not enter it
        self.apply_masks()

    @property
    def masks(self):
        return self._masks.masks

    def forward(self, *args, **kwargs):
        self.apply_masks()
        return self.model(*args, **kwargs)

    def apply_masks(self):
        for name, mask in self.masks.items():
            self.model.get_submodule(name).weight.data *= mask

    def sparsity(self):
        """Fraction of zeros over the masked weights."""
        total = sum(m.size for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1 - kept / total if total else 0.0

    def remove(self):
        """The wrapped model with the masks applied for good; the masks are dropped."""
        self.apply_masks()
        return self.model


class _MaskTable:
    def __init__(self, masks):
        self.masks = dict(masks)


class KeepPruned(Callback):
    """Re-apply a Pruned model's masks after every optimizer step."""

    def __init__(self, pruned):
        self.pruned = pruned

    def on_batch_end(self, trainer, logs):
        self.pruned.apply_masks()


def _check_amount(amount):
    if not 0 <= amount < 1:
        raise ValueError(f"pruning amount is the fraction of weights to zero, in [0, 1); "
                         f"got {amount!r}")


def _smallest_mask(scores, k):
    """A 0/1 mask (scores' shape) zeroing exactly the k smallest scores (ties by position)."""
    flat = scores.reshape(-1)
    mask = xp.ones(flat.size, dtype=bool)
    if k > 0:
        mask[xp.argsort(flat, kind="stable")[:k]] = False
    return mask.reshape(scores.shape)


def magnitude_masks(model, amount, scope="global", types=PRUNABLE, existing=None):
    """{layer name: 0/1 mask} zeroing the ``amount`` smallest |w| weights.

    scope='global' ranks all layers' weights together (layers that matter less lose more);
    'layer' prunes the same fraction of each layer. Weights already masked in ``existing``
    stay masked (their score is forced to -1, below any magnitude).
    """
    _check_amount(amount)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    layers = find(model, types)
    if not layers:
        raise ValueError(f"no layer of type {[t.__name__ for t in types]} to prune in "
                         f"{type(model).__name__}")
    scores = {}
    for name, layer in layers:
        s = xp.abs(layer.weight.data).astype(xp.float64)
        if existing and name in existing:
            s = xp.where(existing[name] > 0, s, -1.0)
        scores[name] = s
    if scope == "layer":
        return {n: _smallest_mask(s, round(amount * s.size)).astype(
                    model.get_submodule(n).weight.dtype) for n, s in scores.items()}
    flat = xp.concatenate([s.reshape(-1) for s in scores.values()])
    mask = _smallest_mask(flat, round(amount * flat.size))
    out, start = {}, 0
    for name, s in scores.items():
        dtype = model.get_submodule(name).weight.dtype
        out[name] = mask[start:start + s.size].reshape(s.shape).astype(dtype)
        start += s.size
    return out


def magnitude_prune(model, amount, scope="global", types=PRUNABLE, inplace=False):
    """A Pruned copy of ``model`` with the ``amount`` smallest-magnitude weights zeroed."""
    target = model if inplace else copy.deepcopy(model)
    if isinstance(target, Pruned):
        masks = magnitude_masks(target.model, amount, scope, types, existing=target.masks)
        return Pruned(target.model, masks)
    return Pruned(target, magnitude_masks(target, amount, scope, types))


def sparsity_schedule(final, steps, initial=0.0):
    """Zhu & Gupta's cubic ramp: s_t = s_f + (s_i - s_f)(1 - t/n)^3 for t = 1..n."""
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def gradual_prune(model, final, steps, finetune, scope="global", types=PRUNABLE):
    """Prune to ``final`` in ``steps`` stages, calling ``finetune(pruned)`` after each stage.

    ``finetune`` trains the Pruned model in place (e.g. a Trainer with KeepPruned for an
    epoch); weights pruned at one stage stay pruned at the next.
    """
    pruned = None
    for amount in sparsity_schedule(final, steps):
        pruned = magnitude_prune(pruned if pruned is not None else model, amount, scope, types)
        finetune(pruned)
        pruned.apply_masks()
    return pruned


def sparsity(model, types=PRUNABLE):
    """Fraction of exact zeros over the weights of ``types`` layers."""
    weights = [m.weight.data for _, m in find(model, types)]
    total = sum(w.size for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0
