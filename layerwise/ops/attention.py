"""Scaled dot-product attention (Vaswani et al. 2017, eq. 1): softmax(Q K^T * scale + mask) V.

``SDPAttention`` is one Function, its backward written by hand from the saved q, k, v and
probabilities P (and the dropout multipliers when there are any):
    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dP * P)),   dQ = dS K * scale,
    dK = dS^T Q * scale.
One graph node instead of five (scale, transpose, matmul, softmax, matmul), whose backward
works on one (..., Tq, Tk) array. With ``need_weights=True`` the same computation runs as
matmul, ``MaskedSoftmax``, dropout and matmul instead, so that the returned weights are an
ordinary differentiable tensor. Its fast paths (the float32 softmax compiled, causal
attention in query blocks, the batch in two halves on two cores) are in ops/fast/attention.py.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is True
where a query may attend, a float mask is added to the scores; both broadcast against
(..., Tq, Tk), so a padding mask is (B, 1, 1, Tk). A row with nothing to attend gives zeros
(PyTorch gives NaN). ``is_causal`` aligns the causal mask to the END of the keys: query i
attends keys j <= i + Tk - Tq, which is what a KV cache needs (Tq new queries after Tk - Tq
cached keys); PyTorch aligns it to the start, which differs only when Tq != Tk.
"""

import functools
import math

from layerwise.backend import xp
from layerwise.autograd.engine import unbroadcast
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor
from layerwise.ops.matmul import matmul
from layerwise.ops import elementwise
from layerwise.ops import movement as mv
from layerwise.ops import random as rnd


def softmax_rows_(s):
    """Softmax over the last axis, in place. A row with nothing to attend (all -inf) becomes
    zeros, not NaN."""
    m = s.max(axis=-1, keepdims=True)
    m[~xp.isfinite(m)] = 0  # an all -inf row: exp(-inf - 0) = 0 instead of exp(nan)
    s -= m
    xp.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)
    total[total == 0] = 1
    s /= total
    return s


def softmax_rows_backward_(dp, p):
    """dS = P * (dP - rowsum(dP * P)), computed in dP's memory."""
    dp -= (dp * p).sum(axis=-1, keepdims=True)
    dp *= p
    return dp


def dropout_keep(shape, dropout_p, dtype):
    """Inverted dropout's multipliers for the attention weights (0, or 1 / (1 - dropout_p)),
    drawn from the global generator; None when nothing is dropped."""
    if dropout_p == 0:
        return None
    return rnd.keep_multipliers(shape, dropout_p, dtype, rnd.draw_seed())


class SDPAttention(Function):
    """softmax(q k^T * scale + masks) v as one node; inputs q, k, v [, mask].

    ``bias`` is a constant additive array (a boolean mask as 0 / -inf, or a float mask that
    needs no gradient); a float mask that requires grad comes in as the fourth tensor and gets
    dS as its gradient; ``is_causal`` adds ``causal_bias``.
    """

    # The softmax and its backward, over the rows of the scores in place; the float32 fast
    # path replaces these two with compiled loops.
    softmax_ = staticmethod(softmax_rows_)
    softmax_backward_ = staticmethod(softmax_rows_backward_)

    def forward(self, q, k, v, *mask, scale, bias, is_causal, dropout_p):
        s = (q * scale) @ xp.swapaxes(k, -1, -2)  # (..., Tq, d) @ (..., d, Tk) -> (..., Tq, Tk)
        if bias is not None:
            s += bias
        if mask:
            s += mask[0]
        if is_causal:
            s += causal_bias(s.shape[-2], s.shape[-1], s.dtype.name)
        p = self.softmax_(s)
        self.keep = dropout_keep(p.shape, dropout_p, p.dtype)
        self.q, self.k, self.v, self.p, self.scale = q, k, v, p, scale
        self.mask_shape = mask[0].shape if mask else None
        return self.dropped(p) @ v  # (..., Tq, Tk) @ (..., Tk, dv) -> (..., Tq, dv)

    def backward(self, g):
        q, k, v, p, scale = self.q, self.k, self.v, self.p, self.scale
        needs = self.needs_input_grad
        need_mask = len(needs) > 3 and needs[3]
        dq = dk = dv = ds = None
        if needs[2]:
            dv = unbroadcast(xp.swapaxes(self.dropped(p), -1, -2) @ g, v.shape)
        if needs[0] or needs[1] or need_mask:
            dp = g @ xp.swapaxes(v, -1, -2)  # (..., Tq, Tk)
            if self.keep is not None:
                dp *= self.keep
            ds = self.softmax_backward_(dp, p)
            if needs[0]:
                dq = unbroadcast((ds @ k) * scale, q.shape)
            if needs[1]:
                dk = unbroadcast((xp.swapaxes(ds, -1, -2) @ q) * scale, k.shape)
        if len(needs) == 3:
            return dq, dk, dv
        return dq, dk, dv, unbroadcast(ds, self.mask_shape) if need_mask else None

    def dropped(self, p):
        """The probabilities after dropout."""
        return p if self.keep is None else p * self.keep


