"""LoRA adapters: zero-initialised update, only adapters train, merge and unmerge."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.finetune import (
    LoRALinear,
    apply_lora,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
    unmerge_lora,
)
from layerwise.models import GPT, GPTConfig


def _gpt():
    lw.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8))


def test_forward_is_x_w_plus_scaled_b_a_computed_in_numpy():
    lw.manual_seed(1)
    layer = LoRALinear(lw.nn.Linear(5, 3), r=2, alpha=6)
    assert np.all(layer.lora_B.detach().numpy() == 0)  # B = 0: the adapted layer starts unchanged
    layer.lora_B.data[...] = np.random.default_rng(0).normal(size=(3, 2))
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    w, b = layer.weight.detach().numpy().astype(np.float64), layer.bias.detach().numpy()
    a, bb = layer.lora_A.detach().numpy(), layer.lora_B.detach().numpy()
    expected = x @ w.T + b + 3.0 * (x @ a.T @ bb.T)
    np.testing.assert_allclose(layer(lw.tensor(x)).detach().numpy(), expected, atol=1e-5)


def test_only_adapter_parameters_receive_gradients():
    model = apply_lora(_gpt(), ["*.c_attn", "*.mlp.c_fc"], r=2, alpha=4)
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    _, loss = model(ids, targets=np.roll(ids, -1, axis=1))
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    adapters = {n for n, _ in model.named_parameters() if n.endswith(("lora_A", "lora_B"))}
    assert got == adapters and len(adapters) == 8  # 2 layers x 2 targets x (A, B)
    assert {id(p) for p in trainable_parameters(model)} == \
        {id(p) for n, p in model.named_parameters() if n in adapters}
    assert sorted(lora_state_dict(model)) == sorted(adapters)
    assert "transformer.h.0.attn.c_attn.weight" in model.state_dict()  # old keys kept


def test_merge_gives_the_same_outputs_and_unmerge_restores_the_weights():
    model = apply_lora(_gpt(), "*.attn.c_*", r=2, alpha=4)
    rng = np.random.default_rng(0)
    for p in trainable_parameters(model):
        p.data[...] = rng.normal(scale=0.3, size=p.shape)  # a trained, nonzero update
    ids = np.array([[1, 2, 3, 4, 5]])
    w_before = model.transformer.h[1].attn.c_proj.weight.detach().numpy().copy()
    with lw.no_grad():
        unmerged = model(ids)[0].detach().numpy()
        merge_lora(model)
        merged = model(ids)[0].detach().numpy()
    assert not np.allclose(model.transformer.h[1].attn.c_proj.weight.detach().numpy(), w_before)
    np.testing.assert_allclose(merged, unmerged, atol=1e-5)
    unmerge_lora(model)
    np.testing.assert_allclose(model.transformer.h[1].attn.c_proj.weight.detach().numpy(), w_before,
                               atol=1e-6)
    with lw.no_grad():
        np.testing.assert_allclose(model(ids)[0].detach().numpy(), unmerged, atol=1e-6)


def test_copy_conversion_leaves_the_original_and_bad_targets_are_reported():
    base = _gpt()
    adapted = apply_lora(base, "*.c_fc", inplace=False, trainable="lm_head.*")
    assert not any(isinstance(m, LoRALinear) for m in base.modules())
    assert all(p.requires_grad for p in base.parameters())
    assert adapted.lm_head.weight.requires_grad  # trainable= keeps a head training
    with pytest.raises(ValueError, match="transformer.h.0.attn.c_attn"):
        apply_lora(_gpt(), "*.query")
