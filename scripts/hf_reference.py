"""Make tiny random Hugging Face GPT-2 and BERT checkpoints and their reference outputs.

Run with torch and transformers (not in the project env):

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \
        --with transformers python scripts/hf_reference.py

Writes under tests/fixtures/hf/:
    gpt2/        config.json + model.safetensors           (what save_pretrained writes)
    gpt2_sharded/ config.json + model-0000x-of-0000y.safetensors + model.safetensors.index.json
    bert/        config.json + model.safetensors            (BertForMaskedLM: bert.* + cls.*)
    gpt2_reference.safetensors   input_ids, logits, hidden states (after ln_f), greedy tokens
    bert_reference.safetensors   input_ids, attention_mask, token_type_ids, last hidden state,
                                 pooler-free MLM logits
The tests in tests/interop/ load these with layerwise alone and compare to 1e-4.
"""

import os

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                    "fixtures", "hf")


# initializer_range 0.3 instead of 0.02: with GPT-2's small init every GELU and softmax is
# nearly linear, and a mistake in one would hide below the 1e-4 tolerance.


def make_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                        eos_token_id=None, initializer_range=0.3)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(os.path.join(ROOT, "gpt2"), safe_serialization=True)
    # ~40 KB per shard: the two-layer model spreads over several files with an index
    model.save_pretrained(os.path.join(ROOT, "gpt2_sharded"), safe_serialization=True,
                          max_shard_size="60KB")
    ids = torch.randint(0, config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        generated = model.generate(ids, max_new_tokens=8, do_sample=False,
                                   pad_token_id=0, attention_mask=torch.ones_like(ids))
    save_file({"input_ids": ids.contiguous(),
               "logits": out.logits.contiguous(),
               "hidden_states": out.hidden_states[-1].contiguous(),  # after ln_f
               "generated": generated.contiguous()},
              os.path.join(ROOT, "gpt2_reference.safetensors"))


def make_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        initializer_range=0.3)
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(os.path.join(ROOT, "bert"), safe_serialization=True)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(1, config.vocab_size, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # the second sentence is padded
    ids[1, 6:] = 0
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                    output_hidden_states=True)
    save_file({"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(),
               "token_type_ids": types.contiguous(),
               "last_hidden_state": out.hidden_states[-1].contiguous(),
               "logits": out.logits.contiguous()},
              os.path.join(ROOT, "bert_reference.safetensors"))


if __name__ == "__main__":
    os.makedirs(ROOT, exist_ok=True)
    make_gpt2()
    make_bert()
    for dirpath, _, files in sorted(os.walk(ROOT)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            print(f"{os.path.getsize(path):8d}  {os.path.relpath(path, ROOT)}")
