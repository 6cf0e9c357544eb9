"""nn.MultiheadAttention, LayerNorm, RMSNorm and the transformer layers against PyTorch
fixtures (state dicts loaded unchanged; outputs, weights and every gradient), plus layouts,
masks, stored weights, positional encodings and the error messages."""

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import layerwise as lw
from layerwise.nn.attention import MultiheadAttention
from layerwise.nn.normalization import LayerNorm, RMSNorm
from layerwise.nn.transformer import (
    LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer,
)
from tests.ops.test_attention_cases import np_attention

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


def _fixture(name):
    return load_file(FIXTURES / f"attn_{name}.safetensors")


def _state(f):
    return {k: v for k, v in f.items() if "/" not in k}


def _check_against_fixture(f, module, results, inputs, atol=1e-5):
    loss = sum((results[k] * lw.tensor(f[f"probe/{k}"])).sum() for k in results)
    loss.backward()
    for k, value in results.items():
        assert value.shape == f[f"output/{k}"].shape, k
        np.testing.assert_allclose(value.detach().numpy(), f[f"output/{k}"], atol=atol, err_msg=k)
    for k, t in inputs.items():
        np.testing.assert_allclose(t.grad.numpy(), f[f"grad/{k}"], atol=atol, err_msg=k)
    names = [n for n, _ in module.named_parameters()]
    assert sorted(names) == sorted(_state(f))
    for n, p in module.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), f[f"grad/{n}"], atol=atol, err_msg=n)


def _inputs(f, *names):
    return {n: lw.tensor(f[f"input/{n}"], requires_grad=True) for n in names}


# --- against PyTorch -------------------------------------------------------------------------


def test_mha_cross_attention_matches_pytorch():
    f = _fixture("mha_cross")
    mha = MultiheadAttention(8, 2)  # time-major, as torch's default
    mha.load_state_dict(_state(f))
    x = _inputs(f, "query", "key", "value")
    masks = dict(key_padding_mask=lw.tensor(f["mask/key_padding_mask"]), attn_mask=lw.tensor(f["mask/attn_mask"]))
    out, weights = mha(x["query"], x["key"], x["value"], **masks)
    _, per_head = mha(x["query"], x["key"], x["value"], average_attn_weights=False, **masks)
    _check_against_fixture(f, mha, {"output": out, "weights": weights, "weights_per_head": per_head}, x)


def test_mha_self_attention_with_boolean_masks_matches_pytorch():
    f = _fixture("mha_self")
    mha = MultiheadAttention(12, 3, batch_first=True)
    mha.load_state_dict(_state(f))
    x = _inputs(f, "x")
    out, weights = mha(x["x"], x["x"], x["x"], key_padding_mask=lw.tensor(f["mask/key_padding_mask"]),
                       attn_mask=lw.tensor(f["mask/attn_mask"]))
    _check_against_fixture(f, mha, {"output": out, "weights": weights}, x)


@pytest.mark.parametrize("name,cls,args", [("layernorm", LayerNorm, (6,)),
                                           ("layernorm_2d", LayerNorm, ((3, 4),)),
                                           ("rmsnorm", RMSNorm, (5,))])
def test_norms_match_pytorch(name, cls, args):
    f = _fixture(name)
    module = cls(*args, eps=1e-3) if name == "layernorm_2d" else cls(*args)
    module.load_state_dict(_state(f))
    x = _inputs(f, "x")
    _check_against_fixture(f, module, {"output": module(x["x"])}, x)


def test_encoder_layer_matches_pytorch():
    f = _fixture("encoder_layer")
    layer = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu",
                                    batch_first=True, norm_first=True)
    layer.load_state_dict(_state(f))
    x = _inputs(f, "src")
    _check_against_fixture(f, layer, {"output": layer(x["src"], src_mask=lw.tensor(f["mask/src_mask"]))}, x)


