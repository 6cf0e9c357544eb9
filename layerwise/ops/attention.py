"""Scaled dot-product attention (Vaswani et al. 2017, eq. 1): softmax(Q K^T * scale + mask) V.

Two paths compute the same thing:

* ``SDPAttention``, one fused Function. Its backward is written by hand from the saved
  q, k, v and probabilities P (plus the dropout mask when there is one):
      dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dP * P)),   dQ = dS K * scale,
      dK = dS^T Q * scale.
  It is one graph node instead of five (scale, transpose, matmul, softmax, matmul), and its
  backward works in place on one (B, h, Tq, Tk) array. Measured on the GPT workload of the issue
  (B=16, h=4, T=128, d=32, float32, causal, one BLAS thread, CPU time): forward+backward
  ~8.5 ms against ~10 ms for the composed path, so it is used whenever the weights are not
  asked for.
* The composed path (matmul, ``MaskedSoftmax``, dropout, matmul), used when
  ``need_weights=True`` so that the returned weights are an ordinary differentiable tensor.
* ``PackedSelfAttention``: the fused node fed straight from a packed (B, T, 3C) q | k | v
  projection (GPT-2's c_attn, MultiheadAttention's in_proj), heads split and merged inside.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is True
where a query may attend, a float mask is added to the scores; both broadcast against
(..., Tq, Tk), so a padding mask is (B, 1, 1, Tk). A row with nothing to attend gives zeros
(PyTorch gives NaN). ``is_causal`` aligns the causal mask to the END of the keys: query i
attends keys j <= i + Tk - Tq, which is what a KV cache needs (Tq new queries after Tk - Tq
cached keys); PyTorch aligns it to the start, which differs only when Tq != Tk.
"""

import functools
import math

from layerwise import backend
from layerwise.backend import threads, xp
from layerwise.autograd.engine import unbroadcast
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor
from layerwise.ops.gemv import ones
from layerwise.ops.fast.kernels import kernel
from layerwise.ops.matmul import matmul
from layerwise.ops import movement as mv
from layerwise.ops import random as rnd


def _compiled_rows(name, *arrays):
    """The float32 softmax kernel ``name`` (kernels_vecmath.py), or None where it does not
    apply: numba missing, another dtype, or arrays not C-contiguous (its loops run over flat
    rows)."""
    if all(a.dtype == xp.float32 and a.flags.c_contiguous for a in arrays):
        return kernel(name)
    return None


def _softmax_rows_(s):
    """Softmax over the last axis, in place. Rows that are all -inf become zeros, not NaN."""
    fused = _compiled_rows("softmax_rows", s)
    if fused is not None and s.size:
        fused(s.reshape(-1, s.shape[-1]))
        return s
    m = s.max(axis=-1, keepdims=True)
    m[~xp.isfinite(m)] = 0  # an all -inf row: exp(-inf - 0) = 0 instead of exp(nan)
    s -= m
    xp.exp(s, out=s)
    z = (s @ ones(s.shape[-1], s.dtype))[..., None]  # row sums by the BLAS (gemv.py)
    z[z == 0] = 1
    s *= 1 / z  # one division per row, then multiplies
    return s


def _causal_softmax_(s, bias, first_query):
    """Softmax of causal scores s (..., Tq, Tk) whose query rows start at ``first_query``:
    the compiled kernel skips the masked keys instead of adding -inf and exponentiating them
    (GPT workload, one layer's forward: 2.53 -> 2.41 ms); else ``bias`` (the causal rows) is
    added and the ordinary softmax runs."""
    fused = _compiled_rows("softmax_rows_causal", s)
    if fused is not None and s.size:
        fused(s.reshape(-1, s.shape[-1]), s.shape[-2], first_query)
        return s
    s += bias
    return _softmax_rows_(s)


def _softmax_backward_(dp, p):
    """dS = P * (dP - rowsum(dP * P)), computed in dP's memory."""
    fused = _compiled_rows("softmax_backward_rows", dp, p)
    if fused is not None and dp.size:
        fused(dp.reshape(-1, dp.shape[-1]), p.reshape(-1, p.shape[-1]))
        return dp
    # einsum forms the row dot products without a (..., Tq, Tk) temporary: at these sizes
    # allocating (and page-faulting) a fresh 4 MB array costs as much as the arithmetic.
    dp -= xp.einsum("...i,...i->...", dp, p)[..., None]
    dp *= p
    return dp


