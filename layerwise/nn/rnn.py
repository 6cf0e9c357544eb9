"""Recurrent layers: RNN, LSTM, GRU, with PyTorch's parameter names, layouts and shapes.

Parameters per layer k and direction (suffix "" or "_reverse"), registered in PyTorch's order:

    weight_ih_l{k}{suffix}  (gates * hidden_size, layer input size)
    weight_hh_l{k}{suffix}  (gates * hidden_size, hidden_size)
    bias_ih_l{k}{suffix}, bias_hh_l{k}{suffix}  (gates * hidden_size,)

with gates 4 for LSTM (i, f, g, o), 3 for GRU (r, z, n), 1 for RNN, so a PyTorch state_dict
loads unchanged. Each layer and direction is one input projection over all steps (F.linear)
followed by one whole-sequence Function from ``layerwise.ops.rnn`` (see there for why).
"""

import math

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor, check_tensor
from layerwise.nn import functional as F
from layerwise.nn import init
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.ops import elementwise as ew
from layerwise.ops import movement
from layerwise.ops.random import dropout as _dropout
from layerwise.ops.rnn import GRUFunction, LSTMFunction, RNNFunction

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _check_int(cls, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{cls} {name} must be an int >= {minimum}, got {value!r}")


class RNNBase(Module):
    """The stacking, shape checks and parameters shared by RNN, LSTM and GRU."""

    def __init__(
        self,
        mode,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        dtype=None,
    ):
        super().__init__()
        name = type(self).__name__
        _check_int(name, "input_size", input_size, 1)
        _check_int(name, "hidden_size", hidden_size, 1)
        _check_int(name, "num_layers", num_layers, 1)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout <= 1
        ):
            raise ValueError(f"{name} dropout must be a number in [0, 1], got {dropout!r}")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        self.gate_size = _GATES[mode] * hidden_size
        dtype = backend.to_dtype(dtype or backend.default_float())
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            shapes = {
                "weight_ih": (self.gate_size, layer_input),
                "weight_hh": (self.gate_size, hidden_size),
                "bias_ih": (self.gate_size,),
                "bias_hh": (self.gate_size,),
            }
            for suffix in self._suffixes():
                for kind in _KINDS[: 4 if bias else 2]:
                    param = Parameter(xp.empty(shapes[kind], dtype=dtype))
                    setattr(self, f"{kind}_l{layer}{suffix}", param)
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight and bias ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse")[: self.num_directions]

    def _weights(self, layer, suffix):
        """(w_ih, w_hh, b_ih, b_hh) of one layer and direction; biases None without bias."""
        return tuple(
            getattr(self, f"{kind}_l{layer}{suffix}", None) if self.bias or i < 2 else None
            for i, kind in enumerate(_KINDS)
        )

    @property
    def all_weights(self):
        """[[w_ih, w_hh, b_ih, b_hh] for each layer and direction], as in PyTorch."""
        return [
            [w for w in self._weights(layer, suffix) if w is not None]
            for layer in range(self.num_layers)
            for suffix in self._suffixes()
        ]

    def flatten_parameters(self):
        """PyTorch compacts cuDNN weights here; the CPU layout is already what we use."""

    # --- the input projection -----------------------------------------------------------------
    def _input_bias(self, b_ih, b_hh):
        """The biases that fold into the projection: both for RNN and LSTM, b_ih for GRU
        (its b_hn is multiplied by r inside the loop)."""
        return None if b_ih is None else ew.add(b_ih, b_hh)

    # --- shapes -------------------------------------------------------------------------------
    def _check_input(self, input):
        name = type(self).__name__
        check_tensor(input, name)
        layout = (
            "(batch, seq_len, .) with batch_first=True"
            if self.batch_first
            else "(seq_len, batch, .)"
        )
        if input.ndim not in (2, 3):
            raise ValueError(
                f"{name} expected a 3-D input {layout} or a 2-D unbatched input "
                f"(seq_len, .), got shape {tuple(input.shape)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} expected input with last dim input_size={self.input_size}, "
                f"got input of shape {tuple(input.shape)}"
            )
        seq_len = input.shape[1] if input.ndim == 3 and self.batch_first else input.shape[0]
        if seq_len == 0:
            raise ValueError(f"{name} got an empty sequence: input of shape {tuple(input.shape)}")
        if input.dtype != self.weight_ih_l0.dtype:
            raise TypeError(
                f"{name} got input of dtype {input.dtype} but its weights are "
                f"{self.weight_ih_l0.dtype}; convert one of them with .to(dtype)"
            )

    def _initial(self, hx, what, batch, dtype, batched):
        """hx (num_layers * num_directions, batch, hidden) checked, or zeros when None."""
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if hx is None:
            return Tensor(xp.zeros(shape, dtype=dtype))
        want = shape if batched else (shape[0], shape[2])
        if not isinstance(hx, Tensor) or tuple(hx.shape) != want:
            got = tuple(hx.shape) if isinstance(hx, Tensor) else type(hx).__name__
            raise ValueError(
                f"{type(self).__name__} expected {what} of shape {want} "
                f"(num_layers * num_directions, {'batch, ' if batched else ''}"
                f"hidden_size), got {got}"
            )
        if hx.dtype != dtype:
            raise TypeError(f"{type(self).__name__} {what} has dtype {hx.dtype}, input has {dtype}")
        return hx if batched else movement.unsqueeze(hx, 1)

    # --- running the layers -------------------------------------------------------------------
    def _run(self, x, states):
        """x in the layer's layout (batched); states: list of (N, B, H) tensors (h, or h and
        c). Returns the last layer's output and the final states, each (N, B, H)."""
        last = x.shape[1 if self.batch_first else 0] - 1
        finals = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes()):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, suffix)
                xw = F.linear(x, w_ih, self._input_bias(b_ih, b_hh))  # (.., G), all steps
                k = layer * self.num_directions + direction
                out, extra = self._cell(xw, [s[k] for s in states], w_hh, b_hh, direction == 1)
                t = 0 if direction == 1 else last  # where this direction's last state sits
                finals[0].append(out[:, t] if self.batch_first else out[t])
                for store, value in zip(finals[1:], extra):
                    store.append(value)
                outputs.append(out)
            x = outputs[0] if len(outputs) == 1 else movement.cat(outputs, dim=-1)  # (.., D*H)
            if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
                x = _dropout(x, self.dropout, True)
        return x, [movement.stack(f, 0) for f in finals]

    def _forward(self, input, hx_list):
        """Checks, unbatched handling, then _run. hx_list: [(tensor or None, name), ...]."""
        self._check_input(input)
        batched = input.ndim == 3
        x = input if batched else movement.unsqueeze(input, 0 if self.batch_first else 1)
        batch = x.shape[0] if self.batch_first else x.shape[1]
        states = [self._initial(h, what, batch, x.dtype, batched) for h, what in hx_list]
        out, finals = self._run(x, states)
        if not batched:
            out = movement.squeeze(out, 0 if self.batch_first else 1)
            finals = [movement.squeeze(f, 1) for f in finals]
        return out, finals

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        for name, default in (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
        ):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu).

    forward(input, hx=None) -> (output, h_n): output (seq_len, batch, D * hidden_size)
    ((batch, seq_len, .) with batch_first), h_n (num_layers * D, batch, hidden_size).
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        nonlinearity="tanh",
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        dtype=None,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype,
        )

    def _cell(self, xw, initial, w_hh, b_hh, reverse):
        out = RNNFunction.apply(
            xw,
            initial[0],
            w_hh,
            nonlinearity=self.nonlinearity,
            batch_first=self.batch_first,
            reverse=reverse,
        )
        return out, ()

    def forward(self, input, hx=None):
        out, (h_n,) = self._forward(input, [(hx, "hx")])
        return out, h_n


