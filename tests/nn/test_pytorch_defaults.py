"""Layers, losses and optimizers that carry PyTorch's names take PyTorch's defaults and
parameter layouts, so code written for PyTorch computes the same thing here.

The defaults below are copied from the PyTorch 2.x documentation, not read from this code;
the transformer layers' defaults (post-norm over sequence-first input) are also checked by
what they compute, against a NumPy float64 transcription of PyTorch's formulas.
"""

import inspect
import math

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn as nn
import layerwise.nn.functional as F
import layerwise.optim as optim

TRANSFORMER_LAYER = dict(dim_feedforward=2048, dropout=0.1, activation="relu",
                         layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)
RNN = dict(num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False)
CONV = dict(stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode="zeros")
BATCHNORM = dict(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)

PYTORCH_DEFAULTS = [
    (nn.Linear, dict(bias=True)),
    (nn.Conv1d, CONV),
    (nn.Conv2d, CONV),
    (nn.MaxPool2d, dict(stride=None, padding=0, dilation=1, return_indices=False,
                        ceil_mode=False)),
    (nn.AvgPool2d, dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None)),
    (nn.BatchNorm1d, BATCHNORM),
    (nn.BatchNorm2d, BATCHNORM),
    (nn.LayerNorm, dict(eps=1e-5, elementwise_affine=True, bias=True)),
    (nn.RMSNorm, dict(eps=None, elementwise_affine=True)),
    (nn.Dropout, dict(p=0.5, inplace=False)),
    (nn.Embedding, dict(padding_idx=None)),
    (nn.RNN, dict(RNN, nonlinearity="tanh")),
    (nn.LSTM, RNN),
    (nn.GRU, RNN),
    (nn.MultiheadAttention, dict(dropout=0.0, bias=True, batch_first=False)),
    (nn.TransformerEncoderLayer, TRANSFORMER_LAYER),
    (nn.TransformerDecoderLayer, TRANSFORMER_LAYER),
    (nn.TransformerEncoder, dict(norm=None)),
    (nn.LeakyReLU, dict(negative_slope=0.01)),
    (nn.GELU, dict(approximate="none")),
    (nn.Softplus, dict(beta=1.0, threshold=20.0)),
    (nn.Flatten, dict(start_dim=1, end_dim=-1)),
    (nn.Upsample, dict(size=None, scale_factor=None, mode="nearest", align_corners=None)),
    (nn.CrossEntropyLoss, dict(weight=None, ignore_index=-100, reduction="mean",
                               label_smoothing=0.0)),
    (nn.NLLLoss, dict(weight=None, ignore_index=-100, reduction="mean")),
    (nn.BCEWithLogitsLoss, dict(weight=None, reduction="mean", pos_weight=None)),
    (nn.MSELoss, dict(reduction="mean")),
    (F.cross_entropy, dict(weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0)),
    (F.dropout, dict(p=0.5, training=True)),
    (F.gelu, dict(approximate="none")),
    (F.leaky_relu, dict(negative_slope=0.01)),
    (F.softplus, dict(beta=1.0, threshold=20.0)),
    (F.layer_norm, dict(weight=None, bias=None, eps=1e-5)),
    (nn.init.kaiming_uniform_, dict(a=0, mode="fan_in", nonlinearity="leaky_relu")),
    (nn.init.xavier_uniform_, dict(gain=1.0)),
    (nn.utils.clip_grad_norm_, dict(norm_type=2.0, error_if_nonfinite=False)),
    (optim.SGD, dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False)),
    (optim.Adam, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                      maximize=False)),
    (optim.AdamW, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                       amsgrad=False, maximize=False)),
]


@pytest.mark.parametrize("target, defaults", PYTORCH_DEFAULTS,
                         ids=[t.__qualname__ for t, _ in PYTORCH_DEFAULTS])
def test_signature_defaults_are_pytorchs(target, defaults):
    signature = inspect.signature(target)
    for name, value in defaults.items():
        assert name in signature.parameters, f"{target.__qualname__} has no {name}="
        assert signature.parameters[name].default == value, (
            f"{target.__qualname__}({name}=...) defaults to "
            f"{signature.parameters[name].default!r}, PyTorch's to {value!r}")