def test_decoder_layer_matches_pytorch():
    f = _fixture("decoder_layer")
    layer = TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                    norm_first=True)
    layer.load_state_dict(_state(f))
    x = _inputs(f, "tgt", "memory")
    out = layer(x["tgt"], x["memory"], tgt_mask=lw.tensor(f["mask/tgt_mask"]),
                memory_key_padding_mask=lw.tensor(f["mask/memory_key_padding_mask"]))
    _check_against_fixture(f, layer, {"output": out}, x)


# --- MultiheadAttention behaviour ------------------------------------------------------------


def _np_mha(mha, q, k, v, blocked=None):
    """Per-head attention written out with NumPy: project, split heads, attend, merge, project."""
    e, h = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight.data.astype(np.float64), mha.in_proj_bias.data.astype(np.float64)
    proj = [x @ w[i * e:(i + 1) * e].T + b[i * e:(i + 1) * e] for i, x in enumerate((q, k, v))]
    heads = []
    for j in range(h):
        sl = slice(j * e // h, (j + 1) * e // h)
        out, _ = np_attention(proj[0][..., sl], proj[1][..., sl], proj[2][..., sl],
                              allowed=None if blocked is None else ~blocked)
        heads.append(out)
    merged = np.concatenate(heads, axis=-1)
    return merged @ mha.out_proj.weight.data.T + mha.out_proj.bias.data


def test_mha_matches_numpy_per_head_and_layouts_agree():
    lw.manual_seed(0)
    mha = MultiheadAttention(6, 3, batch_first=True).to(lw.float64)
    mha.in_proj_bias.data[:] = np.linspace(-1, 1, 18)
    mha.out_proj.bias.data[:] = np.linspace(1, -1, 6)
    rng = np.random.default_rng(0)
    q, kv = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 4, 6))
    blocked = np.zeros((2, 4), bool)
    blocked[1, 2:] = True
    out, _ = mha(lw.tensor(q), lw.tensor(kv), lw.tensor(kv), key_padding_mask=lw.tensor(blocked))
    expected = _np_mha(mha, q, kv, kv, blocked=blocked[:, None, :])
    np.testing.assert_allclose(out.data, expected, atol=1e-12)

    mha.batch_first = False  # the same weights on time-major input give the transposed result
    out_t, _ = mha(lw.tensor(q.transpose(1, 0, 2)), lw.tensor(kv.transpose(1, 0, 2)),
                   lw.tensor(kv.transpose(1, 0, 2)), key_padding_mask=lw.tensor(blocked))
    np.testing.assert_allclose(out_t.data.transpose(1, 0, 2), expected, atol=1e-12)

    single, w = mha(lw.tensor(q[0]), lw.tensor(kv[0]), lw.tensor(kv[0]))  # unbatched (L, E)
    np.testing.assert_allclose(single.data, _np_mha(mha, q[0], kv[0], kv[0]), atol=1e-12)
    assert w.shape == (3, 4)


def test_mha_self_attention_fast_path_equals_separate_projections():
    lw.manual_seed(1)
    mha = MultiheadAttention(8, 2, batch_first=True)
    x = lw.randn(2, 5, 8)
    same, _ = mha(x, x, x, is_causal=True)  # one (3E, E) projection, heads split by views
    fused, _ = mha(x, x, x, is_causal=True, need_weights=False)  # one attention node
    copies, _ = mha(x, x + 0.0, x * 1.0, is_causal=True)  # three projections
    np.testing.assert_allclose(same.data, copies.data, atol=1e-6)
    np.testing.assert_allclose(fused.data, copies.data, atol=1e-6)


def test_mha_weights_need_weights_and_stored_weights():
    lw.manual_seed(2)
    mha = MultiheadAttention(8, 4, batch_first=True)
    x = lw.randn(3, 5, 8)
    out, avg = mha(x, x, x, is_causal=True)
    _, per_head = mha(x, x, x, is_causal=True, average_attn_weights=False)
    assert avg.shape == (3, 5, 5) and per_head.shape == (3, 4, 5, 5)
    np.testing.assert_allclose(per_head.data.mean(axis=1), avg.data, atol=1e-6)
    np.testing.assert_allclose(per_head.data.sum(-1), 1, atol=1e-6)
    assert np.all(np.triu(per_head.data, k=1) == 0)  # causal: no weight on future keys

    out2, none = mha(x, x, x, is_causal=True, need_weights=False)
    assert none is None and mha.last_attn_weights is None
    np.testing.assert_allclose(out2.data, out.data, atol=1e-6)
    mha.store_attn_weights = True
    mha(x, x, x, is_causal=True, need_weights=False)
    np.testing.assert_allclose(mha.last_attn_weights.data, per_head.data, atol=1e-6)
    assert not mha.last_attn_weights.requires_grad


