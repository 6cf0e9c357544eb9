"""Scaled dot-product attention, layer norm and RMS norm through the op harness: forward vs an
independent NumPy float64 reference, gradients vs central differences, and each fast path of
ops/fast/attention.py forced against the reference (the causal cases with Tq = Tk reach the
query blocks, batches of 2 the halves, float32 the compiled rows). Plus what the harness
cannot express: fully masked rows, the fused and composed paths agreeing (with dropout too),
a differentiable float mask, and the error messages."""

import math

import numpy as np
import pytest

import layerwise as lw
from layerwise.ops.attention import scaled_dot_product_attention as sdpa
from layerwise.ops.norm import layer_norm, rms_norm
from tests.harness import OpCase, harness_tests


# --- NumPy references, written element by element where a vectorised form could share a bug ----


def np_attention(q, k, v, allowed=None, bias=None, scale=None):
    """softmax over keys of q.k * scale (+ bias), restricted to ``allowed``; rows with nothing
    allowed are zero. Loops over the query/key grid to build the scores."""
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    scores = np.zeros(lead + (tq, tk))
    for i in range(tq):
        for j in range(tk):
            scores[..., i, j] = (q[..., i, :] * k[..., j, :]).sum(-1) * scale
    if bias is not None:
        scores = scores + bias
    allowed = np.ones(scores.shape, bool) if allowed is None else np.broadcast_to(allowed, scores.shape)
    weights = np.zeros_like(scores)
    for idx in np.ndindex(scores.shape[:-1]):
        ok = allowed[idx] & np.isfinite(scores[idx])
        if ok.any():
            e = np.exp(scores[idx][ok] - scores[idx][ok].max())
            weights[idx][ok] = e / e.sum()
    return weights @ v, weights


def causal_allowed(tq, tk):
    """Query i (of the last tq positions) may see key j when j <= i + tk - tq."""
    return np.array([[j <= i + tk - tq for j in range(tk)] for i in range(tq)])


