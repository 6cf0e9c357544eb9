"""layerwise's whole-sequence recurrent ops as ONNX's LSTM, GRU and RNN nodes.

layerwise's ops take ``xw = x W_ih^T + b`` already projected (ops/rnn.py), so the ONNX node
gets xw as its input X and, as W, a permutation matrix: X W^T then only reorders the gate
blocks, exactly (each entry is one input times 1). The gate orders differ:

    LSTM: layerwise (PyTorch) i, f, g, o      ONNX i, o, f, c
    GRU:  layerwise (PyTorch) r, z, n         ONNX z, r, h   (linear_before_reset=1 is
          PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn)))

so W_hh's row blocks (and the GRU's b_hh) are gathered into ONNX's order. Outputs are put
back in layerwise's layout: the LSTM's packed (outputs, c_T) vector, the others' outputs.
"""

from layerwise.backend import xp
from layerwise.onnx.table import emits
from layerwise.ops import rnn

LSTM_ORDER = (0, 3, 1, 2)  # ONNX's i, o, f, c from layerwise's i, f, g, o
GRU_ORDER = (1, 0, 2)  # ONNX's z, r, h from layerwise's r, z, n


def _block_rows(order, hidden):
    """Row indices that put gate blocks of ``hidden`` rows into ``order``."""
    return xp.concatenate([xp.arange(b * hidden, (b + 1) * hidden) for b in order])


def _time_major(g, op, name):
    return g.op("Transpose", [name], perm=[1, 0, 2]) if op.params["batch_first"] else name


def _recurrent(g, op, kind, w_hh, initial, order, bias="", **attrs):
    """The ONNX node for one layer and direction; returns (Y (T, B, H) time-major, [Y_h,
    Y_c])."""
    xw = op.inputs[0]
    hidden = w_hh.shapes[0][1]
    rows = _block_rows(order, hidden)
    permutation = xp.eye(len(rows), dtype=xw.dtype)[rows][None]  # (1, G, G): X W^T = X[:, rows]
    recurrence = g.op("Unsqueeze", [g.op("Gather", [w_hh.name, g.const(rows)], axis=0),
                                    g.ints([0])])  # (1, G, H) in ONNX's gate order
    states = [g.op("Unsqueeze", [v.name, g.ints([0])]) for v in initial]  # (1, B, H) each
    inputs = [_time_major(g, op, xw.name), g.const(permutation), recurrence, bias, ""] + states
    direction = "reverse" if op.params["reverse"] else "forward"
    outs = g.ops(kind, inputs, 3 if kind == "LSTM" else 2, hidden_size=int(hidden),
                 direction=direction, **attrs)
    return g.op("Squeeze", [outs[0], g.ints([1])]), outs[1:]  # (T, 1, B, H) -> (T, B, H)


def _layout(g, op, y):
    """(T, B, H) back to the op's layout."""
    return _time_major(g, op, y)


@emits(rnn.LSTMFunction)
def lstm(g, op):
    _, h0, c0, w_hh = op.inputs
    y, (_, c_last) = _recurrent(g, op, "LSTM", w_hh, [h0, c0], LSTM_ORDER)
    flat = g.ints([-1])
    outputs = g.op("Reshape", [_layout(g, op, y), flat])
    return g.op("Concat", [outputs, g.op("Reshape", [c_last, flat])], axis=0)  # (T*B*H + B*H,)


@emits(rnn.GRUFunction)
def gru(g, op):
    _, h0, w_hh = op.inputs[:3]
    bias = ""
    if len(op.inputs) > 3:  # b_hh: (1, 6H) = [W's bias (zeros: already in xw), R's bias]
        b_hh = op.inputs[3]
        hidden = w_hh.shapes[0][1]
        rows = g.op("Gather", [b_hh.name, g.const(_block_rows(GRU_ORDER, hidden))], axis=0)
        zeros = g.const(xp.zeros(3 * hidden, dtype=b_hh.dtype))
        bias = g.op("Unsqueeze", [g.op("Concat", [zeros, rows], axis=0), g.ints([0])])
    y, _ = _recurrent(g, op, "GRU", w_hh, [h0], GRU_ORDER, bias, linear_before_reset=1)
    return _layout(g, op, y)


@emits(rnn.RNNFunction)
def rnn_tanh_relu(g, op):
    activation = {"tanh": "Tanh", "relu": "Relu"}[op.params["nonlinearity"]]
    _, h0, w_hh = op.inputs
    y, _ = _recurrent(g, op, "RNN", w_hh, [h0], (0,), activations=[activation])
    return _layout(g, op, y)
