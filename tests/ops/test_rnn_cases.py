"""The embedding lookup and the whole-sequence RNN/LSTM/GRU Functions through the harness:
forward against step-by-step NumPy float64 references written from the PyTorch equations,
gradients (backpropagation through time, initial states included) against finite differences.
Each Function is fed the input projection F.linear(x, W_ih, b) as its layer does, so the
references take x and the PyTorch weights. The stacked layers (2 layers, bidirectional) run
through the same harness via the nn modules. The harness's path axis runs every LSTM case,
in float32, through the compiled cells of layerwise/ops/fast/rnn.py as well."""

import numpy as np

import layerwise as lw
from layerwise.nn import functional as F
from layerwise.nn.rnn import GRU, LSTM, RNN
from layerwise.ops.embedding import embedding
from layerwise.ops.rnn import GRUFunction, LSTMFunction, RNNFunction
from tests.harness import OpCase, harness_tests


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


# --- NumPy references: one cell step at a time, time-major ------------------------------------


def np_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def np_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    xr, xz, xn = np.split(x @ w_ih.T + b_ih, 3, axis=-1)
    hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def np_rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    a = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    return np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)


def np_sequence(cell, x, states, weights, batch_first=False, reverse=False, **kw):
    """Run ``cell`` over time; returns the outputs (input layout) and the final states."""
    if len(weights) == 2:  # no bias
        gates = weights[0].shape[0]
        weights = list(weights) + [np.zeros(gates), np.zeros(gates)]
    xs = np.swapaxes(x, 0, 1) if batch_first else x
    steps = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    outs = [None] * len(xs)
    for t in steps:
        result = cell(xs[t], *states, *weights, **kw)
        states = result if isinstance(result, tuple) else (result,)
        outs[t] = states[0]
    out = np.stack(outs)
    return (np.swapaxes(out, 0, 1) if batch_first else out), states


def np_stacked(cell, x, states, params, num_layers, bidirectional, batch_first, **kw):
    """A multi-layer, optionally bidirectional stack; states (L*D, B, H) each, params as the
    module's names -> arrays. Returns output and final states stacked (L*D, B, H)."""
    dirs = 2 if bidirectional else 1
    finals = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for d, suffix in enumerate(["", "_reverse"][:dirs]):
            k = layer * dirs + d
            names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
            w = [
                params[f"{n}_l{layer}{suffix}"] for n in names if f"{n}_l{layer}{suffix}" in params
            ]
            out, fin = np_sequence(cell, x, [s[k] for s in states], w, batch_first, d == 1, **kw)
            outs.append(out)
            for store, value in zip(finals, fin):
                store.append(value)
        x = np.concatenate(outs, axis=-1)
    return x, [np.stack(f) for f in finals]


# --- the Functions as harness ops ----------------------------------------------------------


def _lstm_case(name, T, B, I, H, batch_first=False, reverse=False, bias=True):
    xs = (B, T, I) if batch_first else (T, B, I)
    shapes = [xs, (B, H), (B, H), (4 * H, I), (4 * H, H)] + [(4 * H,), (4 * H,)] * bias

    def op(x, h0, c0, w_ih, w_hh, *b):
        xw = F.linear(x, w_ih, b[0] + b[1] if b else None)  # the projection the layer feeds in
        return LSTMFunction.apply(xw, h0, c0, w_hh, batch_first=batch_first, reverse=reverse)

    def ref(x, h0, c0, *w):
        out, (_, c_n) = np_sequence(np_lstm_cell, x, (h0, c0), w, batch_first, reverse)
        return np.concatenate([out.ravel(), c_n.ravel()])  # the Function's packed output

    return OpCase(name, op, ref, [tuple(shapes)])


def _gru_case(name, T, B, I, H, batch_first=False, reverse=False, bias=True):
    xs = (B, T, I) if batch_first else (T, B, I)
    shapes = [xs, (B, H), (3 * H, I), (3 * H, H)] + [(3 * H,), (3 * H,)] * bias

    def op(x, h0, w_ih, w_hh, *b):
        xw = F.linear(x, w_ih, b[0] if b else None)  # b_hn stays inside the loop: b_hh goes in
        return GRUFunction.apply(xw, h0, w_hh, *b[1:], batch_first=batch_first, reverse=reverse)

    def ref(x, h0, *w):
        return np_sequence(np_gru_cell, x, (h0,), w, batch_first, reverse)[0]

    return OpCase(name, op, ref, [tuple(shapes)])


