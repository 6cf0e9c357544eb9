import numpy as np
import pytest

import layerwise as lw
from layerwise.compress.heads import PrunedCausalSelfAttention, head_mask_model, prune_heads
from layerwise.models.gpt import GPT, GPTConfig


def _gpt():
    lw.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=4, n_embd=16))
    model.eval()
    return model


def _logits(model, idx):
    out = model(idx)
    return (out[0] if isinstance(out, tuple) else out).data


def test_pruned_heads_are_smaller_and_match_the_silenced_model():
    model = _gpt()
    idx = lw.tensor(np.random.default_rng(0).integers(0, 20, (2, 10)))
    small, masked = prune_heads(model, 0.5), head_mask_model(model, 0.5)
    attn = small.transformer.h[0].attn
    assert isinstance(attn, PrunedCausalSelfAttention) and attn.n_head == 2
    assert attn.c_attn.weight.shape == (3 * 8, 16) and attn.c_proj.weight.shape == (16, 8)
    # two layers, each losing 2 heads x 4 channels of q, k, v (+bias) and of c_proj's inputs
    assert model.num_parameters() - small.num_parameters() == 2 * (3 * 8 * 16 + 3 * 8 + 16 * 8)
    np.testing.assert_allclose(_logits(small, idx), _logits(masked, idx), rtol=1e-5, atol=1e-6)
    assert np.abs(_logits(small, idx) - _logits(model, idx)).max() > 1e-4  # heads did matter


def test_pruned_heads_generate_with_and_without_the_kv_cache():
    small = prune_heads(_gpt(), 0.5)
    idx = lw.tensor([[1, 2, 3]])
    a = small.generate(idx, 5, top_k=1, use_cache=True)
    b = small.generate(idx, 5, top_k=1, use_cache=False)
    assert np.array_equal(a.data, b.data)


def test_prune_heads_needs_a_gpt():
    with pytest.raises(ValueError, match="CausalSelfAttention"):
        prune_heads(lw.nn.Linear(2, 2), 0.5)
