"""The attention's fast paths (layerwise/ops/fast/attention.py) forced against the reference op
and float64, on inputs that reach them: special values in the scores, causal query blocks
with dropout, the batch in two halves bit for bit, and which path a call gets."""

import itertools

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.models import GPT, GPTConfig
from layerwise.ops.attention import SDPAttention
from layerwise.ops.attention import scaled_dot_product_attention as sdpa
from layerwise.ops.fast import attention as fast
from tests.ops.fast.common import assert_close, needs, outputs_and_grads, path_and_reference
from tests.ops.test_attention_cases import heads_attention, np_attention


def _special_scores_mask():
    """A float mask (6, 50) added to the scores: a causally masked row, a row with nothing to
    attend, a NaN (which spreads over its row, as in NumPy) and an inf."""
    mask = np.zeros((6, 50), np.float32)
    mask[1, 30:] = -np.inf
    mask[2] = -np.inf
    mask[3, 7] = np.nan
    mask[4, 3] = np.inf
    return mask


@needs(fast.SoftmaxRowsFloat32)
def test_compiled_softmax_rows_match_float64_with_masked_and_nan_rows():
    rng = np.random.default_rng(4)
    q = (rng.standard_normal((2, 6, 4)) * 4).astype(np.float32)  # scores up to ~30
    k, v = (rng.standard_normal((2, 50, n)).astype(np.float32) for n in (4, 3))
    probe = rng.standard_normal((2, 6, 3)).astype(np.float32)
    mask = _special_scores_mask()

    def attend(a, b, c):
        return sdpa(a, b, c, attn_mask=lw.tensor(mask))

    with np.errstate(invalid="ignore"):  # the inf row: inf / inf in NumPy's form
        got, reference = path_and_reference(fast.SoftmaxRowsFloat32, attend, [q, k, v], probe)
    for g, r in zip(got, reference):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
    assert_close(got, reference, np.float32)  # NaN where the reference has NaN
    out = got[0]
    assert np.isnan(out[:, [3, 4]]).all()
    assert not out[:, 2].any()  # nothing to attend: zeros
    finite = [0, 1, 5]
    exact = np_attention(*(a.astype(np.float64) for a in (q, k, v)),
                         allowed=np.isfinite(mask))[0]
    np.testing.assert_allclose(out[:, finite], exact[:, finite], rtol=2e-6, atol=1e-6)
    # the backward kernel on the rows that stay finite, against float64
    rows = [0, 1, 2, 5]
    finite_q, finite_mask = q[:, rows], mask[rows]
    with dispatch.forced(fast.SoftmaxRowsFloat32):
        got32 = outputs_and_grads(lambda a, b, c: sdpa(a, b, c, attn_mask=lw.tensor(finite_mask)),
                                  [finite_q, k, v], probe[:, rows])
    with dispatch.forced(dispatch.REFERENCE):
        exact64 = outputs_and_grads(
            lambda a, b, c: sdpa(a, b, c, attn_mask=lw.tensor(finite_mask.astype(np.float64))),
            [a.astype(np.float64) for a in (finite_q, k, v)], probe[:, rows].astype(np.float64))
    for g, e in zip(got32, exact64):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@needs(fast.SoftmaxRowsFloat32)
@pytest.mark.parametrize("is_causal, path", [(True, fast.CausalQueryBlocksFloat32),
                                             (True, fast.SoftmaxRowsFloat32),
                                             (False, fast.SoftmaxRowsFloat32)])
