"""The benchmark workloads, each built the same way in layerwise and in PyTorch.

Each ``<name>_layerwise()`` / ``<name>_pytorch()`` returns a zero-argument training step
(zero_grad, forward, loss, backward, optimizer step) on fixed random data, float32.
"""

import functools
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _data(shape_x, n_classes, n_targets, seed=0, ints=False):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, n_classes, shape_x) if ints else rng.standard_normal(shape_x).astype(np.float32)
    return x, rng.integers(0, n_classes, n_targets)


def _lw_step(model, opt, loss_of, data, compiled, halves=False):
    """A zero-argument step on fixed data. The step proper takes the data as arguments, as a
    training loop's would, so that ``compiled`` can hand it to lw.compile. ``halves`` runs its
    forward and backward as two halves of the batch on two cores
    (lw.parallel.backward_in_halves): the same model, data, loss and optimizer."""
    import layerwise as lw

    def step(*batch):
        opt.zero_grad()
        if halves:
            lw.parallel.backward_in_halves(model, lambda *part: loss_of(model, *part), *batch)
        else:
            loss_of(model, *batch).backward()
        opt.step()
    if compiled:
        step = lw.compile(step)
    return lambda: step(*data)


def _torch_step(model, opt, loss_of):
    def step():
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
    return step


# Matmul FLOPs of one training step: 2 per multiply-add forward, and twice that backward (the
# input gradient and the weight gradient), except where the input needs no gradient.


def _train_flops(forward_macs, input_layer_macs=0):
    """FLOPs of forward + backward, where the first layer's input gradient is not needed."""
    return 6 * forward_macs - 2 * input_layer_macs


# --- MLP 784-512-512-10, batch 128, Adam -----------------------------------------------------
MLP_FLOPS = _train_flops(128 * (784 * 512 + 512 * 512 + 512 * 10), 128 * 784 * 512)


def _mlp(nn):
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def mlp_layerwise(compiled=False):
    import layerwise as lw
    from layerwise import nn, optim
    import layerwise.nn.functional as F

    lw.manual_seed(0)
    model = _mlp(nn)
    x, y = _data((128, 784), 10, 128)
    x, y = lw.tensor(x), lw.tensor(y)
    return _lw_step(model, optim.Adam(model.parameters(), lr=1e-3),
                    lambda m, x, y: F.cross_entropy(m(x), y), (x, y), compiled)


def mlp_pytorch():
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    model = _mlp(nn)
    x, y = (torch.from_numpy(a) for a in _data((128, 784), 10, 128))
    return _torch_step(model, torch.optim.Adam(model.parameters(), lr=1e-3),
                       lambda m: torch.nn.functional.cross_entropy(m(x), y))


# --- CNN: conv 1->32 3x3, pool, conv 32->64 3x3, pool, FC 3136->128->10, batch 64 -------------


def _cnn(nn):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


_CNN_CONV1, _CNN_CONV2 = 64 * 28 * 28 * 32 * 9, 64 * 14 * 14 * 64 * 32 * 9
CNN_FLOPS = _train_flops(_CNN_CONV1 + _CNN_CONV2 + 64 * (3136 * 128 + 128 * 10), _CNN_CONV1)


def cnn_layerwise(compiled=False, halves=False):
    import layerwise as lw
    from layerwise import nn, optim
    import layerwise.nn.functional as F

    lw.manual_seed(0)
    model = _cnn(nn)
    x, y = _data((64, 1, 28, 28), 10, 64)
    x, y = lw.tensor(x), lw.tensor(y)
    return _lw_step(model, optim.Adam(model.parameters(), lr=1e-3),
                    lambda m, x, y: F.cross_entropy(m(x), y), (x, y), compiled)


def cnn_pytorch():
    import torch

    torch.manual_seed(0)
    model = _cnn(torch.nn)
    x, y = (torch.from_numpy(a) for a in _data((64, 1, 28, 28), 10, 64))
    return _torch_step(model, torch.optim.Adam(model.parameters(), lr=1e-3),
                       lambda m: torch.nn.functional.cross_entropy(m(x), y))


# --- GPT: 4 layers, d=128, 4 heads, context 128, vocab 96, batch 16, AdamW -------------------
GPT_SHAPE = dict(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=128)
_BT, _D = 16 * 128, 128
# per layer: qkv, output projection, the MLP's two, and attention's QK^T and AV (causal masking
# is not exploited by either framework, so the full T x T products count)
_GPT_LAYER = _BT * (3 * _D * _D + _D * _D + 8 * _D * _D) + 2 * _BT * 128 * _D
GPT_FLOPS = _train_flops(4 * _GPT_LAYER + _BT * _D * 96)


