"""Explanations through layerwise autograd: saliency, integrated gradients, Grad-CAM, attention.

    sal = saliency(model, x, target)                          # d logit_target / d x
    ig, delta, f_diff = integrated_gradients(model, x, target, n_steps=50)
    cam = grad_cam(model, model[3], x, target)                # a conv layer's class map

``model`` maps a batch (B, ...) to logits (B, K); ``target`` is one class per example.
Integrated gradients (Sundararajan et al. 2017) integrate the gradient along the straight
path baseline -> x with Gauss-Legendre nodes on [0, 1]; ``delta`` is the completeness error
sum(attributions) - (F(x) - F(baseline)) per example, reported with every attribution.
"""

import numpy as np

from layerwise.autograd import Tensor, no_grad


def _target_grad(model, x, target):
    """(logits_target (B,), gradient of sum(logit_target) w.r.t. x (B, ...)) in x's dtype."""
    inp = Tensor(x, requires_grad=True)
    logits = model(inp)  # (B, K)
    onehot = np.zeros(logits.shape, dtype=logits.data.dtype)
    onehot[np.arange(len(target)), target] = 1
    picked = (logits * Tensor(onehot)).sum(dim=1)  # (B,)
    picked.sum().backward()
    _clear_grads(model)
    return picked.data.copy(), inp.grad.data.copy()


def _clear_grads(model):
    # explanations need input gradients only; leave no parameter .grad behind
    if hasattr(model, "zero_grad"):
        model.zero_grad()


def _as_targets(target, n):
    target = np.broadcast_to(np.asarray(target, np.int64), (n,))
    return np.ascontiguousarray(target)


def saliency(model, x, target):
    """The gradient of the target logit w.r.t. the input, per example: (B, ...)."""
    x = np.asarray(getattr(x, "data", x))
    return _target_grad(model, x, _as_targets(target, len(x)))[1]


def integrated_gradients(model, x, target, baseline=None, n_steps=50, batch_size=256):
    """(attributions (B, ...), completeness deltas (B,), F(x) - F(baseline) (B,)).

    Integrated by Gauss-Legendre quadrature; the baseline defaults to zeros (a black image).
    IG_i = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i da. The n_steps path points
    of all examples are evaluated ``batch_size`` at a time; the result does not depend on it.
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    x = np.asarray(getattr(x, "data", x))
    target = _as_targets(target, len(x))
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(
        np.asarray(getattr(baseline, "data", baseline), x.dtype), x.shape)
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)  # on [-1, 1]
    alphas, weights = (nodes + 1) / 2, weights / 2  # on [0, 1]; weights sum to 1
    b = len(x)
    # (S, B, ...) path points, flattened to (S * B, ...)
    diff = x - base
    path = (base[None] + alphas.reshape(-1, *[1] * x.ndim) * diff[None]).astype(x.dtype)
    path = path.reshape(n_steps * b, *x.shape[1:])
    tgt = np.tile(target, n_steps)
    grads = np.empty(path.shape, dtype=np.float64)
    for s in range(0, len(path), batch_size):
        grads[s:s + batch_size] = _target_grad(model, path[s:s + batch_size],
                                               tgt[s:s + batch_size])[1]
    grads = grads.reshape(n_steps, b, *x.shape[1:])
    avg = np.tensordot(weights, grads, axes=1)  # (B, ...)
    attr = diff * avg
    f_x = _logit(model, x, target)
    f_b = _logit(model, np.ascontiguousarray(base), target)
    delta = attr.reshape(b, -1).sum(1) - (f_x - f_b)
    return attr, delta, f_x - f_b


def _logit(model, x, target):
    with no_grad():
        out = model(Tensor(x)).data
    return out[np.arange(len(x)), target].astype(np.float64)


def grad_cam(model, layer, x, target):
    """Grad-CAM (Selvaraju et al. 2017) of ``layer`` (a module with output (B, C, H, W)).

    A forward hook swaps the layer's output for a fresh leaf tensor of the same value, so the
    backward pass stops there and leaves the gradient on it. Channel weights are the spatially
    averaged gradients; the map is ReLU(sum_c w_c A_c), (B, H, W), scaled to max 1 per example.
    """
    x = np.asarray(getattr(x, "data", x))
    target = _as_targets(target, len(x))
    kept = {}

    def hook(module, args, out):
        leaf = Tensor(out.data, requires_grad=True)
        kept["act"] = leaf
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(Tensor(x))
    finally:
        handle.remove()
    if "act" not in kept:
        raise ValueError("grad_cam: the chosen layer did not run in the model's forward pass; "
                         "pass a submodule of the model (e.g. model[3])")
    act = kept["act"]
    if act.ndim != 4:
        raise ValueError(f"grad_cam needs a layer with output (B, C, H, W), got shape "
                         f"{tuple(act.shape)}; choose a conv layer")
    onehot = np.zeros(logits.shape, dtype=logits.data.dtype)
    onehot[np.arange(len(x)), target] = 1
    (logits * Tensor(onehot)).sum().backward()
    _clear_grads(model)
    a, g = act.data.astype(np.float64), act.grad.data.astype(np.float64)
    w = g.mean(axis=(2, 3), keepdims=True)  # (B, C, 1, 1)
    cam = np.maximum((w * a).sum(axis=1), 0)  # (B, H, W)
    top = cam.reshape(len(x), -1).max(axis=1).reshape(-1, 1, 1)
    return cam / np.where(top > 0, top, 1)


def attention_maps(model, inputs):
    """Per-layer attention weights [(B, heads, T, S), ...] of a transformer on ``inputs``.

    Every submodule with a ``store_attn_weights`` switch (nn.MultiheadAttention, the GPT's
    CausalSelfAttention) is switched on for one forward pass and back off afterwards.
    """
    layers = [m for _, m in model.named_modules() if hasattr(m, "store_attn_weights")]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention module with "
                         f"store_attn_weights; attention maps need a transformer")
    was_training = model.training
    model.eval()
    try:
        for m in layers:
            m.store_attn_weights = True
        with no_grad():
            model(inputs)
        return [m.last_attn_weights.numpy() for m in layers]
    finally:
        for m in layers:
            m.store_attn_weights = False
        model.train(was_training)


def token_labels(tokenizer, ids, specials=()):
    """Each token id as a short label for a plot's axis.

    Ids from the tokenizer's vocabulary decode to their text. Ids past it are the run's
    special tokens, numbered after the vocabulary (BERT's [PAD], [UNK], [CLS], [SEP], [MASK]:
    train/recipes/masked_lm.py), and show by name; an id that is neither shows as <id>, so a plot
    never fails on a token the tokenizer cannot spell.
    """
    n = tokenizer.vocab_size if tokenizer is not None else 0
    labels = []
    for i in (int(i) for i in ids):
        if tokenizer is None:
            text = str(i)
        elif 0 <= i < n:
            text = tokenizer.decode([i])
        elif 0 <= i - n < len(specials):
            text = specials[i - n]
        else:
            text = f"<{i}>"
        labels.append(text.replace("\n", "\\n") or "?")
    return labels


def spearman(a, b):
    """Spearman rank correlation of two arrays (flattened), average ranks for ties."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)
