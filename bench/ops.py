"""Op sweep: every differentiable op and layer of layerwise against PyTorch, at sizes the
bench/models.py suite uses, forward and forward+backward, float32.

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \\
        python bench/ops.py [op names...] [--threads 2] [--quick]

Each op is written once (``fn(fw, *inputs)``, where ``fw.torch`` and ``fw.F`` are the framework's
top-level module and functional module, and ``fw.m`` the layer an op entry builds), run on
the same NumPy inputs in both frameworks, at two sizes. "forward" runs under no_grad;
"fwd+bwd" runs the forward with gradients and ``out.backward(g)`` with a fixed random g, the
gradients of inputs and layer parameters cleared before each run (a training step's
zero_grad). The two frameworks are interleaved in blocks with pauses (timing.interleaved),
each summarised by the mean of its fastest tenth of runs.
Prints every row sorted worst first (speed = PyTorch's time / layerwise's; below 1:
layerwise is slower), the median speed and the ten worst.
--quick runs a couple of repetitions of each: proof that the script works, not a measurement.
"""

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from timing import frameworks_on, interleaved

# --- inputs: (domain, shape, needs grad) or token ids (high) -----------------------------------

DOMAINS = {
    "real": lambda rng, shape: rng.standard_normal(shape),
    "positive": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    "near_one": lambda rng, shape: rng.uniform(0.99, 1.01, shape),  # products that stay finite
    "prob": lambda rng, shape: rng.uniform(0.05, 0.95, shape),
    "mask": lambda rng, shape: rng.random(shape) < 0.5,
}


@dataclass(frozen=True)
class Input:
    shape: tuple
    domain: str = "real"
    grad: bool = True
    high: int = 0  # above 0: int64 ids from range(high), no gradient

    def array(self, rng):
        if self.high:
            return rng.integers(0, self.high, self.shape)
        a = DOMAINS[self.domain](rng, self.shape)
        return a if a.dtype == bool else a.astype(np.float32)


def R(*shape, domain="real"):
    return Input(shape, domain)


def C(*shape, domain="real"):
    """A float input that takes no gradient (targets, running statistics)."""
    return Input(shape, domain, grad=False)


def ids(high, *shape):
    return Input(shape, high=high)


def mask(*shape):
    return Input(shape, "mask", grad=False)


# --- the sizes the suite models use ------------------------------------------------------------

MLP = (128, 512)  # the MLP's hidden activations
GPT = (16, 128, 128)  # GPT (B, T, C)
SCORES = (16, 4, 128, 128)  # GPT attention scores (B, nh, T, T)
HEADS = (16, 4, 128, 32)  # GPT q, k, v (B, nh, T, hs)
RNN = (32, 64, 256)  # LSTM/GRU input (B, T, C)
RES16, RES32 = (64, 16, 32, 32), (64, 32, 16, 16)  # ResNet-8 feature maps
UNET24 = (16, 64, 24, 24)  # a U-Net decoder's input, upsampled to 48x48
HEATMAP = (16, 10, 24, 24)  # CenterNet's class heatmap logits on 96x96 scenes


def same(*domains, grad=True):
    """The two sizes above, as many inputs as ``domains``, all of one shape."""
    return {label: tuple(Input(shape, d, grad) for d in domains)
            for label, shape in (("mlp", MLP), ("gpt", GPT))}


@dataclass
class Op:
    name: str
    fn: callable  # (fw, *tensors) -> Tensor
    sizes: dict  # size label -> tuple of Inputs
    layer: callable = None  # nn -> Module, built once per framework and size: fw.m
    covers: tuple = ()  # the layerwise public names it times besides its own name