def gpt_layerwise(compiled=False, halves=False):
    import layerwise as lw
    from layerwise import optim
    from layerwise.models import GPT, GPTConfig

    lw.manual_seed(0)
    model = GPT(GPTConfig(**GPT_SHAPE, dropout=0.0))
    idx, targets = _data((16, 128), 96, (16, 128), ints=True)
    idx, targets = lw.tensor(idx), lw.tensor(targets)
    return _lw_step(model, optim.AdamW(model.parameters(), lr=3e-4),
                    lambda m, idx, targets: m(idx, targets)[1], (idx, targets), compiled,
                    halves)


def gpt_pytorch():
    import torch

    sys.path.insert(0, str(REPO / "scripts" / "torch_reference"))
    from attention import GPT  # the nanoGPT-style torch GPT the reference fixtures use

    torch.manual_seed(0)
    model = GPT(**GPT_SHAPE)
    idx, targets = (torch.from_numpy(a) for a in _data((16, 128), 96, (16, 128), ints=True))
    return _torch_step(model, torch.optim.AdamW(model.parameters(), lr=3e-4), lambda m: m(idx, targets)[1])


# --- LSTM language model: vocab 96, embedding and hidden 256, sequence 64, batch 32, Adam -----


# the input projection, the recurrent product and the head, for all 32 x 64 positions; the
# embedding is a lookup
LSTM_FLOPS = _train_flops(32 * 64 * (256 * 1024 + 256 * 1024 + 256 * 96))


def lstm_layerwise(compiled=False):
    import layerwise as lw
    from layerwise import optim
    from layerwise.models import LSTMLanguageModel
    import layerwise.nn.functional as F

    lw.manual_seed(0)
    model = LSTMLanguageModel(96, 256, 256)
    idx, targets = _data((32, 64), 96, (32, 64), ints=True)
    idx, targets = lw.tensor(idx), lw.tensor(targets)

    def loss_of(m, idx, targets):
        logits, _ = m(idx)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, 96), targets.reshape(-1))

    return _lw_step(model, optim.Adam(model.parameters(), lr=1e-3), loss_of, (idx, targets),
                    compiled)


def lstm_pytorch():
    import torch

    class LSTMLanguageModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(96, 256)
            self.lstm = torch.nn.LSTM(256, 256, batch_first=True)
            self.head = torch.nn.Linear(256, 96)

        def forward(self, idx):
            out, _ = self.lstm(self.embedding(idx))
            return self.head(out)

    torch.manual_seed(0)
    model = LSTMLanguageModel()
    idx, targets = (torch.from_numpy(a) for a in _data((32, 64), 96, (32, 64), ints=True))
    return _torch_step(model, torch.optim.Adam(model.parameters(), lr=1e-3),
                       lambda m: torch.nn.functional.cross_entropy(m(idx).reshape(-1, 96), targets.reshape(-1)))


# --- inference at batch 1: forward only, eval mode, no graph -----------------------------------


def _one_sample(shape):
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def infer_layerwise(make_model, shape, compiled=False):
    import layerwise as lw
    from layerwise import nn

    lw.manual_seed(0)
    model = make_model(nn).eval()
    x = lw.tensor(_one_sample(shape))

    def forward(x):
        with lw.no_grad():
            return model(x)
    if compiled:
        forward = lw.compile(forward)
    return lambda: forward(x)


def infer_pytorch(make_model, shape):
    import torch

    torch.manual_seed(0)
    model = make_model(torch.nn).eval()
    x = torch.from_numpy(_one_sample(shape))

    def forward():
        with torch.inference_mode():
            return model(x)
    return forward


INFERENCE = {
    "mlp": ("MLP 784-512-512-10, batch 1, forward", _mlp, (1, 784)),
    "cnn": ("CNN conv32-conv64-fc128, batch 1, forward", _cnn, (1, 1, 28, 28)),
}

FLOPS = {"mlp": MLP_FLOPS, "cnn": CNN_FLOPS, "cnn-halves": CNN_FLOPS, "gpt": GPT_FLOPS,
         "gpt-halves": GPT_FLOPS, "lstm": LSTM_FLOPS}

WORKLOADS = {
    "mlp": ("MLP 784-512-512-10, batch 128, Adam", mlp_layerwise, mlp_pytorch),
    "cnn": ("CNN conv32-conv64-fc128, batch 64, 28x28, Adam", cnn_layerwise, cnn_pytorch),
    "cnn-halves": ("the same CNN step, layerwise's as two halves of the batch on two cores "
                   "(lw.parallel.backward_in_halves)", functools.partial(cnn_layerwise, halves=True),
                   cnn_pytorch),
    "gpt": ("GPT 4 layers, d=128, 4 heads, context 128, vocab 96, batch 16, AdamW", gpt_layerwise, gpt_pytorch),
    "gpt-halves": ("the same GPT step, layerwise's as two halves of the batch on two cores "
                   "(lw.parallel.backward_in_halves)", functools.partial(gpt_layerwise, halves=True),
                   gpt_pytorch),
    "lstm": ("LSTM LM vocab 96, embedding/hidden 256, sequence 64, batch 32, Adam", lstm_layerwise, lstm_pytorch),
}
