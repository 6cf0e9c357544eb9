"""Attention-head pruning for GPT: whole heads removed, a smaller dense attention layer.

A head owns hs rows of each of q, k and v in c_attn (C -> 3C, q | k | v) and the same hs
input columns of c_proj. Removing it slices those out and lowers n_head; the layer's output
is then exactly the full layer's with that head's contribution to c_proj set to zero
(``head_mask_model``), which the tests check. Heads are ranked per layer by the L2 norm of
their c_proj columns, the weights through which a head reaches the residual stream (a simple
magnitude proxy for Michel et al. 2019's gradient importance, "Are sixteen heads really
better than one?").
"""

import copy

from layerwise.backend import xp
from layerwise.compress.prune import _check_amount
from layerwise.models.gpt import CausalSelfAttention
from layerwise.nn.parameter import Parameter


class PrunedCausalSelfAttention(CausalSelfAttention):
    """CausalSelfAttention whose heads span n_head * head_size < n_embd channels (the forward
    is GPT's: it reads the head size from the projection)."""


def _heads_to_keep(attn, amount):
    hs = attn.n_embd // attn.n_head if not hasattr(attn, "head_size") else attn.head_size
    w = attn.c_proj.weight.data.astype(xp.float64)  # (C, n_head * hs)
    norms = xp.sqrt((w.reshape(w.shape[0], attn.n_head, hs) ** 2).sum(axis=(0, 2)))
    n_keep = max(1, attn.n_head - round(amount * attn.n_head))
    return xp.sort(xp.argsort(-norms, kind="stable")[:n_keep]), hs


def _attention_layers(model):
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise ValueError(f"no GPT CausalSelfAttention layer in {type(model).__name__}")
    return layers


def prune_heads(model, amount):
    """A copy of a GPT with ``amount`` of each layer's heads removed."""
    _check_amount(amount)
    out = copy.deepcopy(model)
    for name, attn in _attention_layers(out):
        keep, hs = _heads_to_keep(attn, amount)
        inner = attn.n_head * hs
        cols = (keep[:, None] * hs + xp.arange(hs)).reshape(-1)  # this layer's kept channels
        rows = xp.concatenate([cols, inner + cols, 2 * inner + cols])  # in q | k | v
        attn.c_attn.weight = Parameter(xp.ascontiguousarray(attn.c_attn.weight.data[rows]))
        if attn.c_attn.bias is not None:
            attn.c_attn.bias = Parameter(xp.ascontiguousarray(attn.c_attn.bias.data[rows]))
        attn.c_attn.out_features = len(rows)
        attn.c_proj.weight = Parameter(xp.ascontiguousarray(attn.c_proj.weight.data[:, cols]))
        attn.c_proj.in_features = len(cols)
        attn.n_head, attn.head_size = len(keep), hs
        attn.__class__ = PrunedCausalSelfAttention  # same state; its class says it is pruned
    return out


def head_mask_model(model, amount):
    """A full-size copy with the heads ``prune_heads`` removes silenced (c_proj columns 0)."""
    _check_amount(amount)
    out = copy.deepcopy(model)
    for name, attn in _attention_layers(out):
        keep, hs = _heads_to_keep(attn, amount)
        drop = xp.setdiff1d(xp.arange(attn.n_head), keep)
        for h in drop:
            attn.c_proj.weight.data[:, h * hs:(h + 1) * hs] = 0
    return out
