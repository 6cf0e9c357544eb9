"""Fast paths of scaled dot-product attention (ops/attention.py's SDPAttention), for any
caller of ``F.scaled_dot_product_attention``, in the order ``choose`` tries them:

- ``AttentionInHalves``: the batch as two halves on two cores, each half running the path
  one thread would run;
- ``CausalQueryBlocksFloat32`` and ``CausalQueryBlocks``: a plain causal mask computed in
  query blocks that skip the keys each block cannot see, with the compiled float32 softmax
  rows or NumPy's;
- ``SoftmaxRowsFloat32``: the softmax and its backward as compiled float32 row loops.
"""

import itertools
import math

from layerwise.autograd import dispatch
from layerwise.autograd.dispatch import fast_path
from layerwise.backend import threads, xp
from layerwise.ops.attention import SDPAttention, causal_bias, dropout_keep
from layerwise.ops.fast.path import FastPath

# A causal query block holds at least this many queries, and there are at most
# MAX_CAUSAL_BLOCKS: blocks of 16 queries (eight at T=128) were no faster than four of 32 (more,
# smaller products, and the backward's sums over blocks).
MIN_CAUSAL_BLOCK = 32

# Four blocks skip 37.5% of the scores, two 25%: half the GPT workload's batch, forward on one
# thread, 1.19-1.28 -> 0.95-0.97 ms against two blocks.
MAX_CAUSAL_BLOCKS = 4

# Below this many scores (B * heads * Tq * Tk) two halves gain less than parking and
# restarting OpenBLAS's threads costs (~0.13 ms, backend/threads.py); the GPT workload has
# 1 M scores a layer.
MIN_SCORES_IN_HALVES = 1 << 19


class SoftmaxRowsFloat32(FastPath, SDPAttention):
    """The reference's arithmetic, with its softmax and softmax backward over the score rows
    as compiled loops on fast/vecmath.py's vectorised float32 exp."""

    kernels = ("softmax_rows", "softmax_backward_rows")
    why = ("attention softmax of (4096, 128) float32 rows 0.97 -> 0.51 ms, its backward "
           "0.27 -> 0.11 ms")

    @classmethod
    def supports(cls, q, k, v, *mask, graph, **params):
        return all(a.dtype == xp.float32 for a in (q, k, v) + mask)

    def softmax_(self, s):
        if not (s.flags.c_contiguous and s.size):  # the kernel runs over flat rows
            return super().softmax_(s)
        self.kernel("softmax_rows")(s.reshape(-1, s.shape[-1]))
        return s

    def softmax_backward_(self, dp, p):
        if not (dp.flags.c_contiguous and p.flags.c_contiguous and dp.size):
            return super().softmax_backward_(dp, p)
        self.kernel("softmax_backward_rows")(dp.reshape(-1, dp.shape[-1]),
                                             p.reshape(-1, p.shape[-1]))
        return dp


class CausalQueryBlocks(FastPath, SDPAttention):
    """Causal attention over square scores in query blocks: the queries of block i (rows
    start..end) see only the keys before ``end``, so each block multiplies, exponentiates and
    keeps only those columns: with n blocks, (n + 1) / 2n of the (T, T) scores."""

    why = ("GPT workload (B=16, h=4, T=128), one layer's attention forward+backward "
           "12 -> 9 ms in two blocks")

    @classmethod
    def supports(cls, q, k, v, *mask, scale, bias, is_causal, dropout_p, graph):
        # the blocks' gradients are summed into dk and dv whole: no broadcast leading dims
        return (is_causal and bias is None and not mask and q.shape[-2] == k.shape[-2] >= 2
                and q.shape[:-2] == k.shape[:-2] == v.shape[:-2])

    @classmethod
    def worth_it(cls, q, k, v, *mask, graph, **params):
        return q.shape[-2] >= 2 * MIN_CAUSAL_BLOCK

    def forward(self, q, k, v, *, scale, bias, is_causal, dropout_p):
        t = q.shape[-2]
        # drawn for the whole (T, T) scores, as the reference draws them
        self.keep = dropout_keep(q.shape[:-1] + (t,), dropout_p, q.dtype)
        qs = q * scale
        # K^T copied once: OpenBLAS multiplies by a contiguous (d, T) operand faster than by a
        # transposed view (GPT workload, both blocks: 0.82 -> 0.48 ms, for a 0.17 ms copy).
        kt = xp.ascontiguousarray(xp.swapaxes(k, -1, -2))  # (..., d, T)
        out = xp.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)  # (..., T, dv)
        self.blocks, self.p = _query_blocks(t), []
        for start, end in self.blocks:
            s = qs[..., start:end, :] @ kt[..., :end]  # (..., end - start, end)
            s += causal_bias(t, t, s.dtype.name)[start:end, :end]
            p = self.softmax_(s)
            self.p.append(p)
            xp.matmul(self._dropped(p, start, end), v[..., :end, :], out=out[..., start:end, :])
        self.q, self.k, self.v, self.scale = q, k, v, scale
        return out

    def backward(self, g):
        q, k, v, scale = self.q, self.k, self.v, self.scale
        need_q, need_k, need_v = self.needs_input_grad
        dq = xp.empty(q.shape, dtype=q.dtype) if need_q else None
        dk = dv = None
        if need_q or need_k:
            vt = xp.ascontiguousarray(xp.swapaxes(v, -1, -2))  # (..., dv, T): as K^T above
        # The last block first: it reads every key, so its products start dk and dv whole and
        # the earlier blocks add into their leading keys.
        for (start, end), p in reversed(list(zip(self.blocks, self.p))):
            g_block = g[..., start:end, :]  # (..., end - start, dv)
            if need_v:
                part = xp.swapaxes(self._dropped(p, start, end), -1, -2) @ g_block  # (..., end, dv)
                dv = part if dv is None else _add_leading(dv, part)
            if need_q or need_k:
                dp = g_block @ vt[..., :end]  # (..., end - start, end)
                if self.keep is not None:
                    dp *= self.keep[..., start:end, :end]
                ds = self.softmax_backward_(dp, p)
                if need_q:
                    xp.matmul(ds, k[..., :end, :], out=dq[..., start:end, :])
                if need_k:
                    part = xp.swapaxes(ds, -1, -2) @ q[..., start:end, :]  # (..., end, d)
                    dk = part if dk is None else _add_leading(dk, part)
        if dq is not None:
            dq *= scale
        if dk is not None:
            dk *= scale
        return dq, dk, dv

    def _dropped(self, p, start, end):
        """A block's probabilities after dropout."""
        return p if self.keep is None else p * self.keep[..., start:end, :end]


