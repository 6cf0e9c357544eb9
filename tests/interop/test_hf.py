"""HF GPT-2 and BERT checkpoints (made by scripts/hf_reference.py with transformers) against
the outputs transformers computed for them, without torch."""

import json
import os
import shutil

import numpy as np
import pytest

from layerwise import serialization
from layerwise.interop import from_pretrained, load_bert, load_gpt2, load_hf_state_dict
from layerwise.models import GPT, BertForMaskedLM, BertModel

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf")


def _ref(name):
    return {k: v.numpy() for k, v in serialization.load(os.path.join(FIXTURES, name)).items()}


@pytest.mark.parametrize("folder", ["gpt2", "gpt2_sharded"])
def test_gpt2_logits_hidden_and_greedy_tokens_match_transformers(folder):
    ref = _ref("gpt2_reference.safetensors")
    model = load_gpt2(os.path.join(FIXTURES, folder))
    assert isinstance(model, GPT) and not model.training
    logits, _ = model(ref["input_ids"])
    np.testing.assert_allclose(logits.detach().numpy(), ref["logits"], atol=1e-4, rtol=0)
    hidden = model._hidden(ref["input_ids"])
    np.testing.assert_allclose(hidden.detach().numpy(), ref["hidden_states"], atol=1e-4, rtol=0)
    new = ref["generated"].shape[1] - ref["input_ids"].shape[1]
    tokens = model.generate(ref["input_ids"], max_new_tokens=new, temperature=0)
    np.testing.assert_array_equal(tokens.numpy(), ref["generated"])


def test_sharded_and_single_file_hold_the_same_tensors():
    one = load_hf_state_dict(os.path.join(FIXTURES, "gpt2"))
    many = load_hf_state_dict(os.path.join(FIXTURES, "gpt2_sharded"))
    assert len(os.listdir(os.path.join(FIXTURES, "gpt2_sharded"))) > 3  # really sharded
    assert sorted(one) == sorted(many)
    for k in one:
        np.testing.assert_array_equal(one[k].numpy(), many[k].numpy())


def test_gpt2_conv1d_weights_are_transposed_and_head_tied():
    raw = load_hf_state_dict(os.path.join(FIXTURES, "gpt2"))
    model = load_gpt2(os.path.join(FIXTURES, "gpt2"))
    w = model.transformer.h[0].attn.c_attn.weight.detach().numpy()
    np.testing.assert_array_equal(w, raw["transformer.h.0.attn.c_attn.weight"].numpy().T)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_old_style_gpt2_file_without_prefix_and_with_mask_buffers(tmp_path):
    raw = load_hf_state_dict(os.path.join(FIXTURES, "gpt2"))
    old = {k.removeprefix("transformer."): v for k, v in raw.items()}
    old["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))  # a mask, not a weight
    serialization.save(old, tmp_path / "model.safetensors")
    shutil.copy(os.path.join(FIXTURES, "gpt2", "config.json"), tmp_path / "config.json")
    ref = _ref("gpt2_reference.safetensors")
    logits, _ = load_gpt2(tmp_path)(ref["input_ids"])
    np.testing.assert_allclose(logits.detach().numpy(), ref["logits"], atol=1e-4, rtol=0)


def test_bert_hidden_states_and_mlm_logits_match_transformers():
    ref = _ref("bert_reference.safetensors")
    path = os.path.join(FIXTURES, "bert")
    mlm = from_pretrained(path)
    assert isinstance(mlm, BertForMaskedLM)
    args = (ref["input_ids"], ref["attention_mask"], ref["token_type_ids"])
    logits, _ = mlm(*args)
    keep = ref["attention_mask"].astype(bool)  # padded positions are not compared
    np.testing.assert_allclose(logits.detach().numpy()[keep], ref["logits"][keep], atol=1e-4,
                               rtol=0)
    encoder = load_bert(path, masked_lm=False)
    assert isinstance(encoder, BertModel) and encoder.pooler is None
    hidden, _ = encoder(*args)
    np.testing.assert_allclose(hidden.detach().numpy()[keep], ref["last_hidden_state"][keep],
                               atol=1e-4, rtol=0)
    emb = encoder.embed(*args[:2], token_type_ids=args[2]).detach().numpy()  # embeddings work
    mask = ref["attention_mask"][:, :, None]
    mean = (ref["last_hidden_state"] * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(emb, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-4)


def test_missing_weights_and_pickles_are_refused(tmp_path):
    shutil.copy(os.path.join(FIXTURES, "gpt2", "config.json"), tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(FileNotFoundError, match="pickle"):
        load_gpt2(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="llama"):
        from_pretrained(tmp_path)