class MaskedSoftmax(Function):
    """softmax(s + masks) over the last dim, all-masked rows giving zeros; the masks as
    SDPAttention takes them."""

    def forward(self, s, *mask, bias, is_causal):
        s = s.copy()
        if bias is not None:
            s += bias
        if mask:
            s += mask[0]
        if is_causal:
            s += causal_bias(s.shape[-2], s.shape[-1], s.dtype.name)
        self.p = softmax_rows_(s)
        self.mask_shape = mask[0].shape if mask else None
        return self.p

    def backward(self, g):
        ds = softmax_rows_backward_(g.copy(), self.p)
        if len(self.needs_input_grad) > 1:
            return ds, unbroadcast(ds, self.mask_shape) if self.needs_input_grad[1] else None
        return ds


@functools.lru_cache(maxsize=32)
def causal_bias(tq, tk, dtype_name):
    """(Tq, Tk) array of 0 where query i may see key j <= i + Tk - Tq, -inf elsewhere.

    Cached because every layer of every step asks for the same one; read-only so a caller
    cannot change the shared copy.
    """
    rows = xp.arange(tq)[:, None] + (tk - tq)
    allowed = xp.arange(tk)[None, :] <= rows
    bias = xp.where(allowed, 0, -xp.inf).astype(dtype_name)
    bias.flags.writeable = False
    return bias


def _mask_parts(attn_mask, lead, tq, tk, dtype):
    """(constant additive bias array or None, differentiable float mask Tensor or None) for
    scores of shape lead + (tq, tk)."""
    if attn_mask is None:
        return None, None
    data = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
    target = tuple(lead) + (tq, tk)
    try:
        fits = xp.broadcast_shapes(data.shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"attn_mask of shape {tuple(data.shape)} does not broadcast to the "
                         f"attention scores' shape {target} (..., Tq, Tk); a padding mask is "
                         f"(B, 1, 1, Tk), a causal one (Tq, Tk)")
    if data.dtype == bool:
        if isinstance(attn_mask, Tensor):  # through an op: an exported graph computes it
            return elementwise.where(attn_mask, 0.0, -math.inf).data.astype(dtype, copy=False), None
        return xp.where(data, 0, -xp.inf).astype(dtype), None
    if data.dtype.kind == "f":
        if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
            return None, attn_mask
        return data.astype(dtype, copy=False), None
    raise TypeError(f"attn_mask must be boolean (True = attend) or floating (added to the "
                    f"scores), got dtype {data.dtype}; use mask.bool() for a 0/1 mask")


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, need_weights=False):
    """Attention over (..., T, d) tensors, usually (B, h, T, d).

    query (..., Tq, d), key (..., Tk, d), value (..., Tk, dv) -> (..., Tq, dv); with
    ``need_weights=True`` returns (output, weights (..., Tq, Tk)). ``scale`` defaults to
    1/sqrt(d). Dropout (on the weights) applies whenever ``dropout_p > 0``; pass 0 in eval.
    """
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise ValueError(f"attention needs (..., T, d) tensors, got query {tuple(query.shape)}, "
                         f"key {tuple(key.shape)}, value {tuple(value.shape)}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"attention shapes do not fit: query (..., Tq, d) = {tuple(query.shape)}, "
                         f"key (..., Tk, d) = {tuple(key.shape)}, value (..., Tk, dv) = "
                         f"{tuple(value.shape)}; query and key need the same d, key and value "
                         "the same Tk")
    if not 0 <= dropout_p < 1:
        raise ValueError(f"attention dropout_p must be in [0, 1), got {dropout_p}")
    tq, tk = query.shape[-2], key.shape[-2]
    if is_causal and tq > tk:
        raise ValueError(f"is_causal with more queries ({tq}) than keys ({tk}) leaves the "
                         f"first {tq - tk} queries nothing to attend; the causal mask is "
                         "aligned to the end of the keys (KV-cache style)")
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    lead = xp.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    bias, mask_tensor = _mask_parts(attn_mask, lead, tq, tk, query.dtype)
    masks = (mask_tensor,) if mask_tensor is not None else ()
    if not need_weights:
        return SDPAttention.apply(query, key, value, *masks, scale=scale, bias=bias,
                                  is_causal=bool(is_causal), dropout_p=dropout_p)
    scores = matmul(query * scale, mv.transpose(key, -2, -1))  # (..., Tq, Tk)
    weights = MaskedSoftmax.apply(scores, *masks, bias=bias, is_causal=bool(is_causal))
    weights = rnd.dropout(weights, dropout_p, training=dropout_p > 0)
    return matmul(weights, value), weights
