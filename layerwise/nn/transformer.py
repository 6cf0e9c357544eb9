"""Transformer encoder and decoder layers (Vaswani et al. 2017) and positional encodings.

Submodule names are PyTorch's (self_attn, multihead_attn, linear1, linear2, norm1..3,
dropout, dropout1..3), so a torch.nn.TransformerEncoderLayer / TransformerDecoderLayer state
dict loads unchanged, and so are the defaults: post-norm (``norm_first=False``) over
sequence-first (S, N, E) inputs (``batch_first=False``), ``dim_feedforward=2048``,
``dropout=0.1``, ``activation="relu"``, ``layer_norm_eps=1e-5``: code written for PyTorch
computes the same thing here. ``norm_first=True`` (pre-norm, Xiong et al. 2020) trains without
warm-up and is what GPT-2 and most modern models use; pass it, and ``batch_first=True`` for
(N, S, E) inputs.
"""

import copy
import math
import numbers

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor
from layerwise.nn import functional as F
from layerwise.nn.attention import MultiheadAttention
from layerwise.nn.container import ModuleList
from layerwise.nn.dropout import Dropout
from layerwise.nn.embedding import Embedding, positions
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.normalization import LayerNorm

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _check_sizes(layer, d_model, nhead, dim_feedforward, dropout):
    """The arguments' own checks, so a mistake names this layer rather than a part of it."""
    for name, n in (("d_model", d_model), ("nhead", nhead), ("dim_feedforward", dim_feedforward)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{layer} {name} must be a positive int, got {n!r}")
    if d_model % nhead:
        raise ValueError(f"{layer} d_model ({d_model}) must be divisible by nhead ({nhead})")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"{layer} dropout must be a number in [0, 1), got {dropout!r}")


def _activation(layer, activation):
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{layer} activation must be 'relu', 'gelu' or a callable, "
                         f"got {activation!r}")
    return _ACTIVATIONS[activation]


class _FeedForward(Module):
    """Shared by both layers: the position-wise feed-forward block, linear2(act(linear1(x)))."""

    def _ff_block(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerEncoderLayer(_FeedForward):
    """Self-attention then a feed-forward block, each inside a residual connection.

    post-norm (the default, as PyTorch): x = norm1(x + SA(x));  x = norm2(x + FF(x))
    pre-norm (norm_first=True):          x = x + SA(norm1(x));  x = x + FF(norm2(x))
    Inputs are (S, N, E), or (N, S, E) with batch_first=True, or unbatched (S, E).
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=None):
        super().__init__()
        _check_sizes(type(self).__name__, d_model, nhead, dim_feedforward, dropout)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(type(self).__name__, activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self.dropout2(self._ff_block(self.norm2(x)))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self.dropout2(self._ff_block(x)))


class TransformerDecoderLayer(_FeedForward):
    """Masked self-attention, cross-attention over ``memory`` (the encoder output), feed-forward.

    post-norm (the default, as PyTorch): x = norm1(x + SA(x)); x = norm2(x + CA(x, memory));
    x = norm3(x + FF(x)). pre-norm (norm_first=True): x += SA(norm1(x));
    x += CA(norm2(x), memory); x += FF(norm3(x)). Layouts as TransformerEncoderLayer.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, dtype=None):
        super().__init__()
        _check_sizes(type(self).__name__, d_model, nhead, dim_feedforward, dropout)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(type(self).__name__, activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=is_causal)[0]
        return self.dropout2(x)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask,
                                    memory_is_causal)
            return x + self.dropout3(self._ff_block(self.norm3(x)))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                           memory_is_causal))
        return self.norm3(x + self.dropout3(self._ff_block(x)))


class TransformerEncoder(Module):
    """``num_layers`` independent copies of ``encoder_layer`` (as torch: ``layers.{i}``), then
    an optional final ``norm`` (needed after pre-norm layers, whose output is not normalised)."""

    def __init__(self, encoder_layer, num_layers, norm=None):
        super().__init__()
        if not isinstance(encoder_layer, Module):
            raise TypeError(f"TransformerEncoder encoder_layer must be an nn.Module (a "
                            f"TransformerEncoderLayer), got {type(encoder_layer).__name__}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"TransformerEncoder num_layers must be a positive int, "
                             f"got {num_layers!r}")
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return x if self.norm is None else self.norm(x)


class SinusoidalPositionalEncoding(Module):
    """Adds the fixed encodings of Vaswani et al. (2017, section 3.5) to (B, T, C) inputs:
    PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)).

    The table is a non-persistent buffer: it is recomputed, not saved. ``offset`` shifts the
    positions, for inputs that continue a sequence (a KV cache). With ``batch_first=False``
    inputs are (T, B, C).
    """

    def __init__(self, d_model, max_len=5000, dropout=0.0, batch_first=True, dtype=None):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"SinusoidalPositionalEncoding needs an even d_model, got {d_model}")
        position = xp.arange(max_len, dtype=xp.float64)[:, None]  # (max_len, 1)
        freq = xp.exp(xp.arange(0, d_model, 2, dtype=xp.float64) * (-math.log(10000.0) / d_model))
        pe = xp.zeros((max_len, d_model))
        pe[:, 0::2] = xp.sin(position * freq)
        pe[:, 1::2] = xp.cos(position * freq)
        dtype = backend.to_dtype(dtype or backend.default_float())
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.register_buffer("pe", Tensor(pe.astype(dtype)), persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x, offset=0):
        t = x.shape[1] if self.batch_first else x.shape[0]
        if offset + t > self.max_len:
            raise ValueError(f"sequence positions {offset}..{offset + t - 1} exceed "
                             f"max_len={self.max_len} of SinusoidalPositionalEncoding; build it "
                             "with a larger max_len")
        pe = Tensor(self.pe.data[offset:offset + t].astype(x.dtype, copy=False))  # (T, C)
        return self.dropout(x + (pe if self.batch_first else pe.unsqueeze(1)))

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Embedding):
    """A learned vector per position (as BERT and GPT-2 use), added to (B, T, C) inputs.

    An nn.Embedding underneath, so its state dict key is ``weight`` (num_positions, C);
    ``offset`` starts the positions later, for a continued sequence.
    """

    def __init__(self, num_positions, embedding_dim, dtype=None):
        super().__init__(num_positions, embedding_dim, dtype=dtype)

    def forward(self, x, offset=0):
        t = x.shape[1]
        if offset + t > self.num_embeddings:
            raise ValueError(f"sequence positions {offset}..{offset + t - 1} exceed the "
                             f"{self.num_embeddings} learned positions")
        return x + super().forward(positions(offset, offset + t))  # (B, T, C) + (T, C)
