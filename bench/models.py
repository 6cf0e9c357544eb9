"""Models written the way PyTorch users write them, timed in layerwise and in PyTorch.

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \\
        python bench/models.py [gpt gpt-sdpa resnet8 transformer lstm gru mlp] [--threads 2] [--aa] [--quick]

Each model is written once, as a PyTorch user writes it (nanoGPT, the CIFAR ResNets,
nn.TransformerEncoder, nn.LSTM ...), with public API and library defaults only, and built for
either framework by passing the framework in: ``build(torch, nn, F)`` gets ``torch,
torch.nn, torch.nn.functional`` or ``layerwise, layerwise.nn, layerwise.nn.functional``.
Where layerwise lacks a PyTorch name, the model says so beside the nearest public
equivalent (see MISSING_IN_LAYERWISE).

For each model: a training step (zero_grad, forward, cross-entropy, backward, optimizer
step) on fixed random data, and batch-1 inference (eval mode, under no_grad), float32, same
seeds and thread count, the frameworks interleaved in blocks (timing.interleaved), each
summarised by the mean of its fastest tenth of steps.
Columns:
    ms           that statistic
    speed        PyTorch's time / layerwise's (above 1: layerwise is faster)
--aa runs each framework against a second copy of itself (the ratios should read ~1.00).
--quick runs a couple of steps of each: proof that the script works, not a measurement.
"""

import argparse
import math
import os
import platform
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from timing import frameworks_on, interleaved

# PyTorch names the models would use that layerwise lacks, with what is written instead.
MISSING_IN_LAYERWISE = {}


# --- the models, each written once ---------------------------------------------------------


def build_gpt(torch, nn, F, flash=False, vocab_size=96, block_size=128, n_layer=4, n_head=4,
              n_embd=128, dropout=0.0):
    """nanoGPT's model.py: pre-norm blocks, attention by hand (or through
    F.scaled_dot_product_attention with ``flash``), exact-GELU MLP, tied embedding."""

    def causal_ones(T):  # (T, T), ones on and below the diagonal
        return torch.tril(torch.ones(T, T))

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)
            self.attn_dropout = nn.Dropout(dropout)
            self.resid_dropout = nn.Dropout(dropout)
            self.register_buffer("bias", causal_ones(block_size).view(1, 1, block_size, block_size))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(n_embd, dim=2)
            q = q.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)
            k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
            v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
            if flash:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T)
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
                att = F.softmax(att, dim=-1)
                att = self.attn_dropout(att)
                y = att @ v  # (B, nh, T, hs)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(n_embd, 4 * n_embd)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * n_embd, n_embd)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(n_embd)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab_size, n_embd)
            self.wpe = nn.Embedding(block_size, n_embd)
            self.drop = nn.Dropout(dropout)
            self.h = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
            self.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

        def forward(self, idx):
            t = idx.size(1)
            pos = torch.arange(0, t, dtype=torch.long)  # (t,)
            x = self.drop(self.wte(idx) + self.wpe(pos))  # (b, t, n_embd)
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))  # (b, t, vocab_size)

    return GPT()


def build_resnet8(torch, nn, F, num_classes=10):
    """A CIFAR ResNet (He et al. 2016, section 4.2) with one basic block per stage: 3x3 stem,
    16-32-64 channels, 1x1 projection shortcuts where the shape changes, global average pool."""

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += self.shortcut(x)
            return F.relu(out)

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = BasicBlock(16, 16)  # (N, 16, 32, 32)
            self.layer2 = BasicBlock(16, 32, stride=2)  # (N, 32, 16, 16)
            self.layer3 = BasicBlock(32, 64, stride=2)  # (N, 64, 8, 8)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            x = torch.flatten(self.avgpool(x), 1)  # (N, 64, 1, 1) -> (N, 64)
            return self.fc(x)

    return ResNet8()


def build_transformer(torch, nn, F, vocab_size=1000, seq_len=64, d_model=128, nhead=4,
                      num_layers=2, num_classes=4):
    """A text classifier on nn.TransformerEncoder: token and learned position embeddings,
    two post-norm encoder layers (library defaults: ReLU, feed-forward 2048, dropout 0.1),
    mean over the sequence, a linear head."""

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, d_model)
            self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
            layer = nn.TransformerEncoderLayer(d_model, nhead, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers)
            self.head = nn.Linear(d_model, num_classes)

        def forward(self, idx):
            x = self.embed(idx) + self.pos[:, :idx.size(1)]  # (B, T, d)
            x = self.encoder(x)
            return self.head(x.mean(dim=1))  # (B, d) -> (B, classes)

    return TextClassifier()


