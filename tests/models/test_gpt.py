"""GPT: a tiny torch GPT's state dict loads unchanged and gives the same logits, loss and
gradients; the KV cache gives the same logits and the same generated tokens as no cache; the
sampling filters; parameter accounting; a tiny model memorises a short string."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import layerwise as lw
from layerwise.models.gpt import GPT, GPTConfig, _sample
from layerwise.optim import AdamW

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


def tiny(seed=0, **overrides):
    lw.manual_seed(seed)
    cfg = dict(vocab_size=13, block_size=10, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg))


# --- against PyTorch -------------------------------------------------------------------------


def test_torch_gpt_state_dict_loads_unchanged_and_matches():
    f = load_file(FIXTURES / "attn_gpt.safetensors")
    state = {k: v for k, v in f.items() if "/" not in k}
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    assert set(model.state_dict()) == set(state)  # GPT-2's names, lm_head and wte both listed
    model.load_state_dict(state)
    assert model.lm_head.weight is model.transformer.wte.weight
    logits, loss = model(lw.tensor(f["mask/idx"]), lw.tensor(f["mask/targets"]))
    np.testing.assert_allclose(logits.data, f["output/logits"], atol=1e-5)
    np.testing.assert_allclose(loss.item(), f["output/loss"], atol=1e-5)
    loss.backward()
    names = [n for n, _ in model.named_parameters()]
    assert sorted(names) == sorted(k[5:] for k in f if k.startswith("grad/"))
    for name, p in model.named_parameters():
        # the tied matrix gets gradient from both the embedding and the output projection
        np.testing.assert_allclose(p.grad.data, f[f"grad/{name}"], atol=1e-5, err_msg=name)


# --- the KV cache and generation -------------------------------------------------------------


def test_cached_forward_gives_the_full_sequence_logits():
    model = tiny().eval()
    idx = lw.tensor(np.random.default_rng(0).integers(0, 13, (2, 7)))
    full, _ = model(idx)
    cache = model.new_kv_cache()
    parts = [model(idx[:, :3], kv_cache=cache)[0]]  # a 3-token prompt, then one token at a time
    for t in range(3, 7):
        parts.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert len(cache) == 7
    np.testing.assert_allclose(np.concatenate([p.data for p in parts], axis=1), full.data, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(temperature=1.0, seed=5),
                                    dict(temperature=0.8, top_k=4, seed=6), dict(top_p=0.7, seed=7)])
def test_cached_generation_gives_exactly_the_uncached_tokens(kwargs):
    model = tiny()
    prompt = lw.tensor([[1, 2, 3], [4, 5, 6]])
    # 3 + 12 tokens > block_size 10: covers the sliding window after the cache is dropped
    cached = model.generate(prompt, 12, use_cache=True, **kwargs)
    uncached = model.generate(prompt, 12, use_cache=False, **kwargs)
    assert cached.shape == (2, 15)
    np.testing.assert_array_equal(cached.data, uncached.data)
    np.testing.assert_array_equal(cached.data[:, :3], prompt.data)
    assert model.training  # generate restores the mode


def test_uncached_generation_crops_to_block_size_and_greedy_is_argmax():
    model = tiny(seed=1)
    prompt = np.random.default_rng(1).integers(0, 13, (1, 14))  # longer than block_size
    out = model.generate(lw.tensor(prompt), 1, temperature=0, use_cache=False).data
    model.eval()
    logits, _ = model(lw.tensor(prompt[:, -10:]))
    assert out[0, -1] == logits.data[0, -1].argmax()


def test_seeds_repeat_and_differ():
    model = tiny(seed=2)
    prompt = lw.tensor([[0, 1]])
    a = model.generate(prompt, 8, seed=11).data
    b = model.generate(prompt, 8, seed=11).data
    c = model.generate(prompt, 8, seed=12).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    state = lw.get_rng_state()
    model.generate(prompt, 3, seed=1)
    assert lw.get_rng_state() == state  # a seed leaves the global generator alone


def test_top_k_and_top_p_limit_the_candidates():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    draws = np.array([_sample(logits, 1.0, None, None, rng)[0] for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    top2 = np.array([_sample(logits, 1.0, 2, None, rng)[0] for _ in range(2000)])
    assert set(top2.tolist()) == {0, 1}
    np.testing.assert_allclose((top2 == 0).mean(), 0.5 / 0.8, atol=0.04)
    nucleus = np.array([_sample(logits, 1.0, None, 0.75, rng)[0] for _ in range(2000)])
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.75: the rest is cut
    assert set(_sample(np.repeat(logits, 3, 0), 1.0, None, 0.5, rng).tolist()) == {0}
    assert _sample(logits, 0.0, None, None, rng)[0] == 0
    hot = np.array([_sample(logits, 100.0, None, None, rng)[0] for _ in range(2000)])
    assert np.bincount(hot, minlength=4).min() > 350  # a high temperature flattens


def test_generation_errors():
    model = tiny()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(lw.tensor([[1]]), 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(lw.tensor([[1]]), 2, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(lw.tensor([[1]]), 2, top_p=1.5)
    with pytest.raises(ValueError, match=r"12 > block_size=10"):
        model(lw.zeros(1, 12).long())
    cache = model.new_kv_cache()
    model(lw.zeros(1, 8).long(), kv_cache=cache)
    with pytest.raises(ValueError, match=r"3 tokens after 8 cached ones: 11 > block_size=10"):
        model(lw.zeros(1, 3).long(), kv_cache=cache)
    with pytest.raises(ValueError, match="targets"):
        model(lw.zeros(2, 4).long(), lw.zeros(2, 3).long())


# --- parameters, accounting, inspection ------------------------------------------------------


def test_parameter_names_tying_and_counts():
    model = tiny(n_layer=3, n_embd=8, bias=True)
    keys = list(model.state_dict())
    assert keys[:2] == ["transformer.wte.weight", "transformer.wpe.weight"] and keys[-1] == "lm_head.weight"
    assert "transformer.h.2.mlp.c_fc.weight" in keys and "transformer.ln_f.bias" in keys
    assert model.transformer.h[0].attn.c_attn.weight.shape == (24, 8)  # nn.Linear: (out, in)
    V, T, C, L = 13, 10, 8, 3
    per_layer = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    total = V * C + T * C + L * per_layer + 2 * C
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - T * C
    assert model.flops_per_token() == 6 * (total - T * C) + 12 * L * 2 * 4 * T
    no_bias = tiny(n_layer=3, n_embd=8, bias=False)
    assert not any(n.endswith("bias") for n in no_bias.state_dict())
    groups = model.optim_groups(0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and groups[1]["weight_decay"] == 0.0


def test_gpt2_initialisation_scales():
    model = tiny(n_layer=4, n_embd=64, vocab_size=200, block_size=64)
    assert abs(model.transformer.wte.weight.data.std() - 0.02) < 0.002
    assert abs(model.transformer.h[0].mlp.c_proj.weight.data.std() - 0.02 / np.sqrt(8)) < 0.001
    assert not model.transformer.h[0].attn.c_attn.bias.data.any()


def test_last_attention_weights_are_kept_on_request():
    model = tiny().eval()
    attn = model.transformer.h[1].attn
    attn.store_attn_weights = True
    idx = lw.tensor([[1, 2, 3, 4]])
    logits, _ = model(idx)
    w = attn.last_attn_weights.data
    assert w.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(w.sum(-1), 1, atol=1e-5)
    assert np.all(np.triu(w, k=1) == 0)
    attn.store_attn_weights = False
    np.testing.assert_allclose(model(idx)[0].data, logits.data, atol=1e-6)


def test_dropout_acts_in_training_only():
    model = tiny(dropout=0.3)
    idx = lw.tensor([[1, 2, 3, 4, 5]])
    a, b = model(idx)[0].data, model(idx)[0].data
    assert not np.allclose(a, b)
    model.eval()
    np.testing.assert_array_equal(model(idx)[0].data, model(idx)[0].data)
    np.testing.assert_allclose(model(idx)[0].data, tiny(dropout=0.0).eval()(idx)[0].data, atol=1e-6)


# --- learning --------------------------------------------------------------------------------


def test_tiny_gpt_memorises_a_short_string():
    text = "hello layerwise! "
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text * 4])
    # Small enough that every matmul stays under OpenBLAS's threading threshold: on a loaded
    # 2-core machine threaded tiny GEMMs wait for the second core and this test took 10 s.
    model = tiny(seed=0, vocab_size=len(chars), block_size=12, n_layer=2, n_head=2, n_embd=16)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    starts = np.arange(len(text))  # every rotation of the string
    x = np.stack([ids[s:s + 12] for s in starts])
    y = np.stack([ids[s + 1:s + 13] for s in starts])
    losses = []
    for _ in range(100):
        _, loss = model(lw.tensor(x), lw.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 < 2.0 < losses[0]
    # 3 + 20 tokens > block_size: greedy generation keeps going on the sliding window
    out = model.generate(lw.tensor(ids[None, :3]), 20, temperature=0).data[0]
    assert "".join(chars[i] for i in out) == (text * 2)[:23]