def test_parameter_layouts_are_pytorchs():
    e, h = 8, 5
    # (out_channels, in_channels / groups, kH, kW)
    assert nn.Conv2d(4, 6, (3, 5), groups=2).weight.shape == (6, 2, 3, 5)
    assert nn.Conv1d(4, 6, 3, groups=2).weight.shape == (6, 2, 3)
    lstm, gru = nn.LSTM(3, h, num_layers=2), nn.GRU(3, h)
    assert lstm.weight_ih_l0.shape == (4 * h, 3) and lstm.weight_hh_l1.shape == (4 * h, h)
    assert lstm.weight_ih_l1.shape == (4 * h, h) and lstm.bias_hh_l0.shape == (4 * h,)
    assert gru.weight_ih_l0.shape == (3 * h, 3) and gru.bias_ih_l0.shape == (3 * h,)
    mha = nn.MultiheadAttention(e, 2)
    assert mha.in_proj_weight.shape == (3 * e, e) and mha.out_proj.weight.shape == (e, e)
    embedding = nn.Embedding(6, 4, padding_idx=-1)
    assert embedding.padding_idx == 5 and not embedding.weight.data[5].any()
    layer = nn.TransformerEncoderLayer(e, 2, dim_feedforward=16)
    assert layer.linear1.weight.shape == (16, e) and layer.norm1.eps == 1e-5
    assert nn.BatchNorm1d(3).momentum == 0.1 and nn.BatchNorm1d(3).eps == 1e-5


# --- the transformer layers' default computation, against NumPy float64 ---------------------


def _np_layer_norm(x, norm):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * norm.weight.data + norm.bias.data


def _np_attention(mha, query, memory):
    """torch's multi_head_attention_forward for (L, N, E) query and (S, N, E) key = value."""
    e, h = mha.embed_dim, mha.num_heads
    d = e // h
    w, b = mha.in_proj_weight.data, mha.in_proj_bias.data
    q = query @ w[:e].T + b[:e]  # (L, N, E)
    k = memory @ w[e:2 * e].T + b[e:2 * e]  # (S, N, E)
    v = memory @ w[2 * e:].T + b[2 * e:]
    out = np.empty_like(q)
    for n in range(q.shape[1]):
        for j in range(h):
            cols = slice(j * d, (j + 1) * d)
            scores = q[:, n, cols] @ k[:, n, cols].T / math.sqrt(d)  # (L, S)
            p = np.exp(scores - scores.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, n, cols] = p @ v[:, n, cols]
    return out @ mha.out_proj.weight.data.T + mha.out_proj.bias.data


def _np_feed_forward(layer, x):
    hidden = np.maximum(x @ layer.linear1.weight.data.T + layer.linear1.bias.data, 0)  # relu
    return hidden @ layer.linear2.weight.data.T + layer.linear2.bias.data


def _random_norms(layer, rng):
    """Norm weights away from (1, 0), so that a norm in the wrong place shows."""
    for norm in (layer.norm1, layer.norm2, getattr(layer, "norm3", None)):
        if norm is not None:
            norm.weight.data[...] = rng.uniform(0.5, 1.5, norm.weight.shape)
            norm.bias.data[...] = rng.normal(0, 0.5, norm.bias.shape)


def test_default_encoder_layer_is_post_norm_over_sequence_first_input():
    lw.manual_seed(0)
    rng = np.random.default_rng(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16).double().eval()
    _random_norms(layer, rng)
    x = rng.standard_normal((5, 3, 8))  # (S, N, E)
    x1 = _np_layer_norm(x + _np_attention(layer.self_attn, x, x), layer.norm1)
    expected = _np_layer_norm(x1 + _np_feed_forward(layer, x1), layer.norm2)
    got = layer(lw.tensor(x)).detach().numpy()
    assert got.shape == (5, 3, 8)
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_default_decoder_layer_is_post_norm_over_sequence_first_input():
    lw.manual_seed(1)
    rng = np.random.default_rng(1)
    layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16).double().eval()
    _random_norms(layer, rng)
    tgt, memory = rng.standard_normal((4, 2, 8)), rng.standard_normal((6, 2, 8))  # (T|S, N, E)
    x = _np_layer_norm(tgt + _np_attention(layer.self_attn, tgt, tgt), layer.norm1)
    x = _np_layer_norm(x + _np_attention(layer.multihead_attn, x, memory), layer.norm2)
    expected = _np_layer_norm(x + _np_feed_forward(layer, x), layer.norm3)
    got = layer(lw.tensor(tgt), lw.tensor(memory)).detach().numpy()
    assert got.shape == (4, 2, 8)
    np.testing.assert_allclose(got, expected, atol=1e-10)