class SDPAttention(Function):
    """softmax(q k^T * scale + bias [+ mask]) v as one node; inputs q, k, v [, mask].

    ``bias`` is a constant additive array (causal and boolean masks turned into 0 / -inf);
    a float mask that requires grad comes in as the fourth tensor and gets dS as gradient.
    """

    def forward(self, q, k, v, *mask, scale, bias, dropout_p):
        self.mask_shape = mask[0].shape if mask else None
        return self._attend(q, k, v, mask[0] if mask else None, scale, bias, dropout_p)

    def backward(self, g):
        needs = self.needs_input_grad
        need_mask = len(needs) > 3 and needs[3]
        dq, dk, dv, ds = self._grads(g, needs[0], needs[1], needs[2], need_mask)
        if len(needs) == 3:
            return dq, dk, dv
        return dq, dk, dv, unbroadcast(ds, self.mask_shape) if need_mask else None

    def _attend(self, q, k, v, mask, scale, bias, dropout_p):
        self.split = _causal_split(q, k, v, mask, bias)
        if self.split:
            return self._attend_causal(q, k, v, scale, bias, dropout_p)
        s = (q * scale) @ xp.swapaxes(k, -1, -2)  # (..., Tq, d) @ (..., d, Tk) -> (..., Tq, Tk)
        if bias is not None:
            s += bias
        if mask is not None:
            s += mask
        p = _softmax_rows_(s)
        self.keep = None
        p_used = p
        if dropout_p > 0:
            keep = backend.rng().random(p.shape) >= dropout_p
            self.keep = keep.astype(p.dtype) / (1 - dropout_p)  # inverted dropout's scale
            p_used = p * self.keep
        self.q, self.k, self.v, self.p, self.scale = q, k, v, p, scale
        return p_used @ v  # (..., Tq, Tk) @ (..., Tk, dv) -> (..., Tq, dv)

    def _grads(self, g, need_q, need_k, need_v, need_s):
        if self.split:
            return self._grads_causal(g, need_q, need_k, need_v)
        q, k, v, p, scale = self.q, self.k, self.v, self.p, self.scale
        dq = dk = dv = ds = None
        if need_v:
            p_used = p if self.keep is None else p * self.keep
            dv = unbroadcast(xp.swapaxes(p_used, -1, -2) @ g, v.shape)
        if need_q or need_k or need_s:
            dp = g @ xp.swapaxes(v, -1, -2)  # (..., Tq, Tk)
            if self.keep is not None:
                dp *= self.keep
            ds = _softmax_backward_(dp, p)
            if need_q:
                dq = unbroadcast((ds @ k) * scale, q.shape)
            if need_k:
                dk = unbroadcast((xp.swapaxes(ds, -1, -2) @ q) * scale, k.shape)
        return dq, dk, dv, ds


    # --- causal attention in query blocks ----------------------------------------------------
    # With a causal mask the queries of block i (rows start..end) see only the keys before
    # ``end``, so each block multiplies, exponentiates and keeps only those columns: with n
    # blocks, (n + 1) / 2n of the (T, T) scores instead of all of them. Two blocks skip a
    # quarter: one layer of the GPT workload alone (B=16, h=4, T=128): forward 5.5 -> 4.0 ms,
    # forward and backward together 12 -> 9 ms. Four blocks skip 37.5%: half the batch's
    # forward (one thread) 1.19-1.28 -> 0.95-0.97 ms, backward 1.42-1.68 -> 1.38-1.43 ms; eight
    # were no faster (more, smaller products, and the backward's sums over blocks).

    def _attend_causal(self, q, k, v, scale, bias, dropout_p):
        self.keep = None
        if dropout_p > 0:  # drawn for the full (T, T) scores, as the unsplit path does
            keep = backend.rng().random(q.shape[:-1] + (k.shape[-2],)) >= dropout_p
            self.keep = keep.astype(q.dtype) / (1 - dropout_p)
        qs = q * scale
        # K^T copied once: OpenBLAS multiplies by a contiguous (d, T) operand faster than by a
        # transposed view (GPT workload, both blocks: 0.82 -> 0.48 ms, for a 0.17 ms copy).
        kt = xp.ascontiguousarray(xp.swapaxes(k, -1, -2))  # (..., d, T)
        out = xp.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)  # (..., T, dv)
        self.p = []
        for start, end in self._blocks():
            p = qs[..., start:end, :] @ kt[..., :end]  # (..., end - start, end)
            self.p.append(_causal_softmax_(p, bias[start:end, :end], start))
            xp.matmul(self._used(p, start, end), v[..., :end, :], out=out[..., start:end, :])
        self.q, self.k, self.v, self.scale = q, k, v, scale
        return out

    def _blocks(self):
        """(start, end) of each query block, from the boundaries in self.split."""
        return list(zip(self.split, self.split[1:]))

    def _used(self, p, start, end):
        """A block's probabilities after dropout."""
        return p if self.keep is None else p * self.keep[..., start:end, :end]

    def _grads_causal(self, g, need_q, need_k, need_v):
        q, k, v, scale = self.q, self.k, self.v, self.scale
        dq = dk = dv = None
        if need_q:
            dq = xp.empty(q.shape, dtype=q.dtype)
        if need_q or need_k:
            vt = xp.ascontiguousarray(xp.swapaxes(v, -1, -2))  # (..., dv, T): as K^T above
        # The last block first: it reads every key, so its products start dk and dv whole and
        # the earlier blocks add into their leading keys.
        for (start, end), p in reversed(list(zip(self._blocks(), self.p))):
            g_i = g[..., start:end, :]  # (..., end - start, dv)
            if need_v:
                part = xp.swapaxes(self._used(p, start, end), -1, -2) @ g_i  # (..., end, dv)
                if dv is None:
                    dv = part
                else:
                    dv[..., :end, :] += part
            if need_q or need_k:
                dp = g_i @ vt[..., :end]  # (..., end - start, end)
                if self.keep is not None:
                    dp *= self.keep[..., start:end, :end]
                ds = _softmax_backward_(dp, p)
                if need_q:
                    xp.matmul(ds, k[..., :end, :], out=dq[..., start:end, :])
                if need_k:
                    part = xp.swapaxes(ds, -1, -2) @ q[..., start:end, :]  # (..., end, d)
                    if dk is None:
                        dk = part
                    else:
                        dk[..., :end, :] += part
        if dq is not None:
            dq *= scale
        if dk is not None:
            dk *= scale
        return dq, dk, dv, None