def _sigmoid_focal_loss(fw, x, y):
    """torchvision.ops.sigmoid_focal_loss(x, y, reduction="sum") at its defaults (alpha 0.25,
    gamma 2); for PyTorch, torchvision's own formula in torch ops, torchvision being no bench
    dependency."""
    if fw.torch.__name__ == "layerwise":
        return fw.torch.ops.sigmoid_focal_loss(x, y, reduction="sum")
    p = fw.torch.sigmoid(x)
    ce = fw.F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return ((0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2).sum()


def _unary(name, fn, domain="real", covers=()):
    return Op(name, fn, same(domain), covers=covers)


def _binary(name, fn, domain="real"):
    return Op(name, fn, same(domain, domain))


OPS = [
    # elementwise
    _binary("add", lambda fw, a, b: a + b),
    Op("add_bias", lambda fw, a, b: a + b, {"mlp": (R(*MLP), R(512)), "gpt": (R(*GPT), R(128))}),
    _binary("sub", lambda fw, a, b: a - b),
    _binary("mul", lambda fw, a, b: a * b),
    _binary("div", lambda fw, a, b: a / b, "positive"),
    _binary("pow", lambda fw, a, b: a ** b, "positive"),
    _binary("maximum", lambda fw, a, b: fw.torch.maximum(a, b)),
    _binary("minimum", lambda fw, a, b: fw.torch.minimum(a, b)),
    _binary("where", lambda fw, a, b: fw.torch.where(a > 0, a, b)),
    Op("masked_fill", lambda fw, a, m: a.masked_fill(m, float("-inf")),
       {"scores": (R(*SCORES), mask(1, 1, 128, 128)), "mlp": (R(*MLP), mask(*MLP))}),
    _unary("neg", lambda fw, a: -a),
    _unary("pow_scalar", lambda fw, a: a ** 3),
    _unary("exp", lambda fw, a: a.exp()),
    _unary("log", lambda fw, a: a.log(), "positive"),
    _unary("sqrt", lambda fw, a: a.sqrt(), "positive"),
    _unary("rsqrt", lambda fw, a: a.rsqrt(), "positive"),
    _unary("abs", lambda fw, a: a.abs()),
    _unary("clamp", lambda fw, a: a.clamp(-0.5, 0.7)),
    # activations
    _unary("relu", lambda fw, a: fw.F.relu(a), covers=("ReLU",)),
    _unary("leaky_relu", lambda fw, a: fw.F.leaky_relu(a, 0.1), covers=("LeakyReLU",)),
    _unary("sigmoid", lambda fw, a: fw.F.sigmoid(a), covers=("Sigmoid",)),
    _unary("tanh", lambda fw, a: fw.F.tanh(a), covers=("Tanh",)),
    _unary("softplus", lambda fw, a: fw.F.softplus(a), covers=("Softplus",)),
    _unary("gelu", lambda fw, a: fw.F.gelu(a), covers=("GELU",)),
    _unary("gelu_tanh", lambda fw, a: fw.F.gelu(a, approximate="tanh")),
    _unary("silu", lambda fw, a: fw.F.silu(a), covers=("SiLU",)),
    _unary("dropout", lambda fw, a: fw.F.dropout(a, 0.1, training=True), covers=("Dropout",)),
    # reductions
    _unary("sum_all", lambda fw, a: a.sum()),
    _unary("sum_dim", lambda fw, a: a.sum(dim=-1)),
    _unary("mean", lambda fw, a: a.mean(dim=-1)),
    _unary("max_dim", lambda fw, a: a.max(dim=-1).values),
    _unary("amax", lambda fw, a: a.amax(dim=-1)),
    _unary("prod", lambda fw, a: a.prod(dim=-1), "near_one"),
    _unary("var", lambda fw, a: a.var(dim=-1)),
    _unary("std", lambda fw, a: a.std(dim=-1)),
    Op("softmax", lambda fw, a: fw.F.softmax(a, dim=-1), {"scores": (R(*SCORES),), "mlp": (R(*MLP),)},
       covers=("Softmax",)),
    Op("log_softmax", lambda fw, a: fw.F.log_softmax(a, dim=-1),
       {"logits": (R(2048, 96),), "mlp": (R(*MLP),)}, covers=("LogSoftmax",)),
    _unary("logsumexp", lambda fw, a: a.logsumexp(dim=-1)),
    # movement
    _unary("reshape", lambda fw, a: a.reshape(-1, a.shape[-1] // 2)),
    _unary("flatten", lambda fw, a: a.flatten(), covers=("Flatten",)),
    Op("permute", lambda fw, a: a.permute(0, 2, 1, 3), {"gpt": (R(16, 128, 4, 32),), "heads": (R(*HEADS),)}),
    Op("transpose", lambda fw, a: a.transpose(-2, -1), {"heads": (R(*HEADS),), "gpt": (R(*GPT),)}),
    Op("transpose_contiguous", lambda fw, a: a.transpose(1, 2).contiguous(),
       {"heads": (R(*HEADS),), "gpt": (R(*GPT),)}),
    _unary("unsqueeze", lambda fw, a: a.unsqueeze(1)),
    Op("expand", lambda fw, a: a.expand(16, 128, 128), {"row": (R(128),), "column": (R(16, 128, 1),)}),
    _unary("slice", lambda fw, a: a[..., 1:-1:2]),
    Op("index_rows", lambda fw, a, i: a[i], {"mlp": (R(*MLP), ids(128, 128)), "gpt": (R(*GPT), ids(16, 16))}),
    _unary("bool_mask_index", lambda fw, a: a[a > 0]),
    _binary("cat", lambda fw, a, b: fw.torch.cat([a, b], dim=-1)),
    _binary("stack", lambda fw, a, b: fw.torch.stack([a, b], dim=0)),
    _unary("split", lambda fw, a: a.split(a.shape[-1] // 4, dim=-1)[1]),
    _unary("chunk", lambda fw, a: a.chunk(4, dim=-1)[2]),
    Op("pad", lambda fw, a: fw.F.pad(a, (1, 1, 1, 1)), {"res16": (R(*RES16),), "res32": (R(*RES32),)}),
    Op("gather", lambda fw, a, i: a.gather(-1, i),
       {"mlp": (R(*MLP), ids(512, *MLP)), "gpt": (R(*GPT), ids(128, *GPT))}),
    # products and layers
    Op("matmul", lambda fw, a, b: a @ b,
       {"mlp": (R(*MLP), R(512, 512)), "heads": (R(*HEADS), R(16, 4, 32, 128))}),
    Op("linear", lambda fw, x, w, b: fw.F.linear(x, w, b),
       {"mlp": (R(*MLP), R(512, 512), R(512)), "gpt qkv": (R(*GPT), R(384, 128), R(384))},
       covers=("Linear",)),
    Op("conv2d", lambda fw, x, w: fw.F.conv2d(x, w, padding=1),
       {"res16": (R(*RES16), R(16, 16, 3, 3)), "res32": (R(*RES32), R(32, 32, 3, 3))},
       covers=("Conv2d",)),
    Op("conv2d_stride2", lambda fw, x, w: fw.F.conv2d(x, w, stride=2, padding=1),
       {"res16": (R(*RES16), R(32, 16, 3, 3)), "res32": (R(*RES32), R(64, 32, 3, 3))}),
    Op("conv1d", lambda fw, x, w, b: fw.F.conv1d(x, w, b, padding=1),
       {"gpt": (R(*GPT), R(128, 128, 3), R(128)), "rnn": (R(32, 256, 64), R(256, 256, 3), R(256))},
       covers=("Conv1d",)),
    Op("conv_transpose2d", lambda fw, x, w, b: fw.F.conv_transpose2d(x, w, b, stride=2),
       {"unet 24": (R(*UNET24), R(64, 32, 2, 2), R(32)),
        "unet 48": (R(16, 32, 48, 48), R(32, 16, 2, 2), R(16))},
       covers=("ConvTranspose2d",)),
    Op("max_pool2d", lambda fw, x: fw.F.max_pool2d(x, 2), {"res16": (R(*RES16),), "res32": (R(*RES32),)},
       covers=("MaxPool2d",)),
    Op("avg_pool2d", lambda fw, x: fw.F.avg_pool2d(x, 2), {"res16": (R(*RES16),), "res32": (R(*RES32),)},
       covers=("AvgPool2d",)),
    Op("adaptive_avg_pool2d", lambda fw, x: fw.F.adaptive_avg_pool2d(x, 1),
       {"res64": (R(64, 64, 8, 8),), "res16": (R(*RES16),)}, covers=("AdaptiveAvgPool2d",)),
    Op("interpolate", lambda fw, x: fw.F.interpolate(x, scale_factor=2),
       {"res32": (R(*RES32),), "res64": (R(64, 64, 8, 8),)},
       covers=("Upsample", "UpsamplingNearest2d")),
    Op("interpolate_bilinear", lambda fw, x: fw.F.interpolate(x, scale_factor=2, mode="bilinear"),
       {"res32": (R(*RES32),), "res64": (R(64, 64, 8, 8),)}, covers=("UpsamplingBilinear2d",)),
    Op("batch_norm", lambda fw, x, mean, var, w, b: fw.F.batch_norm(x, mean, var, w, b, training=True),
       {"res16": (R(*RES16), C(16), C(16, domain="positive"), R(16), R(16)),
        "mlp": (R(*MLP), C(512), C(512, domain="positive"), R(512), R(512))},
       covers=("BatchNorm1d", "BatchNorm2d")),
    Op("layer_norm", lambda fw, x, w, b: fw.F.layer_norm(x, x.shape[-1:], w, b),
       {"mlp": (R(*MLP), R(512), R(512)), "gpt": (R(*GPT), R(128), R(128))}, covers=("LayerNorm",)),
    Op("rms_norm", lambda fw, x, w: fw.F.rms_norm(x, x.shape[-1:], w),
       {"mlp": (R(*MLP), R(512)), "gpt": (R(*GPT), R(128))}, covers=("RMSNorm",)),
    Op("embedding", lambda fw, i, w: fw.F.embedding(i, w),
       {"gpt": (ids(96, 16, 128), R(96, 128)), "rnn": (ids(96, 32, 64), R(96, 256))},
       covers=("Embedding",)),
    Op("scaled_dot_product_attention", lambda fw, q, k, v: fw.F.scaled_dot_product_attention(q, k, v),
       {"heads": (R(*HEADS),) * 3, "text": (R(32, 4, 64, 32),) * 3}),
    Op("sdpa_causal", lambda fw, q, k, v: fw.F.scaled_dot_product_attention(q, k, v, is_causal=True),
       {"heads": (R(*HEADS),) * 3, "text": (R(32, 4, 64, 32),) * 3}),
    # losses
    Op("cross_entropy", lambda fw, x, y: fw.F.cross_entropy(x, y),
       {"gpt logits": (R(2048, 96), ids(96, 2048)), "mlp logits": (R(128, 10), ids(10, 128))},
       covers=("CrossEntropyLoss",)),
    Op("nll_loss", lambda fw, x, y: fw.F.nll_loss(x, y),
       {"gpt logits": (R(2048, 96), ids(96, 2048)), "mlp logits": (R(128, 10), ids(10, 128))},
       covers=("NLLLoss",)),
    Op("mse_loss", lambda fw, x, y: fw.F.mse_loss(x, y),
       {"mlp": (R(*MLP), C(*MLP)), "gpt": (R(*GPT), C(*GPT))}, covers=("MSELoss",)),
    Op("l1_loss", lambda fw, x, y: fw.F.l1_loss(x, y),
       {"mlp": (R(*MLP), C(*MLP)), "gpt": (R(*GPT), C(*GPT))}, covers=("L1Loss",)),
    Op("binary_cross_entropy_with_logits", lambda fw, x, y: fw.F.binary_cross_entropy_with_logits(x, y),
       {"mlp": (R(*MLP), C(*MLP, domain="prob")), "gpt": (R(*GPT), C(*GPT, domain="prob"))},
       covers=("BCEWithLogitsLoss",)),
    Op("sigmoid_focal_loss", lambda fw, x, y: _sigmoid_focal_loss(fw, x, y),
       {"heatmap": (R(*HEATMAP), C(*HEATMAP, domain="prob")),
        "mlp": (R(*MLP), C(*MLP, domain="prob"))}),
    Op("binary_cross_entropy", lambda fw, x, y: fw.F.binary_cross_entropy(x, y),
       {"mlp": (R(*MLP, domain="prob"), C(*MLP, domain="prob")),
        "gpt": (R(*GPT, domain="prob"), C(*GPT, domain="prob"))}, covers=("BCELoss",)),
    # recurrent and attention layers (their parameters take gradients too)
    Op("LSTM", lambda fw, x: fw.m(x)[0], {"rnn": (R(*RNN),), "gpt": (R(*GPT),)},
       layer=lambda nn, x: nn.LSTM(x.shape[-1], x.shape[-1], batch_first=True)),
    Op("GRU", lambda fw, x: fw.m(x)[0], {"rnn": (R(*RNN),), "gpt": (R(*GPT),)},
       layer=lambda nn, x: nn.GRU(x.shape[-1], x.shape[-1], batch_first=True)),
    Op("RNN", lambda fw, x: fw.m(x)[0], {"rnn": (R(*RNN),), "gpt": (R(*GPT),)},
       layer=lambda nn, x: nn.RNN(x.shape[-1], x.shape[-1], batch_first=True)),
    Op("MultiheadAttention", lambda fw, x: fw.m(x, x, x, need_weights=False)[0],
       {"text": (R(32, 64, 128),), "gpt": (R(*GPT),)},
       layer=lambda nn, x: nn.MultiheadAttention(128, 4, batch_first=True)),
    Op("TransformerEncoderLayer", lambda fw, x: fw.m(x), {"text": (R(32, 64, 128),), "gpt": (R(*GPT),)},
       layer=lambda nn, x: nn.TransformerEncoderLayer(128, 4, dropout=0.1, batch_first=True),
       covers=("TransformerEncoder",)),
    Op("TransformerDecoderLayer", lambda fw, x, memory: fw.m(x, memory),
       {"text": (R(32, 64, 128), R(32, 64, 128)), "gpt": (R(*GPT), R(*GPT))},
       layer=lambda nn, x: nn.TransformerDecoderLayer(128, 4, dropout=0.1, batch_first=True)),
]

# layerwise public names (nn layers, nn.functional) the sweep leaves out, and why
NOT_SWEPT = {
    "one_hot": "not differentiable",
    "upsample": "the deprecated spelling of interpolate",
    "Identity": "returns its input",
    "RNNBase": "the base class of LSTM, GRU and RNN",
    "LearnedPositionalEmbedding": "layerwise only: no PyTorch counterpart",
    "SinusoidalPositionalEncoding": "layerwise only: no PyTorch counterpart",
}


# --- building and timing one entry ---------------------------------------------------------------


class Framework:
    """The names an op is written with: ``torch`` and ``F`` of one framework, and its layer."""

    def __init__(self, name):
        if name == "pytorch":
            import torch
        else:
            import layerwise as torch
        self.torch, self.nn, self.F = torch, torch.nn, torch.nn.functional
        self.m = None


def runs(op, label, fw_name, seed=0):
    """(forward, forward_backward): zero-argument runs of ``op`` at size ``label``."""
    fw = Framework(fw_name)
    torch = fw.torch
    rng = np.random.default_rng(seed)
    arrays = [spec.array(rng) for spec in op.sizes[label]]
    inputs = [torch.from_numpy(a) for a in arrays]
    for t, spec in zip(inputs, op.sizes[label]):
        if spec.grad and not spec.high:
            t.requires_grad_(True)
    leaves = [t for t in inputs if t.requires_grad]
    if op.layer is not None:
        torch.manual_seed(0)
        fw.m = op.layer(fw.nn, arrays[0])
        fw.m.train()
        leaves += list(fw.m.parameters())
    with torch.no_grad():
        out_shape = tuple(op.fn(fw, *inputs).shape)
    g = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(out_shape).astype(np.float32))

    def forward():
        with torch.no_grad():
            return op.fn(fw, *inputs)

    def forward_backward():
        for t in leaves:
            t.grad = None
        op.fn(fw, *inputs).backward(g)
    return forward, forward_backward


PASSES = ("forward", "fwd+bwd")
# runs per framework, and runs per turn with a pause between turns (timing.interleaved)
FULL = {"n_steps": 40, "warmup": 3, "block": 20, "gap": 0.25}
QUICK = {"n_steps": 2, "warmup": 1, "block": 1, "gap": 0.01}


def sweep(ops, frameworks, quick):
    """Rows (op, size, pass, {framework: seconds})."""
    rows = []
    for op in ops:
        for label in op.sizes:
            built = {fw: runs(op, label, fw) for fw in frameworks}
            for i, pass_name in enumerate(PASSES):
                seconds = interleaved({fw: built[fw][i] for fw in frameworks},
                                      **(QUICK if quick else FULL))
                rows.append((op.name, label, pass_name, seconds))
        print(f"  timed {op.name}", file=sys.stderr)
    return rows


def print_table(rows, threads, quick):
    cpu = platform.processor() or platform.machine()
    kind = "QUICK SMOKE RUN, not a measurement; " if quick else ""
    print(f"\n{kind}{date.today()}, {os.cpu_count()} cores ({cpu}), float32, {threads} threads\n")
    with_torch = all("pytorch" in s for *_, s in rows)
    if not with_torch:
        print("| op | size | pass | layerwise µs |\n|---|---|---|---:|")
        for name, label, pass_name, s in sorted(rows, key=lambda r: -r[3]["layerwise"]):
            print(f"| {name} | {label} | {pass_name} | {s['layerwise'] * 1e6:.1f} |")
        return
    speed = lambda row: row[3]["pytorch"] / row[3]["layerwise"]
    ordered = sorted(rows, key=speed)
    print("| op | size | pass | layerwise µs | PyTorch µs | speed |\n|---|---|---|---:|---:|---:|")
    for row in ordered:
        name, label, pass_name, s = row
        print(f"| {name} | {label} | {pass_name} | {s['layerwise'] * 1e6:.1f} | "
              f"{s['pytorch'] * 1e6:.1f} | {speed(row):.2f}x |")
    print()
    for pass_name in PASSES:
        ratios = [speed(r) for r in rows if r[2] == pass_name]
        if ratios:
            print(f"median speed, {pass_name}: {statistics.median(ratios):.2f}x over {len(ratios)} rows")
    print(f"median speed, all: {statistics.median(speed(r) for r in rows):.2f}x\n\nten worst:")
    for row in ordered[:10]:
        print(f"  {speed(row):.2f}x  {row[0]} ({row[1]}, {row[2]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [op.name for op in OPS]
    parser.add_argument("ops", nargs="*", help="op names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="a couple of runs each: a smoke run, not a measurement")
    args = parser.parse_args()
    unknown = [o for o in args.ops if o not in names]
    if unknown:
        parser.error(f"unknown op(s) {unknown}; choose from {names}")
    frameworks = frameworks_on(args.threads, parser)
    chosen = [op for op in OPS if not args.ops or op.name in args.ops]
    print_table(sweep(chosen, frameworks, args.quick), args.threads, args.quick)


if __name__ == "__main__":
    main()