def test_attention_with_compiled_softmax_matches_numpy(is_causal, path):
    rng = np.random.default_rng(5)
    qkv = rng.standard_normal((2, 70, 3 * 16)).astype(np.float32)  # T=70: two causal blocks
    probe = rng.standard_normal((2, 70, 16)).astype(np.float32)
    got, reference = path_and_reference(
        path, lambda a: heads_attention(a, 2, is_causal=is_causal), [qkv], probe)
    for a, b in zip(got, reference):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("t, blocks", [(64, 2), (71, 2), (96, 3), (131, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_causal_query_blocks_match_the_reference_with_the_same_dropout(t, blocks, dropout_p,
                                                                       dtype):
    path = fast.CausalQueryBlocks if dtype == np.float64 else fast.CausalQueryBlocksFloat32
    if not path.available():
        pytest.skip(f"{path.__name__} needs numba")
    assert len(fast._query_blocks(t)) == blocks
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 3, t, 8)).astype(dtype) for _ in range(3))
    probe = rng.standard_normal((2, 3, t, 8)).astype(dtype)

    def attend(a, b, c):
        lw.manual_seed(11)  # the same draws on both paths
        return sdpa(a, b, c, is_causal=True, dropout_p=dropout_p)

    got, reference = path_and_reference(path, attend, [q, k, v], probe)
    assert_close(got, reference, dtype)
    if dropout_p:  # the dropout did something
        with dispatch.forced(path):
            assert not np.allclose(outputs_and_grads(attend, [q, k, v])[0],
                                   sdpa(*(lw.tensor(a) for a in (q, k, v)), is_causal=True).numpy())


def test_query_blocks_cover_each_query_once():
    for t in range(2, 300):
        blocks = fast._query_blocks(t)
        assert blocks[0][0] == 0 and blocks[-1][1] == t, t
        assert all(end == start for (_, end), (start, _) in itertools.pairwise(blocks)), t
        assert 2 <= len(blocks) <= fast.MAX_CAUSAL_BLOCKS, t
        if t >= 2 * fast.MIN_CAUSAL_BLOCK:
            assert min(end - start for start, end in blocks) >= fast.MIN_CAUSAL_BLOCK, t


# --- the batch in two halves on two threads (backend/threads.py) ------------------------------


def _step_twice(fn, arrays, probe):
    """Output and input gradients, and the gradients a second backward through the same graph
    (retain_graph) adds."""
    tensors = [lw.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    loss = (out * lw.tensor(probe)).sum()
    loss.backward(retain_graph=True)
    first = [t.grad.numpy().copy() for t in tensors]
    loss.backward()
    return [out.detach().numpy()] + first + [t.grad.numpy() - f for t, f in zip(tensors, first)]


def _one_thread_path(fn, arrays):
    """The path one thread would run for fn's attention call (REFERENCE for the reference)."""
    with dispatch.traced() as calls:
        fn(*[lw.tensor(a, requires_grad=True) for a in arrays])
    (_, call_arrays, params, graph), = [c for c in calls if c[0] is SDPAttention]
    path = fast._one_thread_path(call_arrays, params, graph)
    return dispatch.REFERENCE if path is SDPAttention else path


PAD = np.ones((5, 1, 1, 20), bool)
PAD[[1, 3], ..., 12:] = False  # a mask that differs between samples: split with the batch


@pytest.mark.parametrize("kwargs", [dict(is_causal=True), dict(), dict(
    attn_mask=np.tril(np.ones((20, 20), bool))), dict(attn_mask=PAD)], ids=[
    "causal", "no mask", "shared mask", "per-sample mask"])
@pytest.mark.parametrize("dtype, t", [(np.float32, 20), (np.float64, 20), (np.float64, 70)])
@pytest.mark.usefixtures("two_blas_threads")
def test_attention_in_two_halves_is_bit_identical_to_one_thread(monkeypatch, kwargs, dtype, t):
    if "attn_mask" in kwargs and t != 20:
        pytest.skip("the masks are (20, 20)")
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal((5, 2, t, 4)).astype(dtype) for _ in range(3)]  # halves 2 + 3
    probe = rng.standard_normal((5, 2, t, 4)).astype(dtype)
    kwargs = {key: lw.tensor(value) if key == "attn_mask" else value
              for key, value in kwargs.items()}
    fn = lambda q, k, v: sdpa(q, k, v, **kwargs)
    one_thread = _one_thread_path(fn, arrays)
    calls = []
    real = fast.threads.run_pair
    monkeypatch.setattr(fast.threads, "run_pair", lambda *f: calls.append(1) or real(*f))
    with dispatch.forced(fast.AttentionInHalves) as uses:
        halves = _step_twice(fn, arrays, probe)
    assert uses.count == 1 and len(calls) == 3  # forward and both backwards in halves
    with dispatch.forced(one_thread):
        whole = _step_twice(fn, arrays, probe)
    for h, w in zip(halves, whole):
        np.testing.assert_array_equal(h, w)


