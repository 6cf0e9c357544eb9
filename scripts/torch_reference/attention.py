"""Reference outputs and gradients for attention, normalisation, transformer layers and a tiny
GPT, for tests/nn/test_attention_layers.py and tests/models/test_gpt.py.

Run with a Python that has torch (not a layerwise dependency):

    uv run --group reference python scripts/torch_reference/attention.py

(or `uv run --with <a local torch wheel> python ...` where PyPI's CUDA build is unwanted)

Each case writes tests/fixtures/torch/attn_<case>.safetensors holding
    - the module's state_dict under its own keys (in_proj_weight, transformer.h.0.ln_1.weight, ...);
    - "input/<name>": the inputs (float inputs get gradients), "mask/<name>": masks and targets;
    - "probe/<name>": fixed weights of the scalar loss  sum_name sum(output_name * probe_name)
      (the GPT's loss is its own cross-entropy instead);
    - "output/<name>": the forward results;
    - "grad/<name>": d loss / d name for every float input and every parameter.
"""

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "torch"


def save(name, module, inputs, masks, results, loss=None):
    """Backpropagate ``loss`` (or a probe-weighted sum of ``results``) and write the file."""
    probes = {}
    if loss is None:
        probes = {k: torch.randn(v.shape) for k, v in results.items()}
        loss = sum((results[k] * probes[k]).sum() for k in results)
    loss.backward()
    tensors = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    tensors.update({f"input/{k}": v.detach().clone() for k, v in inputs.items()})
    tensors.update({f"mask/{k}": v.clone() for k, v in masks.items()})
    tensors.update({f"probe/{k}": v for k, v in probes.items()})
    tensors.update({f"output/{k}": v.detach().clone().contiguous() for k, v in results.items()})
    tensors.update({f"grad/{k}": v.grad.clone() for k, v in inputs.items() if v.grad is not None})
    # named_parameters lists a tied weight once; the test reads its gradient under that name.
    tensors.update({f"grad/{k}": p.grad.clone() for k, p in module.named_parameters()})
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / f"attn_{name}.safetensors"))
    size = (OUT / f"attn_{name}.safetensors").stat().st_size
    print(f"attn_{name}.safetensors: {len(tensors)} tensors, {size / 1024:.1f} KB")


def mha_cross():
    """Time-major cross-attention with float masks: a padding mask of 0 / -inf and a random
    additive attn_mask (torch deprecates mixing float and boolean masks)."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2)
    with torch.no_grad():  # torch starts the biases at zero; random ones test them too
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    inputs = {k: torch.randn(shape, requires_grad=True)
              for k, shape in (("query", (3, 2, 8)), ("key", (4, 2, 8)), ("value", (4, 2, 8)))}
    key_padding_mask = torch.tensor([[0.0, 0.0, -math.inf, 0.0], [0.0, 0.0, 0.0, -math.inf]])
    attn_mask = 0.5 * torch.randn(3, 4)
    out, weights = mha(inputs["query"], inputs["key"], inputs["value"],
                       key_padding_mask=key_padding_mask, attn_mask=attn_mask)
    _, per_head = mha(inputs["query"], inputs["key"], inputs["value"], key_padding_mask=key_padding_mask,
                      attn_mask=attn_mask, average_attn_weights=False)
    save("mha_cross", mha, inputs, {"key_padding_mask": key_padding_mask, "attn_mask": attn_mask},
         {"output": out, "weights": weights, "weights_per_head": per_head})


def mha_self():
    """Batch-first self-attention with a boolean causal attn_mask (True = blocked) and padding."""
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 5, 12, requires_grad=True)
    attn_mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    key_padding_mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out, weights = mha(x, x, x, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
    save("mha_self", mha, {"x": x}, {"key_padding_mask": key_padding_mask, "attn_mask": attn_mask},
         {"output": out, "weights": weights})


def layer_norms():
    torch.manual_seed(2)
    for name, module, shape in (("layernorm", nn.LayerNorm(6), (2, 3, 6)),
                                ("layernorm_2d", nn.LayerNorm((3, 4), eps=1e-3), (2, 3, 4)),
                                ("rmsnorm", nn.RMSNorm(5), (3, 5))):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.3 * torch.randn(p.shape))
        x = torch.randn(shape, requires_grad=True)
        save(name, module, {"x": x}, {}, {"output": module(x)})


def transformer_layers():
    torch.manual_seed(3)
    enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True)
    src = torch.randn(2, 5, 8, requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(5)  # float, -inf above the diagonal
    save("encoder_layer", enc, {"src": src}, {"src_mask": mask}, {"output": enc(src, src_mask=mask)})

    dec = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                     norm_first=True)
    tgt = torch.randn(2, 4, 8, requires_grad=True)
    memory = torch.randn(2, 6, 8, requires_grad=True)
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(4)
    memory_key_padding_mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out = dec(tgt, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask)
    save("decoder_layer", dec, {"tgt": tgt, "memory": memory},
         {"tgt_mask": tgt_mask, "memory_key_padding_mask": memory_key_padding_mask}, {"output": out})


# --- a tiny GPT, nanoGPT-style, with GPT-2's parameter names -------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2
        # GPT-2's initialisation; biases and norm parameters made random too, so they are tested.
        for name, p in self.named_parameters():
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
            if p.dim() > 1:
                torch.nn.init.normal_(p, 0.0, std)
            else:
                torch.nn.init.normal_(p, 1.0 if ".ln_" in name and name.endswith("weight") else 0.0, 0.1)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss


def gpt():
    torch.manual_seed(4)
    model = GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
    idx = torch.randint(0, 11, (2, 6))
    targets = torch.randint(0, 11, (2, 6))
    targets[1, -1] = -1  # an ignored position
    logits, loss = model(idx, targets)
    save("gpt", model, {}, {"idx": idx, "targets": targets}, {"logits": logits, "loss": loss}, loss=loss)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float32)
    mha_cross()
    mha_self()
    layer_norms()
    transformer_layers()
    gpt()