def test_mha_state_dict_layout_and_init():
    lw.manual_seed(0)
    mha = MultiheadAttention(16, 4)
    assert list(mha.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert mha.in_proj_weight.shape == (48, 16) and mha.in_proj_bias.shape == (48,)
    bound = math.sqrt(6 / (16 + 48))  # xavier_uniform over the stacked (3E, E) matrix
    assert np.abs(mha.in_proj_weight.data).max() <= bound and np.abs(mha.in_proj_weight.data).max() > 0.9 * bound
    assert not mha.in_proj_bias.data.any() and not mha.out_proj.bias.data.any()
    no_bias = MultiheadAttention(16, 4, bias=False)
    assert list(no_bias.state_dict()) == ["in_proj_weight", "out_proj.weight"]


def test_mha_dropout_only_in_training():
    lw.manual_seed(3)
    mha = MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    x = lw.randn(2, 6, 8)
    a, _ = mha(x, x, x)
    b, _ = mha(x, x, x)
    assert not np.allclose(a.data, b.data)
    mha.eval()
    c, _ = mha(x, x, x)
    d, _ = mha(x, x, x)
    np.testing.assert_array_equal(c.data, d.data)


def test_mha_fully_padded_sequence_gives_finite_output():
    lw.manual_seed(4)
    mha = MultiheadAttention(4, 2, batch_first=True)
    x = lw.randn(2, 3, 4)
    pad = lw.tensor([[False, False, True], [True, True, True]])
    out, w = mha(x, x, x, key_padding_mask=pad)
    assert np.isfinite(out.data).all()
    np.testing.assert_array_equal(w.data[1], 0)  # PyTorch would give NaN here
    np.testing.assert_allclose(out.data[1], np.broadcast_to(mha.out_proj.bias.data, (3, 4)))


def test_mha_errors():
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(3\)"):
        MultiheadAttention(10, 3)
    mha = MultiheadAttention(8, 2, batch_first=True)
    x = lw.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r"embed_dim=8.*6"):
        mha(lw.randn(2, 3, 6), x, x)
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(N, S\) = \(2, 3\), got \(3, 2\)"):
        mha(x, x, x, key_padding_mask=lw.ones(3, 2).bool())
    with pytest.raises(ValueError, match=r"attn_mask must be \(L, S\) = \(3, 3\)"):
        mha(x, x, x, attn_mask=lw.ones(2, 3).bool())
    with pytest.raises(TypeError, match="int64"):
        mha(x, x, x, attn_mask=lw.ones(3, 3).long())


def test_mha_3d_attn_mask_per_head():
    lw.manual_seed(5)
    mha = MultiheadAttention(4, 2, batch_first=True)
    x = lw.randn(2, 3, 4)
    mask = np.zeros((4, 3, 3), bool)  # (N * heads, L, S): block key 0 for head 1 of sample 0
    mask[1, :, 0] = True
    _, w = mha(x, x, x, attn_mask=lw.tensor(mask), average_attn_weights=False)
    np.testing.assert_array_equal(w.data[0, 1, :, 0], 0)
    assert (w.data[0, 0, :, 0] > 0).all() and (w.data[1, :, :, 0] > 0).all()


# --- norms -------------------------------------------------------------------------------------


