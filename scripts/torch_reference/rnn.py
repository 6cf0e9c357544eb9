"""Reference outputs and gradients of torch.nn.RNN / LSTM / GRU for tests/nn/test_rnn_layers.py.

Run with a Python that has torch (not a layerwise dependency):

    uv run --group reference python scripts/torch_reference/rnn.py

(or `uv run --with <a local torch wheel> python ...` where PyPI's CUDA build is unwanted)

Each case writes tests/fixtures/torch/rnn_<case>.safetensors holding
    - the module's state_dict under its own keys (weight_ih_l0, ...), unchanged;
    - "config/<option>": the constructor options as 0-d int tensors (nonlinearity as "config/relu");
    - "input/x", "input/h0", "input/c0": the input and initial states (when given);
    - "probe/output", "probe/h_n", "probe/c_n": fixed weights of the scalar loss
          loss = sum(output * probe_output) + sum(h_n * probe_h_n) [+ sum(c_n * probe_c_n)];
    - "output/output", "output/h_n", "output/c_n": the forward results;
    - "grad/<name>": d loss / d name for the input, the initial states and every parameter.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "torch"

# name: (class, options, seq_len, batch, give initial state)
CASES = {
    "lstm": (
        torch.nn.LSTM,
        dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True),
        5,
        2,
        True,
    ),
    "lstm_nobias": (torch.nn.LSTM, dict(input_size=3, hidden_size=5, bias=False), 4, 3, False),
    "gru": (
        torch.nn.GRU,
        dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True),
        5,
        2,
        True,
    ),
    "gru_timemajor": (torch.nn.GRU, dict(input_size=4, hidden_size=3, num_layers=1), 6, 2, True),
    "rnn_tanh": (
        torch.nn.RNN,
        dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
        5,
        2,
        True,
    ),
    "rnn_relu": (
        torch.nn.RNN,
        dict(input_size=3, hidden_size=4, nonlinearity="relu", bias=False, batch_first=True),
        4,
        3,
        False,
    ),
}


def make_case(name, cls, options, seq_len, batch, give_state, seed):
    torch.manual_seed(seed)
    module = cls(**options)
    is_lstm = cls is torch.nn.LSTM
    layers, dirs = options.get("num_layers", 1), 2 if options.get("bidirectional") else 1
    hidden = options["hidden_size"]
    shape = (
        (batch, seq_len, options["input_size"])
        if options.get("batch_first")
        else (seq_len, batch, options["input_size"])
    )
    x = torch.randn(shape, requires_grad=True)
    state = {}
    if give_state:
        state["h0"] = (0.5 * torch.randn(layers * dirs, batch, hidden)).requires_grad_()
        if is_lstm:
            state["c0"] = (0.5 * torch.randn(layers * dirs, batch, hidden)).requires_grad_()
    hx = None
    if give_state:
        hx = (state["h0"], state["c0"]) if is_lstm else state["h0"]
    output, final = module(x, hx)
    finals = {"h_n": final[0], "c_n": final[1]} if is_lstm else {"h_n": final}
    results = {"output": output, **finals}
    probes = {k: torch.randn(v.shape) for k, v in results.items()}
    loss = sum((results[k] * probes[k]).sum() for k in results)
    loss.backward()

    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for key, value in options.items():  # ints and bools; nonlinearity as config/relu = 0 or 1
        if key == "nonlinearity":
            key, value = "relu", value == "relu"
        tensors[f"config/{key}"] = torch.tensor(int(value))
    tensors["input/x"] = x.detach().clone()
    for k, v in state.items():
        tensors[f"input/{k}"] = v.detach().clone()
        tensors[f"grad/{k}"] = v.grad.clone()
    for k, v in results.items():
        tensors[f"output/{k}"] = v.detach().clone()
        tensors[f"probe/{k}"] = probes[k]
    tensors["grad/x"] = x.grad.clone()
    for k, p in module.named_parameters():
        tensors[f"grad/{k}"] = p.grad.clone()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = OUT / f"rnn_{name}.safetensors"
    save_file(tensors, str(path))
    print(f"wrote {path.relative_to(OUT.parents[2])} ({path.stat().st_size} bytes)")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, (cls, options, seq_len, batch, give_state)) in enumerate(CASES.items()):
        make_case(name, cls, options, seq_len, batch, give_state, seed)


if __name__ == "__main__":
    main()