def _rnn_case(name, T, B, I, H, nonlinearity="tanh", batch_first=False, reverse=False, bias=True):
    xs = (B, T, I) if batch_first else (T, B, I)
    shapes = [xs, (B, H), (H, I), (H, H)] + [(H,), (H,)] * bias

    def op(x, h0, w_ih, w_hh, *b):
        xw = F.linear(x, w_ih, b[0] + b[1] if b else None)
        return RNNFunction.apply(
            xw, h0, w_hh, nonlinearity=nonlinearity, batch_first=batch_first, reverse=reverse
        )

    def ref(x, h0, *w):
        return np_sequence(
            np_rnn_cell, x, (h0,), w, batch_first, reverse, nonlinearity=nonlinearity
        )[0]

    return OpCase(name, op, ref, [tuple(shapes)])


# --- whole modules as harness ops: parameters passed in as the op's inputs --------------------


def _module_case(name, cls, num_layers, bidirectional, batch_first, T=3, B=2, I=2, H=2, **kw):
    lw.manual_seed(0)
    template = cls(
        I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, **kw
    )
    names = [n for n, _ in template.named_parameters()]
    dirs = 2 if bidirectional else 1
    n_states = 2 if cls is LSTM else 1
    xs = (B, T, I) if batch_first else (T, B, I)
    shapes = (
        [xs]
        + [(num_layers * dirs, B, H)] * n_states
        + [tuple(p.shape) for p in template.parameters()]
    )

    def op(x, *rest):
        states, params = rest[:n_states], rest[n_states:]
        for n, p in zip(names, params):
            setattr(template, n, p)  # the module reads its weights by name at call time
        hx = tuple(states) if cls is LSTM else states[0]
        out, fin = template(x, hx)
        fins = fin if cls is LSTM else (fin,)
        return lw.cat([out.reshape(-1)] + [f.reshape(-1) for f in fins])

    cell = {LSTM: np_lstm_cell, GRU: np_gru_cell, RNN: np_rnn_cell}[cls]
    cell_kw = {"nonlinearity": kw.get("nonlinearity", "tanh")} if cls is RNN else {}

    def ref(x, *rest):
        states, params = rest[:n_states], dict(zip(names, rest[n_states:]))
        out, fins = np_stacked(
            cell, x, states, params, num_layers, bidirectional, batch_first, **cell_kw
        )
        return np.concatenate([out.ravel()] + [f.ravel() for f in fins])

    return OpCase(name, op, ref, [tuple(shapes)])


# --- embedding -------------------------------------------------------------------------------

IDX = np.array([[0, 3, 3], [1, 3, 0]])  # repeats, so the backward must add, not assign

CASES = [
    OpCase(
        "embedding",
        lambda w: embedding(lw.tensor(IDX), w),
        lambda w: w[IDX],
        [((4, 5),), ((5, 1),)],
    ),
    OpCase(
        "embedding_1d",
        lambda w: embedding(lw.tensor([2, 2, 2, 0]), w),
        lambda w: w[[2, 2, 2, 0]],
        [((3, 2),)],
    ),
    _lstm_case("lstm", T=3, B=2, I=3, H=2),
    _lstm_case("lstm_reverse_batch_first", T=3, B=2, I=2, H=2, batch_first=True, reverse=True),
    _lstm_case("lstm_nobias_batch_first", T=4, B=1, I=2, H=3, batch_first=True, bias=False),
    _lstm_case("lstm_batch_6_reverse", T=5, B=6, I=3, H=4, reverse=True),
    _gru_case("gru", T=3, B=2, I=3, H=2),
    _gru_case("gru_reverse_batch_first", T=3, B=2, I=2, H=2, batch_first=True, reverse=True),
    _gru_case("gru_nobias_reverse", T=4, B=1, I=2, H=3, reverse=True, bias=False),
    _rnn_case("rnn_tanh", T=3, B=2, I=3, H=2),
    _rnn_case(
        "rnn_relu_reverse_batch_first",
        T=4,
        B=2,
        I=2,
        H=3,
        nonlinearity="relu",
        batch_first=True,
        reverse=True,
    ),
    _rnn_case("rnn_tanh_nobias_reverse", T=3, B=2, I=2, H=2, reverse=True, bias=False),
    _module_case("LSTM_2layer_bidirectional", LSTM, 2, True, batch_first=False),
    _module_case("LSTM_2layer_batch_first", LSTM, 2, False, batch_first=True),
    _module_case("GRU_2layer_bidirectional_batch_first", GRU, 2, True, batch_first=True),
    _module_case("RNN_2layer_bidirectional", RNN, 2, True, batch_first=False),
    _module_case("LSTM_2layer_bidirectional_batch_first_batch_5", LSTM, 2, True, batch_first=True,
                 B=5),
    _module_case(
        "RNN_relu_bidirectional_nobias",
        RNN,
        1,
        True,
        batch_first=True,
        nonlinearity="relu",
        bias=False,
    ),
]

(test_forward_matches_numpy, test_gradient_matches_finite_differences,
 test_fast_path_matches_reference) = harness_tests(CASES)