def test_norm_parameters_and_options():
    ln = LayerNorm(5)
    assert list(ln.state_dict()) == ["weight", "bias"]
    np.testing.assert_array_equal(ln.weight.data, 1)
    np.testing.assert_array_equal(ln.bias.data, 0)
    assert list(LayerNorm(5, bias=False).state_dict()) == ["weight"]
    assert list(LayerNorm(5, elementwise_affine=False).state_dict()) == []
    assert list(RMSNorm(5).state_dict()) == ["weight"]
    assert list(RMSNorm((2, 5), elementwise_affine=False).state_dict()) == []
    x = lw.randn(3, 5) * 4 + 2
    y = LayerNorm(5, elementwise_affine=False)(x).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-3)
    r = RMSNorm(5)(x).data
    np.testing.assert_allclose((r**2).mean(-1), 1, atol=1e-4)
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm(0)
    with pytest.raises(ValueError, match=r"\(4,\).*\(3, 5\)"):
        LayerNorm(4)(x)


def test_rmsnorm_default_eps_is_machine_epsilon():
    x = lw.tensor(np.full((1, 4), 1e-4), dtype=lw.float32)
    expected = 1e-4 / np.sqrt(1e-8 + np.finfo(np.float32).eps)
    np.testing.assert_allclose(RMSNorm(4)(x).data, expected, rtol=1e-4)


# --- transformer layers and positions --------------------------------------------------------


def test_encoder_layer_post_norm_and_time_major_options():
    lw.manual_seed(6)
    pre = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                  norm_first=True)
    post = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                   norm_first=False)
    post.load_state_dict(pre.state_dict())
    x = lw.randn(2, 4, 8)
    a, b = pre(x).data, post(x).data
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b.mean(-1), 0, atol=1e-5)  # post-norm ends with a LayerNorm
    tm = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=False,
                                 norm_first=True)
    tm.load_state_dict(pre.state_dict())
    np.testing.assert_allclose(tm(x.transpose(0, 1)).data.transpose(1, 0, 2), a, atol=1e-6)


def test_encoder_padding_does_not_leak_into_real_tokens():
    lw.manual_seed(7)
    layer = TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                    norm_first=True)
    enc = TransformerEncoder(layer, 2, norm=LayerNorm(8))
    assert enc.layers[0].linear1.weight is not enc.layers[1].linear1.weight
    assert "layers.1.self_attn.in_proj_weight" in enc.state_dict() and "norm.weight" in enc.state_dict()
    x = lw.randn(1, 5, 8)
    pad = lw.tensor([[False, False, False, True, True]])
    out = enc(x, src_key_padding_mask=pad).data
    garbage = x.data.copy()
    garbage[0, 3:] = 100.0
    out2 = enc(lw.tensor(garbage), src_key_padding_mask=pad).data
    np.testing.assert_allclose(out[0, :3], out2[0, :3], atol=1e-5)


def test_sinusoidal_encoding_matches_the_formula():
    pe = SinusoidalPositionalEncoding(6, max_len=10)
    x = lw.zeros(2, 4, 6)
    got = pe(x, offset=3).data
    for pos in range(4):
        for i in range(6):
            angle = (pos + 3) / 10000 ** (2 * (i // 2) / 6)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            np.testing.assert_allclose(got[:, pos, i], expected, atol=1e-6)
    assert len(pe.state_dict()) == 0  # a non-persistent buffer: recomputed, not saved
    with pytest.raises(ValueError, match="max_len=10"):
        pe(lw.zeros(1, 8, 6), offset=3)


def test_learned_positions_add_rows_of_the_table_and_learn():
    lw.manual_seed(8)
    pos = LearnedPositionalEmbedding(7, 3)
    assert list(pos.state_dict()) == ["weight"]
    x = lw.randn(2, 4, 3)
    out = pos(x, offset=2)
    np.testing.assert_allclose(out.data, x.data + pos.weight.data[2:6], atol=1e-6)
    out.sum().backward()
    expected = np.zeros((7, 3))
    expected[2:6] = 2  # two sequences in the batch
    np.testing.assert_allclose(pos.weight.grad.data, expected)
    with pytest.raises(ValueError, match="7 learned positions"):
        pos(lw.randn(1, 6, 3), offset=2)
