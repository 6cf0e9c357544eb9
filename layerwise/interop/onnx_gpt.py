"""GPT to ONNX: layerwise.models.gpt's forward (no KV cache) written as ONNX nodes.

Batch and sequence length stay symbolic: positions come from Range(0, T) on the input's
shape, the causal mask from comparing two such ranges, and every Reshape uses 0 ("keep this
dimension") for B and T.
"""

import math

from layerwise import backend
from layerwise.backend import xp
from layerwise.interop.onnx_export import gelu_tanh, layer_norm, linear


def _i64(*values):
    return xp.array(values, dtype=backend.int64)


def _attention(g, attn, x, mask, neg):
    c, nh = attn.n_embd, attn.n_head
    hs = c // nh
    qkv, _ = linear(g, attn.c_attn, x, ("B", "T", c))  # (B, T, 3C)
    q, k, v = g.ops("Split", [qkv, g.const(_i64(c, c, c), "split")], 3, axis=2)
    heads = g.const(_i64(0, 0, nh, hs), "heads")
    q, k, v = (g.op("Reshape", [t, heads]) for t in (q, k, v))  # (B, T, nh, hs)
    q = g.op("Transpose", [q], perm=[0, 2, 1, 3])  # (B, nh, T, hs)
    k = g.op("Transpose", [k], perm=[0, 2, 3, 1])  # (B, nh, hs, T)
    v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, k]), g.const(xp.float32(1 / math.sqrt(hs)))])
    scores = g.op("Where", [mask, neg, scores])  # (B, nh, T, T), future positions at -inf
    y = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # (B, nh, T, hs)
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3])  # (B, T, nh, hs)
    y = g.op("Reshape", [y, g.const(_i64(0, 0, c), "merge")])  # (B, T, C)
    return linear(g, attn.c_proj, y, ("B", "T", c))[0]


def gpt(g, model, idx, dims):
    """Nodes for ``model`` on token ids named ``idx`` (B, T) -> logits (B, T, V)."""
    cfg = model.config
    tr = model.transformer
    length = g.op("Gather", [g.op("Shape", [idx]), g.const(xp.array(1, dtype=backend.int64))],
                  axis=0)  # T, a scalar
    pos = g.op("Range", [g.const(xp.array(0, dtype=backend.int64)), length,
                         g.const(xp.array(1, dtype=backend.int64))])  # (T,)
    rows = g.op("Unsqueeze", [pos, g.const(_i64(1))])  # (T, 1)
    cols = g.op("Unsqueeze", [pos, g.const(_i64(0))])  # (1, T)
    mask = g.op("Greater", [cols, rows])  # (T, T): True above the diagonal, the future
    neg = g.const(xp.float32(-xp.inf), "neg_inf")
    x = g.op("Add", [g.op("Gather", [g.const(tr.wte.weight, "wte"), idx]),
                     g.op("Gather", [g.const(tr.wpe.weight, "wpe"), pos])])  # (B, T, C)
    shape = tuple(dims) + (cfg.n_embd,)
    for block in tr.h:
        h, _ = layer_norm(g, block.ln_1, x, shape)
        x = g.op("Add", [x, _attention(g, block.attn, h, mask, neg)])
        h, _ = layer_norm(g, block.ln_2, x, shape)
        h, hshape = linear(g, block.mlp.c_fc, h, shape)
        h, _ = linear(g, block.mlp.c_proj, gelu_tanh(g, h), hshape)
        x = g.op("Add", [x, h])
    x, _ = layer_norm(g, tr.ln_f, x, shape)
    return linear(g, model.lm_head, x, shape)[0], tuple(dims) + (cfg.vocab_size,)