def build_rnn_lm(torch, nn, F, cell="LSTM", vocab_size=96, embed=256, hidden=256):
    """Embedding -> nn.LSTM (or nn.GRU) with batch_first -> Linear, a character language model."""

    class RNNLanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed)
            self.rnn = getattr(nn, cell)(embed, hidden, batch_first=True)
            self.head = nn.Linear(hidden, vocab_size)

        def forward(self, idx):
            out, _ = self.rnn(self.embedding(idx))  # (B, T, hidden)
            return self.head(out)  # (B, T, vocab)

    return RNNLanguageModel()


def build_mlp(torch, nn, F):
    """784-512-512-10 with LayerNorm, exact GELU and dropout after each hidden layer."""
    return nn.Sequential(
        nn.Linear(784, 512), nn.LayerNorm(512), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(512, 512), nn.LayerNorm(512), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(512, 10),
    )


# --- the suite -----------------------------------------------------------------------------


@dataclass
class Model:
    title: str
    build: callable  # (torch, nn, F) -> Module
    optimizer: callable  # (torch, parameters) -> Optimizer
    input_shape: tuple  # a training batch; inference takes batch 1 of the same
    target_shape: tuple
    classes: int  # targets are drawn from range(classes)
    vocab: int = 0  # above 0: the input is token ids from range(vocab), else floats
    steps: tuple = (100, 5)  # timed training steps, and steps per turn of the interleaving
    inference_steps: tuple = (200, 20)


def _adamw(torch, params):
    return torch.optim.AdamW(params, lr=3e-4)


def _adam(torch, params):
    return torch.optim.Adam(params, lr=1e-3)


def _sgd_momentum(torch, params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


SUITE = {
    "gpt": Model("nanoGPT: 4 layers, d=128, 4 heads, context 128, vocab 96, batch 16, AdamW; "
                 "attention by hand", build_gpt, _adamw, (16, 128), (16, 128), 96, vocab=96,
                 steps=(60, 4), inference_steps=(100, 10)),
    "gpt-sdpa": Model("the same GPT, attention through F.scaled_dot_product_attention(is_causal=True)",
                      lambda torch, nn, F: build_gpt(torch, nn, F, flash=True), _adamw, (16, 128),
                      (16, 128), 96, vocab=96, steps=(60, 4), inference_steps=(100, 10)),
    "resnet8": Model("ResNet-8, 32x32x3, BatchNorm, batch 64, SGD momentum 0.9", build_resnet8,
                     _sgd_momentum, (64, 3, 32, 32), (64,), 10, steps=(60, 4)),
    "transformer": Model("nn.TransformerEncoder classifier: 2 layers, d=128, 4 heads, seq 64, "
                         "batch 32, AdamW", build_transformer, _adamw, (32, 64), (32,), 4,
                         vocab=1000, steps=(60, 4)),
    "lstm": Model("Embedding -> nn.LSTM(batch_first) -> Linear: hidden 256, seq 64, batch 32, Adam",
                  build_rnn_lm, _adam, (32, 64), (32, 64), 96, vocab=96),
    "gru": Model("Embedding -> nn.GRU(batch_first) -> Linear: hidden 256, seq 64, batch 32, Adam",
                 lambda torch, nn, F: build_rnn_lm(torch, nn, F, cell="GRU"), _adam, (32, 64),
                 (32, 64), 96, vocab=96),
    "mlp": Model("MLP 784-512-512-10, LayerNorm, exact GELU, dropout 0.1, batch 128, AdamW",
                 build_mlp, _adamw, (128, 784), (128,), 10, steps=(200, 20),
                 inference_steps=(500, 50)),
}
QUICK_STEPS = (2, 1)  # --quick: timed steps and block, for both training and inference


# --- the two frameworks, and a step and an inference built the same way for each ------------


def framework(name):
    """(torch, nn, F) for "pytorch" or "layerwise": the three names a model is written with."""
    if name == "pytorch":
        import torch

        return torch, torch.nn, torch.nn.functional
    import layerwise

    return layerwise, layerwise.nn, layerwise.nn.functional


def _batch(model, batch_shape, seed):
    rng = np.random.default_rng(seed)
    if model.vocab:
        x = rng.integers(0, model.vocab, batch_shape)  # int64 token ids
    else:
        x = rng.standard_normal(batch_shape).astype(np.float32)
    return x, rng.integers(0, model.classes, (batch_shape[0],) + model.target_shape[1:])


def training_step(name, fw):
    """A zero-argument training step of SUITE[name] in framework ``fw`` on fixed data."""
    torch, nn, F = framework(fw)
    spec = SUITE[name]
    torch.manual_seed(0)
    model = spec.build(torch, nn, F)
    model.train()
    opt = spec.optimizer(torch, model.parameters())
    x, y = (torch.from_numpy(a) for a in _batch(spec, spec.input_shape, seed=0))

    def step():
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss
    return step


def inference(name, fw):
    """A zero-argument batch-1 forward of SUITE[name] in framework ``fw``: eval mode, no_grad."""
    torch, nn, F = framework(fw)
    spec = SUITE[name]
    torch.manual_seed(0)
    model = spec.build(torch, nn, F)
    model.eval()
    x, _ = _batch(spec, (1,) + spec.input_shape[1:], seed=1)
    x = torch.from_numpy(x)

    def forward():
        with torch.no_grad():
            return model(x)
    return forward


# --- timing and the table ----------------------------------------------------------------------


def _contenders(build, name, frameworks, aa):
    steps = {}
    for fw in frameworks:
        steps[fw] = build(name, fw)
        if aa:
            steps[fw + "'"] = build(name, fw)
    return steps


def measure(names, frameworks, aa, quick):
    """{name: (training seconds by contender, inference seconds by contender)}."""
    results = {}
    for name in names:
        spec = SUITE[name]
        train_n, train_block = QUICK_STEPS if quick else spec.steps
        infer_n, infer_block = QUICK_STEPS if quick else spec.inference_steps
        warmup, gap = (1, 0.01) if quick else (3, 0.25)
        train = interleaved(_contenders(training_step, name, frameworks, aa), train_n,
                            warmup=warmup, block=train_block, gap=gap)
        infer = interleaved(_contenders(inference, name, frameworks, aa), infer_n,
                            warmup=warmup, block=infer_block, gap=gap)
        results[name] = (train, infer)
        print(f"  timed {name}", file=sys.stderr)
    return results


def _ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f}"