class GRU(RNNBase):
    """Gated recurrent unit (Cho et al. 2014), PyTorch's variant with r applied after W_hn:
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). Same call and shapes as RNN."""

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        dtype=None,
    ):
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype,
        )

    def _input_bias(self, b_ih, b_hh):
        return b_ih

    def _cell(self, xw, initial, w_hh, b_hh, reverse):
        extra = () if b_hh is None else (b_hh,)
        out = GRUFunction.apply(
            xw, initial[0], w_hh, *extra, batch_first=self.batch_first, reverse=reverse
        )
        return out, ()

    def forward(self, input, hx=None):
        out, (h_n,) = self._forward(input, [(hx, "hx")])
        return out, h_n


class LSTM(RNNBase):
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with forget gate), gates (i, f, g, o).

    forward(input, hx=None) with hx = (h_0, c_0) -> (output, (h_n, c_n)); shapes as in RNN,
    c_0 and c_n shaped like h_0 and h_n.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        dtype=None,
    ):
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            dtype,
        )

    def _cell(self, xw, initial, w_hh, b_hh, reverse):
        packed = LSTMFunction.apply(
            xw, initial[0], initial[1], w_hh, batch_first=self.batch_first, reverse=reverse
        )
        layout = xw.shape[:2]  # (T, B) or (B, T)
        t_b, h = layout[0] * layout[1], self.hidden_size
        out = packed[: t_b * h].reshape(layout + (h,))  # (T, B, H) or (B, T, H)
        c_n = packed[t_b * h :].reshape(-1, h)  # (B, H)
        return out, (c_n,)

    def forward(self, input, hx=None):
        if hx is None:
            h0 = c0 = None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h0, c0 = hx
        else:
            length = f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""
            raise TypeError(
                f"LSTM hx must be a tuple (h_0, c_0) or None, got {type(hx).__name__}{length}"
            )
        out, (h_n, c_n) = self._forward(input, [(h0, "h_0"), (c0, "c_0")])
        return out, (h_n, c_n)