# Causal query blocks: at least this many queries each, and at most MAX_CAUSAL_BLOCKS.
MIN_CAUSAL_BLOCK, MAX_CAUSAL_BLOCKS = 32, 4


def _causal_split(q, k, v, mask, bias):
    """The query blocks' boundaries (0, ..., T) when the only mask is the plain causal one
    over square scores of one batch shape and T is long enough to be worth it; else ()."""
    t = q.shape[-2]
    if (mask is not None or bias is None or t != k.shape[-2] or t < 2 * MIN_CAUSAL_BLOCK
            or q.ndim < 3 or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
            or bias is not causal_bias(t, t, str(q.dtype))):
        return ()
    n = min(MAX_CAUSAL_BLOCKS, t // MIN_CAUSAL_BLOCK)
    return tuple(i * t // n for i in range(n + 1))


class PackedSelfAttention(SDPAttention):
    """Self-attention straight from a fused in-projection: (B, T, 3C) holding q | k | v, each
    C = heads * head_dim wide (GPT-2's c_attn and MultiheadAttention's in_proj layout), to the
    heads merged back, (B, T, C); inputs qkv [, mask].

    The same computation as SDPAttention, but the head split (split, reshape, transpose for
    each of q, k, v) and the merge after are views or one copy inside this node, instead of
    eleven graph nodes whose backward passes each allocate a zero (B, T, 3C) gradient. The
    gain is small next to the attention itself (~10.3 ms against ~10.8 ms forward+backward on
    the workload above) but it comes free wherever the projection is already packed.
    """

    def forward(self, qkv, *mask, num_heads, scale, bias, dropout_p):
        self.halves = None
        if not mask and _in_halves(qkv.shape, num_heads, bias, dropout_p):
            return self._forward_halves(qkv, num_heads, scale, bias)
        return self._forward_serial(qkv, *mask, num_heads=num_heads, scale=scale, bias=bias,
                                    dropout_p=dropout_p)

    def backward(self, g):
        if self.halves is not None:
            return self._backward_halves(g)
        return self._backward_serial(g)

    # --- the batch in two halves, one per core (backend/threads.py) ---------------------------
    # Every sample's attention is independent of the others', so two halves of the batch are
    # two smaller attentions with the same arithmetic: the results are bit-identical to the
    # serial ones. Each half's products run single-threaded, the softmax kernels of both
    # halves run at once. GPT workload (B=16, h=4, T=128), one layer's forward and backward
    # alone: 6.3 -> 4.6 ms; the whole training step 1.046x and 1.076x (in-process A/B, twice;
    # 1.030x and 1.035x before the halves wrote straight into the merged result).

    def _forward_halves(self, qkv, num_heads, scale, bias):
        b, t, c3 = qkv.shape
        cut = b // 2
        halves = (PackedSelfAttention(), PackedSelfAttention())
        out = xp.empty((b, t, c3 // 3), dtype=qkv.dtype)  # (B, T, C)

        def run(half, rows):
            half.needs_input_grad = self.needs_input_grad
            half._forward_serial(qkv[rows], num_heads=num_heads, scale=scale, bias=bias,
                                 dropout_p=0.0, out=out[rows])

        threads.run_pair(lambda: run(halves[0], slice(0, cut)),
                         lambda: run(halves[1], slice(cut, b)))
        self.halves = (halves, cut)
        return out

    def _backward_halves(self, g):
        (first, second), cut = self.halves
        b, t, c = g.shape
        dqkv = xp.empty((b, t, 3 * c), dtype=g.dtype)  # (B, T, 3C)

        def run(half, rows):
            half.retains_graph = self.retains_graph
            half._backward_serial(g[rows], out=dqkv[rows])

        threads.run_pair(lambda: run(first, slice(0, cut)), lambda: run(second, slice(cut, b)))
        if not self.retains_graph:
            self.halves = None
        return dqkv

    # --- one thread ---------------------------------------------------------------------------

    # ``out``: a C-contiguous array of the result's shape to merge the heads into (a half's
    # rows of the whole batch's result), instead of a new one.

    def _forward_serial(self, qkv, *mask, num_heads, scale, bias, dropout_p, out=None):
        b, t, c3 = qkv.shape
        hd = c3 // (3 * num_heads)
        self.mask_shape = mask[0].shape if mask else None
        # (B, T, 3C) -> (B, T, 3, nh, hd) -> (3, B, nh, T, hd): views, no copy
        q, k, v = qkv.reshape(b, t, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)
        heads = self._attend(q, k, v, mask[0] if mask else None, scale, bias, dropout_p)
        merged = heads.transpose(0, 2, 1, 3)  # (B, nh, T, hd) -> a (B, T, nh, hd) view
        if out is None:
            return merged.reshape(b, t, c3 // 3)  # (B, T, C), the one copy
        out.reshape(b, t, num_heads, hd)[...] = merged
        return out

    def _backward_serial(self, g, out=None):
        b, t, c = g.shape
        nh = self.q.shape[1]
        needs = self.needs_input_grad
        need_mask = len(needs) > 1 and needs[1]
        g_heads = g.reshape(b, t, nh, c // nh).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, nh, T, hd)
        dq, dk, dv, ds = self._grads(g_heads, True, True, True, need_mask)
        if out is None:
            out = xp.empty((b, t, 3 * c), dtype=g.dtype)
        dqkv = out.reshape(b, t, 3, nh, c // nh)  # a view: filled in place
        for i, d in enumerate((dq, dk, dv)):
            dqkv[:, :, i] = d.transpose(0, 2, 1, 3)  # (B, nh, T, hd) -> (B, T, nh, hd)
        if len(needs) == 1:
            return out
        return out, unbroadcast(ds, self.mask_shape) if need_mask else None


# Below this many scores (B * heads * T * T) the two halves gain less than parking and
# restarting OpenBLAS's threads costs (~0.13 ms; the GPT workload has 1 M scores a layer).
MIN_SCORES_IN_HALVES = 1 << 19


def _in_halves(shape, num_heads, bias, dropout_p):
    """Whether packed attention over (B, T, 3C) runs as two halves of the batch: no dropout
    (its draws would depend on which half ran first), no mask that differs between samples,
    enough work, and two cores to run on."""
    b, t, _ = shape
    return (dropout_p == 0 and (bias is None or bias.ndim <= 2) and b >= 2
            and b * num_heads * t * t >= MIN_SCORES_IN_HALVES and threads.available())


class MaskedSoftmax(Function):
    """softmax(s + bias [+ mask]) over the last dim, all-masked rows giving zeros."""

    def forward(self, s, *mask, bias):
        s = s.copy()
        if bias is not None:
            s += bias
        if mask:
            s += mask[0]
        self.p = _softmax_rows_(s)
        self.mask_shape = mask[0].shape if mask else None
        return self.p

    def backward(self, g):
        ds = _softmax_backward_(g.copy(), self.p)
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


def _mask_parts(attn_mask, is_causal, lead, tq, tk, dtype):
    """(constant additive bias array or None, differentiable float mask Tensor or None) for
    scores of shape lead + (tq, tk)."""
    bias, mask_tensor = None, None
    if attn_mask is not None:
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
            bias = xp.where(data, 0, -xp.inf).astype(dtype)
        elif data.dtype.kind == "f":
            if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
                mask_tensor = attn_mask
            else:
                bias = data.astype(dtype, copy=False)
        else:
            raise TypeError(f"attn_mask must be boolean (True = attend) or floating (added to the "
                            f"scores), got dtype {data.dtype}; use mask.bool() for a 0/1 mask")
    if is_causal:
        if tq > tk:
            raise ValueError(f"is_causal with more queries ({tq}) than keys ({tk}) leaves the "
                             f"first {tq - tk} queries nothing to attend; the causal mask is "
                             "aligned to the end of the keys (KV-cache style)")
        causal = causal_bias(tq, tk, str(dtype))
        bias = causal if bias is None else bias + causal
    return bias, mask_tensor


def packed_self_attention(qkv, num_heads, attn_mask=None, dropout_p=0.0, is_causal=False,
                          scale=None):
    """Multi-head self-attention of a packed (B, T, 3C) q | k | v tensor -> (B, T, C).

    The same masks and options as ``scaled_dot_product_attention`` over the heads
    (B, num_heads, T, C // num_heads), with the heads split and merged inside one node.
    """
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"packed_self_attention needs (B, T, 3C) with C divisible by "
                         f"num_heads={num_heads}, got shape {tuple(qkv.shape)}")
    if not 0 <= dropout_p < 1:
        raise ValueError(f"attention dropout_p must be in [0, 1), got {dropout_p}")
    b, t, c3 = qkv.shape
    head_dim = c3 // (3 * num_heads)
    scale = 1 / math.sqrt(head_dim) if scale is None else float(scale)
    bias, mask_tensor = _mask_parts(attn_mask, is_causal, (b, num_heads), t, t, qkv.dtype)
    masks = (mask_tensor,) if mask_tensor is not None else ()
    return PackedSelfAttention.apply(qkv, *masks, num_heads=num_heads, scale=scale, bias=bias,
                                     dropout_p=dropout_p)


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
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    lead = xp.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    bias, mask_tensor = _mask_parts(attn_mask, is_causal, lead, query.shape[-2], key.shape[-2],
                                    query.dtype)
    masks = (mask_tensor,) if mask_tensor is not None else ()
    if not need_weights:
        return SDPAttention.apply(query, key, value, *masks, scale=scale, bias=bias,
                                  dropout_p=dropout_p)
    scores = matmul(query * scale, mv.transpose(key, -2, -1))  # (..., Tq, Tk)
    weights = MaskedSoftmax.apply(scores, *masks, bias=bias)
    weights = rnd.dropout(weights, dropout_p, training=dropout_p > 0)
    return matmul(weights, value), weights