def _speed(base, other):
    return "n/a" if base is None or other is None else f"{base / other:.2f}x"


def print_table(results, threads, aa, quick):
    cpu = platform.processor() or platform.machine()
    kind = "QUICK SMOKE RUN, not a measurement; " if quick else ""
    print(f"\n{kind}{date.today()}, {os.cpu_count()} cores ({cpu}), float32, {threads} threads\n")
    if aa:
        print("| model | contender | train ms | its twin | twin / contender | "
              "batch-1 ms | its twin | twin / contender |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for name, (train, infer) in results.items():
            for fw in ("layerwise", "pytorch"):
                if fw in train:
                    twin = fw + "'"
                    print(f"| {name} | {fw} | {_ms(train[fw])} | {_ms(train[twin])} | "
                          f"{_speed(train[twin], train[fw])} | {_ms(infer[fw])} | "
                          f"{_ms(infer[twin])} | {_speed(infer[twin], infer[fw])} |")
        return
    print("| model | layerwise ms | PyTorch ms | speed | batch-1 layerwise ms | "
          "batch-1 PyTorch ms | batch-1 speed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (train, infer) in results.items():
        lw_t, pt_t = train["layerwise"], train.get("pytorch")
        lw_i, pt_i = infer["layerwise"], infer.get("pytorch")
        print(f"| {name} | {_ms(lw_t)} | {_ms(pt_t)} | {_speed(pt_t, lw_t)} | {_ms(lw_i)} | "
              f"{_ms(pt_i)} | {_speed(pt_i, lw_i)} |")
    if MISSING_IN_LAYERWISE:
        print("\nPyTorch names layerwise lacks, written here with public equivalents: "
              + "; ".join(f"{k} ({v})" for k, v in MISSING_IN_LAYERWISE.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(SUITE)} (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aa", action="store_true", help="each framework against itself")
    parser.add_argument("--quick", action="store_true",
                        help="a couple of steps each: a smoke run, not a measurement")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in SUITE]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(SUITE)}")
    frameworks = frameworks_on(args.threads, parser)
    results = measure(args.models or list(SUITE), frameworks, args.aa, args.quick)
    print_table(results, args.threads, args.aa, args.quick)


if __name__ == "__main__":
    main()