def heads_attention(qkv, heads, **kwargs):
    """Multi-head self-attention from a packed (B, T, 3C) q | k | v, as a PyTorch user writes
    it (nanoGPT): split, view to heads, attention, heads merged back -> (B, T, C)."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    q, k, v = (x.view(b, t, heads, c // heads).transpose(1, 2) for x in qkv.split(c, dim=2))
    return sdpa(q, k, v, **kwargs).transpose(1, 2).contiguous().view(b, t, c)


def np_packed(qkv, heads, allowed=None, bias=None):
    """(B, T, 3C) q | k | v -> heads -> attention -> (B, T, C), by slicing head by head."""
    c = qkv.shape[-1] // 3
    hd = c // heads
    out = np.zeros(qkv.shape[:-1] + (c,))
    for h in range(heads):
        q, k, v = (qkv[..., i * c + h * hd:i * c + (h + 1) * hd] for i in range(3))
        a = None if allowed is None else np.broadcast_to(allowed, (qkv.shape[0], heads) + allowed.shape[-2:])[:, h]
        b = None if bias is None else np.broadcast_to(bias, (qkv.shape[0], heads) + bias.shape[-2:])[:, h]
        out[..., h * hd:(h + 1) * hd] = np_attention(q, k, v, allowed=a, bias=b)[0]
    return out


def np_layer_norm(x, n_dims, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - n_dims, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def np_rms_norm(x, w=None, eps=None):
    eps = np.finfo(x.dtype).eps if eps is None else eps
    return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps) * (1 if w is None else w)


_rng = np.random.default_rng(42)
BOOL_MASK = _rng.random((3, 5)) > 0.3  # (Tq, Tk), True = attend
BOOL_MASK[:, 0] = True  # every row attends somewhere
FLOAT_MASK = _rng.standard_normal((3, 5))
PAD4 = np.array([[True] * 4, [True, True, False, False]])[:, None, None, :]  # (B, 1, 1, T) for T = 4
PAD_MASK = np.array([[True] * 5, [True, True, True, False, False]])[:, None, None, :]  # (B, 1, 1, Tk)

QKV = [((2, 2, 3, 4), (2, 2, 3, 4), (2, 2, 3, 4)), ((1, 3, 4), (1, 3, 4), (1, 3, 2))]
QKV5 = [((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3))]  # Tq = 3, Tk = 5
QK5 = [((2, 2, 3, 4), (2, 2, 5, 4))]  # the weights' cases: the keys are the values too
# causal query blocks: two of 35 queries, four of 32-33 (uneven boundaries)
QKV_LONG = [((1, 1, 70, 2),) * 3, ((1, 1, 131, 2),) * 3]

CASES = [
    OpCase("sdpa", lambda q, k, v: sdpa(q, k, v), lambda q, k, v: np_attention(q, k, v)[0], QKV),
    OpCase("sdpa_scale", lambda q, k, v: sdpa(q, k, v, scale=0.3),
           lambda q, k, v: np_attention(q, k, v, scale=0.3)[0], QKV[:1]),
    OpCase("sdpa_causal", lambda q, k, v: sdpa(q, k, v, is_causal=True),
           lambda q, k, v: np_attention(q, k, v, allowed=causal_allowed(q.shape[-2], k.shape[-2]))[0], QKV + QKV5),
    OpCase("sdpa_bool_mask", lambda q, k, v: sdpa(q, k, v, attn_mask=lw.tensor(BOOL_MASK)),
           lambda q, k, v: np_attention(q, k, v, allowed=BOOL_MASK)[0], QKV5),
    OpCase("sdpa_float_mask", lambda q, k, v: sdpa(q, k, v, attn_mask=lw.tensor(FLOAT_MASK)),
           lambda q, k, v: np_attention(q, k, v, bias=FLOAT_MASK)[0], QKV5),
    OpCase("sdpa_padding_mask", lambda q, k, v: sdpa(q, k, v, attn_mask=lw.tensor(PAD_MASK)),
           lambda q, k, v: np_attention(q, k, v, allowed=PAD_MASK)[0], QKV5),
    OpCase("sdpa_padding_and_causal", lambda q, k, v: sdpa(q, k, v, attn_mask=lw.tensor(PAD_MASK), is_causal=True),
           lambda q, k, v: np_attention(q, k, v, allowed=PAD_MASK & causal_allowed(3, 5))[0], QKV5),
    OpCase("sdpa_causal_long", lambda q, k, v: sdpa(q, k, v, is_causal=True),
           lambda q, k, v: np_attention(q, k, v, allowed=causal_allowed(q.shape[-2], k.shape[-2]))[0], QKV_LONG),
    OpCase("sdpa_weights", lambda q, k: sdpa(q, k, k, attn_mask=lw.tensor(BOOL_MASK), need_weights=True)[1],
           lambda q, k: np_attention(q, k, k, allowed=BOOL_MASK)[1], QK5),
    OpCase("sdpa_composed_out", lambda q, k, v: sdpa(q, k, v, is_causal=True, need_weights=True)[0],
           lambda q, k, v: np_attention(q, k, v, allowed=causal_allowed(3, 5))[0], QKV5),
    OpCase("sdpa_grad_mask", lambda q, k, v, m: sdpa(q, k, v, attn_mask=m),
           lambda q, k, v, m: np_attention(q, k, v, bias=m)[0], [((2, 3, 4), (2, 5, 4), (2, 5, 2), (3, 5))]),
    OpCase("sdpa_grad_mask_weights", lambda q, k, m: sdpa(q, k, k, attn_mask=m, need_weights=True)[1],
           lambda q, k, m: np_attention(q, k, k, bias=m)[1], [((2, 3, 4), (2, 5, 4), (2, 1, 5))]),
    OpCase("heads", lambda x: heads_attention(x, 2), lambda x: np_packed(x, 2), [((2, 4, 12),)]),
    OpCase("heads_causal", lambda x: heads_attention(x, 2, is_causal=True),
           lambda x: np_packed(x, 2, allowed=causal_allowed(4, 4)), [((2, 4, 12),)]),
    OpCase("heads_causal_padding", lambda x: heads_attention(x, 3, attn_mask=lw.tensor(PAD4), is_causal=True),
           lambda x: np_packed(x, 3, allowed=PAD4 & causal_allowed(4, 4)), [((2, 4, 9),)]),
    OpCase("heads_grad_mask", lambda x, m: heads_attention(x, 2, attn_mask=m),
           lambda x, m: np_packed(x, 2, bias=m), [((2, 4, 12), (4, 4)), ((1, 3, 6), (2, 3, 3))]),
    OpCase("layer_norm", lambda x, w, b: layer_norm(x, x.shape[-1:], w, b),
           lambda x, w, b: np_layer_norm(x, 1, w, b), [((3, 4), (4,), (4,)), ((2, 3, 5), (5,), (5,))]),
    OpCase("layer_norm_2d", lambda x, w, b: layer_norm(x, (3, 4), w, b, eps=1e-3),
           lambda x, w, b: np_layer_norm(x, 2, w, b, eps=1e-3), [((2, 3, 4), (3, 4), (3, 4))]),
    OpCase("layer_norm_plain", lambda x: layer_norm(x, 5), lambda x: np_layer_norm(x, 1), [((3, 5),), ((5,),)]),
    OpCase("layer_norm_no_bias", lambda x, w: layer_norm(x, 4, w), lambda x, w: np_layer_norm(x, 1, w), [((3, 4), (4,))]),
    OpCase("rms_norm", lambda x, w: rms_norm(x, x.shape[-1:], w), lambda x, w: np_rms_norm(x, w),
           [((3, 4), (4,)), ((2, 3, 5), (5,))]),
    OpCase("rms_norm_plain", lambda x: rms_norm(x, 4, eps=1e-2), lambda x: np_rms_norm(x, eps=1e-2), [((3, 4),)]),
]

(test_forward_matches_numpy, test_gradient_matches_finite_differences,
 test_fast_path_matches_reference) = harness_tests(CASES)


# --- beyond the harness ----------------------------------------------------------------------


def _qkv(shape_q, shape_k, dv, seed=0, dtype=lw.float64):
    rng = np.random.default_rng(seed)
    q = lw.tensor(rng.standard_normal(shape_q), dtype=dtype, requires_grad=True)
    k = lw.tensor(rng.standard_normal(shape_k), dtype=dtype, requires_grad=True)
    v = lw.tensor(rng.standard_normal(shape_k[:-1] + (dv,)), dtype=dtype, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_give_zeros_and_zero_gradients(need_weights):
    q, k, v = _qkv((2, 1, 3, 4), (2, 1, 5, 4), 3)
    mask = np.ones((2, 1, 3, 5), bool)
    mask[0, 0, 1] = False  # batch 0, query 1 sees nothing
    mask[1, 0, :, :] = False  # batch 1 sees nothing at all
    out = sdpa(q, k, v, attn_mask=lw.tensor(mask), need_weights=need_weights)
    out = out[0] if need_weights else out
    assert np.isfinite(out.data).all()
    np.testing.assert_array_equal(out.data[0, 0, 1], 0)
    np.testing.assert_array_equal(out.data[1], 0)
    expected, _ = np_attention(q.data[0], k.data[0], v.data[0], allowed=mask[0])
    np.testing.assert_allclose(out.data[0], expected, atol=1e-12)
    out.sum().backward()
    for t in (q, k, v):
        assert np.isfinite(t.grad.data).all()
    np.testing.assert_array_equal(q.grad.data[1], 0)  # nothing attended: no influence
    np.testing.assert_array_equal(v.grad.data[1], 0)


def test_float_minus_inf_mask_rows_are_zero_too():
    q, k, v = _qkv((1, 2, 4), (1, 3, 4), 2)
    mask = np.zeros((2, 3))
    mask[1] = -np.inf
    out = sdpa(q, k, v, attn_mask=lw.tensor(mask))
    np.testing.assert_array_equal(out.data[0, 1], 0)
    np.testing.assert_allclose(out.data[0, 0], np_attention(q.data, k.data, v.data)[0][0, 0], atol=1e-12)


@pytest.mark.parametrize("dtype", [lw.float32, lw.float64])
def test_fused_and_composed_paths_agree_with_the_same_dropout(dtype):
    """Both paths draw the dropout mask from the global generator in the same shape, so with one
    seed they drop the same weights; outputs and all gradients must agree."""
    results = []
    for need_weights in (False, True):
        q, k, v = _qkv((2, 2, 6, 4), (2, 2, 6, 4), 3, dtype=dtype)
        lw.manual_seed(7)
        out = sdpa(q, k, v, is_causal=True, dropout_p=0.4, need_weights=need_weights)
        out = out[0] if need_weights else out
        (out * lw.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape), dtype=dtype)).sum().backward()
        results.append([out.data, q.grad.data, k.grad.data, v.grad.data])
    tol = 1e-5 if dtype == lw.float32 else 1e-12
    for a, b in zip(*results):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, atol=tol)
    # and the dropout did something: it differs from the no-dropout output
    q, k, v = _qkv((2, 2, 6, 4), (2, 2, 6, 4), 3, dtype=dtype)
    assert not np.allclose(sdpa(q, k, v, is_causal=True).data, results[0][0])


def test_heads_as_views_of_a_packed_tensor_and_as_copies_agree_with_the_same_dropout():
    """q, k, v as strided views of one (B, T, 3C) projection (as a GPT passes them) give the
    outputs, gradients and dropout draws of the same heads as contiguous copies."""
    qkv_data = np.random.default_rng(5).standard_normal((2, 5, 12))
    probe = lw.tensor(np.linspace(-1, 1, 40).reshape(2, 5, 4))
    outs = []
    for views in (True, False):
        qkv = lw.tensor(qkv_data, requires_grad=True)
        q, k, v = (t.view(2, 5, 2, 2).transpose(1, 2) for t in qkv.split(4, dim=2))
        if views:
            assert not q.data.flags.c_contiguous
        else:
            q, k, v = (lw.tensor(np.ascontiguousarray(t.data), requires_grad=True)
                       for t in (q, k, v))
        lw.manual_seed(9)
        out = sdpa(q, k, v, is_causal=True, dropout_p=0.3).transpose(1, 2).reshape(2, 5, 4)
        (out * probe).sum().backward()
        grads = qkv.grad.data if views else np.concatenate(
            [t.grad.data.transpose(0, 2, 1, 3).reshape(2, 5, 4) for t in (q, k, v)], axis=2)
        outs.append((out.data, grads))
    np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-12)
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-12)


def test_dropout_gradient_matches_finite_differences():
    def fn(q, k, v):
        lw.manual_seed(3)  # the same dropout mask on every evaluation
        return sdpa(q, k, v, is_causal=True, dropout_p=0.3)

    assert lw.autograd.gradcheck(fn, list(_qkv((1, 2, 4, 3), (1, 2, 4, 3), 2)))


def test_dropout_keeps_expectation():
    q, k, v = _qkv((1, 1, 4, 3), (1, 1, 6, 3), 2)
    ones_v = lw.ones(1, 1, 6, 1, dtype=lw.float64)
    lw.manual_seed(0)
    rows = np.stack([sdpa(q, k, ones_v, dropout_p=0.5).data for _ in range(2000)])
    # softmax rows sum to 1, so with inverted dropout each output averages to 1
    np.testing.assert_allclose(rows.mean(axis=0), 1.0, atol=0.05)
    assert set(np.unique(np.round(rows, 12)).tolist()) != {1.0}


def test_causal_with_cache_alignment_matches_full_sequence():
    """The last 2 queries against all 5 keys (a KV cache) equal rows 3..4 of full attention."""
    q, k, v = _qkv((1, 2, 5, 4), (1, 2, 5, 4), 3)
    full = sdpa(q, k, v, is_causal=True).data
    tail = sdpa(q[:, :, 3:], k, v, is_causal=True).data
    np.testing.assert_allclose(tail, full[:, :, 3:], atol=1e-12)


def test_default_scale_is_one_over_sqrt_d():
    q, k, v = _qkv((2, 3, 9), (2, 4, 9), 2)
    np.testing.assert_allclose(sdpa(q, k, v).data, sdpa(q, k, v, scale=1 / 3).data, atol=1e-14)


def test_errors_quote_shapes():
    q, k, v = _qkv((2, 3, 4), (2, 5, 4), 2)
    with pytest.raises(ValueError, match=r"value \(..., Tk, dv\) = \(2, 4, 2\)"):
        sdpa(q, k, v[:, :4])
    with pytest.raises(ValueError, match=r"attn_mask of shape \(4, 5\).*\(2, 3, 5\)"):
        sdpa(q, k, v, attn_mask=lw.ones(4, 5).bool())
    with pytest.raises(TypeError, match="int64"):
        sdpa(q, k, v, attn_mask=lw.ones(3, 5).long())
    with pytest.raises(ValueError, match="more queries"):
        sdpa(k, q, q, is_causal=True)
    with pytest.raises(ValueError, match="dropout_p"):
        sdpa(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match=r"query and key need the same d"):
        sdpa(q, k[..., :3], v)
    with pytest.raises(ValueError, match="normalized_shape"):
        layer_norm(q, (3,))
    with pytest.raises(ValueError, match="weight"):
        rms_norm(q, 4, lw.ones(3))


def _grads_of(fn, arrays, probe):
    """Output and input gradients of sum(fn(*tensors) * probe)."""
    tensors = [lw.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * lw.tensor(probe)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("t", [64, 71, 96, 131])  # 2, 2, 3 and 4 query blocks
def test_causal_fast_path_matches_the_masked_computation(t, dropout_p):
    """From T=64 a plain causal mask takes the query-block path; the same mask given
    explicitly takes the general one. Same outputs, same gradients, same dropout draws."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 3, t, 8)) for _ in range(3))
    probe = rng.standard_normal((2, 3, t, 8))
    explicit = lw.tensor(np.where(np.tril(np.ones((t, t), bool)), 0.0, -np.inf))
    results = []
    for mask in (None, explicit):
        lw.manual_seed(11)
        results.append(_grads_of(
            lambda a, b, c: sdpa(a, b, c, attn_mask=mask, is_causal=mask is None,
                                 dropout_p=dropout_p), (q, k, v), probe))
    for fast, general in zip(*results):
        np.testing.assert_allclose(fast, general, rtol=1e-12, atol=1e-12)


def test_heads_causal_fast_path_matches_the_masked_computation():
    rng = np.random.default_rng(6)
    qkv, probe = rng.standard_normal((2, 80, 3 * 12)), rng.standard_normal((2, 80, 12))
    explicit = lw.tensor(np.where(np.tril(np.ones((80, 80), bool)), 0.0, -np.inf))
    fast = _grads_of(lambda x: heads_attention(x, 3, is_causal=True), (qkv,), probe)
    general = _grads_of(lambda x: heads_attention(x, 3, attn_mask=explicit), (qkv,), probe)
    for a, b in zip(fast, general):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