def _choice(q_shape, dtype=np.float32, k_shape=None, grad=True, **kwargs):
    """The path dispatch chooses for sdpa on inputs of these shapes."""
    q = lw.tensor(np.ones(q_shape, dtype), requires_grad=grad)
    k = v = lw.tensor(np.ones(k_shape or q_shape, dtype))
    with dispatch.traced() as calls:
        sdpa(q, k, v, **kwargs)
    # a boolean mask Tensor becomes its additive form through a Where first
    (reference, arrays, params, graph), = [c for c in calls if c[0] is SDPAttention]
    return dispatch.choose(reference, arrays, params, graph)


def test_halves_are_chosen_from_their_size_with_two_cores_and_without_draws(monkeypatch):
    monkeypatch.setattr(fast.threads, "available", lambda: True)
    gpt_layer = (16, 4, 128, 8)  # the GPT workload: 1 M scores
    assert _choice(gpt_layer, is_causal=True) is fast.AttentionInHalves
    assert _choice(gpt_layer, grad=False) is fast.AttentionInHalves
    assert _choice(gpt_layer, attn_mask=lw.tensor(np.ones((16, 1, 1, 128), bool))) \
        is fast.AttentionInHalves
    just_below = (fast.MIN_SCORES_IN_HALVES // (4 * 128 * 128) - 1, 4, 128, 8)
    assert _choice(just_below, is_causal=True) is not fast.AttentionInHalves
    # draws: the result would depend on which half ran first
    assert _choice(gpt_layer, is_causal=True, dropout_p=0.1) is not fast.AttentionInHalves
    grad_mask = lw.tensor(np.zeros((128, 128), np.float32), requires_grad=True)
    assert _choice(gpt_layer, attn_mask=grad_mask) is not fast.AttentionInHalves
    assert _choice((1, 64, 128, 8), is_causal=True) is not fast.AttentionInHalves  # batch of 1
    monkeypatch.setattr(fast.threads, "available", lambda: False)
    assert _choice(gpt_layer, is_causal=True) is not fast.AttentionInHalves


@pytest.mark.parametrize("case, expected", [
    ("float32 causal, T=64", "CausalQueryBlocksFloat32"),
    ("float32 causal, T=63", "SoftmaxRowsFloat32"),
    ("float64 causal, T=64", "CausalQueryBlocks"),
    ("float64 causal, T=63", "SDPAttention"),
    ("float64 no mask, T=64", "SDPAttention"),
    ("float64 causal with a cache, Tq=1, Tk=64", "SDPAttention"),
    ("float64 causal and padding, T=64", "SDPAttention"),
    ("float32 causal and padding, T=64", "SoftmaxRowsFloat32"),
    ("float32 causal, keys broadcast over the batch, T=64", "SoftmaxRowsFloat32"),
])
def test_which_path_a_call_gets(monkeypatch, case, expected):
    monkeypatch.setattr(fast.threads, "available", lambda: False)  # no halves
    if "32" in expected and not fast.SoftmaxRowsFloat32.available():
        pytest.skip("the float32 paths need numba")
    dtype = np.float32 if case.startswith("float32") else np.float64
    t = 63 if "T=63" in case else 64
    kwargs = dict(is_causal="causal" in case)
    k_shape = None
    if "cache" in case:
        q_shape, k_shape = (2, 2, 1, 4), (2, 2, t, 4)
    else:
        q_shape = (2, 2, t, 4)
    if "padding" in case:
        kwargs["attn_mask"] = lw.tensor(np.ones((2, 1, 1, t), bool))
    if "broadcast" in case:
        k_shape = (1, 2, t, 4)
    assert _choice(q_shape, dtype, k_shape, **kwargs).__name__ == expected


@needs(fast.CausalQueryBlocksFloat32)
def test_a_gpt_written_as_in_pytorch_reaches_the_causal_blocks(monkeypatch):
    monkeypatch.setattr(fast.threads, "available", lambda: False)
    lw.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=64, n_layer=2, n_head=2, n_embd=16))
    ids = lw.tensor(np.arange(2 * 64).reshape(2, 64) % 20)
    with dispatch.traced() as calls:
        model(ids, targets=ids)
    chosen = [dispatch.choose(*call) for call in calls if call[0] is SDPAttention]
    assert chosen == [fast.CausalQueryBlocksFloat32] * 2