def _query_blocks(t):
    """(start, end) of each query block over T queries: as many blocks of MIN_CAUSAL_BLOCK
    queries or more as fit, up to MAX_CAUSAL_BLOCKS, and two at least (fewer queries than
    2 * MIN_CAUSAL_BLOCK come here only when a test forces the path)."""
    n = min(MAX_CAUSAL_BLOCKS, max(2, t // MIN_CAUSAL_BLOCK))
    bounds = [i * t // n for i in range(n + 1)]
    return [(start, end) for start, end in itertools.pairwise(bounds) if end > start]


def _add_leading(whole, part):
    """whole[..., :n, :] += part, n = part's keys: a block's gradient into the keys it saw."""
    whole[..., :part.shape[-2], :] += part
    return whole


class CausalQueryBlocksFloat32(CausalQueryBlocks, SoftmaxRowsFloat32):
    """The causal query blocks with the compiled float32 softmax rows (its ``why`` is the
    blocks')."""

    @classmethod
    def supports(cls, *arrays, graph, **params):
        return (CausalQueryBlocks.supports(*arrays, graph=graph, **params)
                and SoftmaxRowsFloat32.supports(*arrays, graph=graph, **params))


class AttentionInHalves(FastPath, SDPAttention):
    """The batch (the first dim) as two halves, one per core (backend/threads.py). Every
    sample's attention is independent of the others', so the halves are two smaller
    attentions with the same arithmetic, each run by the path one thread would run on the
    whole batch: the results are bit-identical to it. Each half's products run on one BLAS
    thread; the softmax kernels of both halves run at once."""

    why = ("GPT workload (B=16, h=4, T=128), one layer's attention forward+backward "
           "6.3 -> 4.6 ms, the training step 1.046x")

    @classmethod
    def supports(cls, q, k, v, *mask, scale, bias, is_causal, dropout_p, graph):
        # no dropout: its draws would depend on which half ran first; a mask that requires
        # grad would need its gradient summed over the halves
        return (dropout_p == 0 and not mask and q.ndim >= 3 and q.shape[0] >= 2
                and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
                and (bias is None or bias.ndim < q.ndim or bias.shape[0] in (1, q.shape[0])))

    @classmethod
    def worth_it(cls, q, k, v, *mask, graph, **params):
        scores = math.prod(q.shape[:-1]) * k.shape[-2]
        return scores >= MIN_SCORES_IN_HALVES and threads.available()

    def forward(self, q, k, v, *, scale, bias, is_causal, dropout_p):
        cut = q.shape[0] // 2
        self.rows = (slice(0, cut), slice(cut, q.shape[0]))
        params = dict(scale=scale, bias=bias, is_causal=is_causal, dropout_p=dropout_p)
        path = _one_thread_path((q, k, v), params, graph=bool(self.needs_input_grad))
        self.halves = (path(), path())
        out = xp.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)  # (B, ..., Tq, dv)

        def run(half, rows):
            half.needs_input_grad = self.needs_input_grad
            out[rows] = half.forward(q[rows], k[rows], v[rows],
                                     **dict(params, bias=_rows_of(bias, rows, q.ndim)))

        threads.run_pair(lambda: run(self.halves[0], self.rows[0]),
                         lambda: run(self.halves[1], self.rows[1]))
        self.shapes = (q.shape, k.shape, v.shape)
        return out

    def backward(self, g):
        grads = [None if not need else xp.empty(shape, dtype=g.dtype)
                 for need, shape in zip(self.needs_input_grad, self.shapes)]  # dq, dk, dv

        def run(half, rows):
            half.retains_graph = self.retains_graph
            for whole, part in zip(grads, half.backward(g[rows])):
                if whole is not None:
                    whole[rows] = part

        threads.run_pair(lambda: run(self.halves[0], self.rows[0]),
                         lambda: run(self.halves[1], self.rows[1]))
        if not self.retains_graph:
            self.halves = None
        return tuple(grads)


def _one_thread_path(arrays, params, graph):
    """The path ``choose`` would take for this call without the halves."""
    for path in dispatch.paths_of(SDPAttention):
        if (path is not AttentionInHalves and path.available()
                and path.supports(*arrays, graph=graph, **params)
                and path.worth_it(*arrays, graph=graph, **params)):
            return path
    return SDPAttention


def _rows_of(bias, rows, ndim):
    """A half's rows of a mask that differs between samples; a shared one as it is."""
    if bias is None or bias.ndim < ndim or bias.shape[0] == 1:
        return bias
    return bias[rows]


# Registered in the order ``choose`` tries them.
for _path in (AttentionInHalves, CausalQueryBlocksFloat32, CausalQueryBlocks, SoftmaxRowsFloat32):
    fast_path(_path)
