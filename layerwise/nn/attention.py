"""MultiheadAttention with PyTorch's parameter layout and mask conventions.

Parameters: ``in_proj_weight`` (3E, E) holding W_q, W_k, W_v stacked, ``in_proj_bias`` (3E),
``out_proj.weight`` (E, E), ``out_proj.bias`` (E): a torch.nn.MultiheadAttention state dict
loads unchanged.

Masks here follow nn.MultiheadAttention, NOT F.scaled_dot_product_attention: a boolean
``attn_mask`` or ``key_padding_mask`` is True where attention is NOT allowed; float masks are
added to the scores. They are turned into one additive mask for the attention op.
"""

import math
import numbers

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.nn import functional as F
from layerwise.nn import init
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.ops.attention import scaled_dot_product_attention
from layerwise.ops.elementwise import where


def _additive(name, mask, dtype):
    """A PyTorch MHA mask (bool True = blocked, or float added) as a float Tensor, or None.
    A Tensor mask becomes one through ops, so that an exported graph computes it from its
    input instead of freezing the example's."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        mask = Tensor(xp.asarray(mask))
    if mask.dtype == bool:
        return where(mask, -math.inf, 0.0).to(dtype)
    if mask.dtype.kind == "f":
        return mask.to(dtype)
    raise TypeError(f"MultiheadAttention {name} must be boolean (True = not allowed to attend) or "
                    f"float (added to the scores), got dtype {mask.dtype}")


class MultiheadAttention(Module):
    """Attention over ``num_heads`` heads of size embed_dim // num_heads (Vaswani et al. 2017).

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights or None).
    Shapes: query (L, N, E), key/value (S, N, E), or (N, L, E) with ``batch_first=True``, or
    unbatched (L, E). key_padding_mask (N, S); attn_mask (L, S) or (N * num_heads, L, S).
    Weights are (N, L, S) averaged over heads, (N, num_heads, L, S) otherwise; like PyTorch
    they are taken after attention dropout. ``is_causal=True`` applies a causal mask (combined
    with any attn_mask) rather than only hinting that attn_mask is one.

    Set ``store_attn_weights = True`` to keep the per-head weights of the last call, detached,
    in ``last_attn_weights`` (N, num_heads, L, S), e.g. to plot them.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False, dtype=None):
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim <= 0:
            raise ValueError(f"MultiheadAttention embed_dim must be a positive int, "
                             f"got {embed_dim!r}")
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"MultiheadAttention num_heads must be a positive int, "
                             f"got {num_heads!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
                or not 0 <= dropout < 1:
            raise ValueError(f"MultiheadAttention dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = float(dropout), batch_first
        dtype = backend.to_dtype(dtype or backend.default_float())
        self.in_proj_weight = Parameter(xp.empty((3 * embed_dim, embed_dim), dtype=dtype))
        self.in_proj_bias = Parameter(xp.zeros(3 * embed_dim, dtype=dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.store_attn_weights = False
        self.last_attn_weights = None
        self._reset_parameters()

    def _reset_parameters(self):
        # As torch: Xavier-uniform over the stacked (3E, E) matrix, zero biases; out_proj.weight
        # keeps Linear's initialisation.
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, query, key, value):
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:  # self-attention: one (3E, E) product, then split
            return F.linear(query, w, b).chunk(3, dim=-1)
        if key is value:
            q = F.linear(query, w[:e], None if b is None else b[:e])
            return (q,) + tuple(F.linear(key, w[e:], None if b is None else b[e:]).chunk(2, dim=-1))
        return tuple(F.linear(x, w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e])
                     for i, x in enumerate((query, key, value)))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        for name, x in (("query", query), ("key", key), ("value", value)):
            check_tensor(x, "MultiheadAttention", name)
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention expects 3-D (batched) or 2-D (unbatched) query, "
                             f"key and value, got shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        dims = (query.shape[-1], key.shape[-1], value.shape[-1])
        if dims != (self.embed_dim,) * 3:
            raise ValueError(f"MultiheadAttention was built with embed_dim={self.embed_dim}; got "
                             f"query, key, value with last dims {dims}")
        self._check_lengths(query.shape, key.shape, value.shape, batched)
        same = query is key and key is value  # self-attention: project once
        if not batched:  # (L, E) -> (1, L, E)
            query = query.unsqueeze(0)
            key, value = (query, query) if same else (key.unsqueeze(0), value.unsqueeze(0))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.reshape(1, -1)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query = query.transpose(0, 1)
            key, value = (query, query) if same else (key.transpose(0, 1), value.transpose(0, 1))
        n, l, s, h = query.shape[0], query.shape[1], key.shape[1], self.num_heads

        mask = self._merge_masks(attn_mask, key_padding_mask, n, l, s, query.dtype)
        keep = need_weights or self.store_attn_weights
        dropout_p = self.dropout if self.training else 0.0
        q, k, v = self._project(query, key, value)
        q = q.reshape(n, l, h, self.head_dim).transpose(1, 2)  # (N, L, E) -> (N, h, L, hd)
        k = k.reshape(n, s, h, self.head_dim).transpose(1, 2)  # (N, S, E) -> (N, h, S, hd)
        v = v.reshape(n, s, h, self.head_dim).transpose(1, 2)

        result = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                              need_weights=keep, dropout_p=dropout_p)
        out, weights = result if keep else (result, None)
        out = out.transpose(1, 2).reshape(n, l, self.embed_dim)  # (N, h, L, hd) -> (N, L, E)
        out = self._finish(self.out_proj(out), batched)
        if self.store_attn_weights:
            self.last_attn_weights = weights.detach()
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # (N, h, L, S) -> (N, L, S)
        return out, weights.squeeze(0) if not batched else weights

    def _check_lengths(self, q, k, v, batched):
        """key and value need one length S and one batch N, and query the same N."""
        shapes = f"query {tuple(q)}, key {tuple(k)}, value {tuple(v)}"
        if k[:-1] != v[:-1]:
            raise ValueError(f"MultiheadAttention key and value must have the same shape but for "
                             f"the last dim (one value per key), got {shapes}")
        batch_dim = 0 if self.batch_first else 1
        if batched and q[batch_dim] != k[batch_dim]:
            layout = "(N, L, E)" if self.batch_first else "(L, N, E) (batch_first=False)"
            raise ValueError(f"MultiheadAttention query, key and value must have the same batch "
                             f"size N, laid out {layout}, got {shapes}")

    def _finish(self, out, batched):
        """(N, L, E) back to the caller's layout."""
        if not batched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)  # back to (L, N, E)

    def _merge_masks(self, attn_mask, key_padding_mask, n, l, s, dtype):
        parts = []
        a = _additive("attn_mask", attn_mask, dtype)
        if a is not None:
            if a.shape == (l, s):
                parts.append(a)
            elif a.shape == (n * self.num_heads, l, s):
                parts.append(a.reshape(n, self.num_heads, l, s))
            else:
                raise ValueError(f"MultiheadAttention attn_mask must be (L, S) = ({l}, {s}) or "
                                 f"(N * num_heads, L, S) = ({n * self.num_heads}, {l}, {s}), "
                                 f"got {tuple(a.shape)}")
        p = _additive("key_padding_mask", key_padding_mask, dtype)
        if p is not None:
            if p.shape != (n, s):
                raise ValueError(f"MultiheadAttention key_padding_mask must be (N, S) = "
                                 f"({n}, {s}), got {tuple(p.shape)}")
            parts.append(p[:, None, None, :])  # (N, S) -> (N, 1, 1, S)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
