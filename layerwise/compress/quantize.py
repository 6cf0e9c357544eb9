"""Post-training int8 quantization: per-channel symmetric weights, calibrated or dynamic
activations, a model file a quarter the size.

    q = quantize_static(model, calib_batches)   # activation ranges from a few batches
    q = quantize_dynamic(model)                 # Linear/LSTM: activations scaled per batch
    save_quantized(q, "model.int8.safetensors")

Weights: each output channel c gets scale_c = max|W_c| / 127 and W_c ~= scale_c * q_c with q_c
int8 in [-127, 127] (symmetric, so zero is exact and no zero point is stored; Jacob et al.
2018 and PyTorch's per-channel qint8 do the same). Activations: per-tensor symmetric, scale =
max|x| / 127 over the calibration batches (static) or the current batch (dynamic).

Kernels, measured (bench/compress.py): NumPy has no int8 GEMM; an int32 matmul runs without
BLAS and is many times slower than float32 BLAS on the same shapes. So the default kernel is
'dequant': the int8 weights are expanded to float32 once (w = q * scale), the input is
rounded to its int8 grid and back, and float32 BLAS does the product. The result is what an
int8 kernel with int32 accumulation computes, up to float32 rounding of the sums. kernel='int'
runs the integer product (int32 accumulation of int8 x int8, rescaled by s_x * s_w) for those
who want to check that, or a backend with int8 GEMM.
"""

import copy

from layerwise import nn
from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.compress._tree import find, set_submodule
from layerwise.nn import functional as F
from layerwise.nn.module import Module
from layerwise.serialization import load_with_metadata, save

QMAX = 127


def quantize_per_channel(w):
    """(int8 array of w's shape, float32 scales (out,)): symmetric, one scale per row."""
    flat = w.reshape(w.shape[0], -1).astype(xp.float64)
    scale = xp.abs(flat).max(axis=1) / QMAX
    scale = xp.where(scale > 0, scale, 1.0)  # an all-zero row: any scale, q is 0
    q = xp.clip(xp.rint(flat / scale[:, None]), -QMAX, QMAX).astype(xp.int8)
    return q.reshape(w.shape), scale.astype(xp.float32)


def dequantize(q, scale):
    return (q.reshape(q.shape[0], -1).astype(xp.float32) * scale[:, None]).reshape(q.shape)


def _act_scale(max_abs):
    return float(max_abs) / QMAX if max_abs > 0 else 1.0


def _fake_quant(x, scale):
    """x rounded to the int8 grid of ``scale`` and back (values outside the range clip)."""
    return xp.clip(xp.rint(x / scale), -QMAX, QMAX) * xp.asarray(scale, dtype=x.dtype)


class _Quantized(Module):
    """Shared by QuantLinear and QuantConv2d: int8 weight + scales as buffers (state_dict),
    the float32 expansion cached for the dequant kernel."""

    def _setup(self, layer, input_scale, kernel):
        if kernel not in ("dequant", "int"):
            raise ValueError(f"kernel must be 'dequant' or 'int', got {kernel!r}")
        q, scale = quantize_per_channel(layer.weight.data)
        self.register_buffer("weight", Tensor(q))
        self.register_buffer("weight_scale", Tensor(scale))
        if layer.bias is not None:
            self.register_buffer("bias", Tensor(layer.bias.data.astype(xp.float32)))
        else:
            self.bias = None
        self.input_scale = input_scale  # None: dynamic, from each batch
        self.kernel = kernel
        self._float = _Cache()

    def dequantized_weight(self):
        if self._float.value is None:
            self._float.value = dequantize(self.weight.data, self.weight_scale.data)
        return self._float.value

    def _quantized_input(self, x):
        scale = self.input_scale
        if scale is None:
            scale = _act_scale(xp.abs(x).max()) if x.size else 1.0
        return scale


class _Cache:
    def __init__(self):
        self.value = None


class QuantLinear(_Quantized):
    def __init__(self, linear, input_scale=None, kernel="dequant"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._setup(linear, input_scale, kernel)

    def forward(self, x):
        a = x.data
        s_x = self._quantized_input(a)
        bias = None if self.bias is None else self.bias.data
        if self.kernel == "int":
            qx = xp.clip(xp.rint(a / s_x), -QMAX, QMAX).astype(xp.int32)  # (..., in)
            acc = qx @ self.weight.data.T.astype(xp.int32)  # (..., out), int32 sums
            out = acc.astype(xp.float32) * (self.weight_scale.data * xp.float32(s_x))
        else:
            out = _fake_quant(a, s_x) @ self.dequantized_weight().T  # float32 BLAS
        if bias is not None:
            out = out + bias
        return Tensor(out.astype(a.dtype, copy=False))

    def extra_repr(self):
        mode = "dynamic" if self.input_scale is None else f"input_scale={self.input_scale:.4g}"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, {mode}"


class QuantConv2d(_Quantized):
    def __init__(self, conv, input_scale=None, kernel="dequant"):
        super().__init__()
        if kernel == "int":
            raise ValueError("QuantConv2d has only the 'dequant' kernel (no int conv here)")
        self.conv = _Cache()
        self.conv.value = conv  # geometry (stride, padding, ...) without its float weights
        self._setup(conv, input_scale, kernel)

    def forward(self, x):
        c = self.conv.value
        xq = Tensor(_fake_quant(x.data, self._quantized_input(x.data)).astype(x.data.dtype))
        return F.conv2d(xq, Tensor(self.dequantized_weight()), self.bias, stride=c.stride,
                        padding=c.padding, dilation=c.dilation, groups=c.groups)


class QuantLSTM(Module):
    """Dynamic int8 LSTM, weight-only: every weight matrix stored int8 per-channel; the
    recurrence runs on the dequantized float32 copy (the recurrent step is a small GEMM per
    time step, where rounding the activations would cost more than it saves)."""

    def __init__(self, lstm):
        super().__init__()
        inner = copy.deepcopy(lstm)
        for name, p in list(lstm.named_parameters()):
            if p.ndim == 2:
                q, scale = quantize_per_channel(p.data)
                self.register_buffer(name, Tensor(q))
                self.register_buffer(name + "_scale", Tensor(scale))
                getattr(inner, name).data[...] = dequantize(q, scale)
            else:
                self.register_buffer(name, Tensor(p.data.copy()))
        self.inner = _Cache()
        self.inner.value = inner

    def forward(self, *args, **kwargs):
        return self.inner.value(*args, **kwargs)


def _calibrate(model, batches, types):
    """{layer name: max |input|} over ``batches`` (each an input, or an (input, target) pair)."""
    ranges, handles = {}, []
    for name, layer in find(model, types):
        def hook(module, args, output, name=name):
            ranges[name] = max(ranges.get(name, 0.0), float(xp.abs(args[0].data).max()))
        handles.append(layer.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        from layerwise.autograd import no_grad
        with no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return ranges


def quantize_static(model, calibration, kernel="dequant"):
    """An int8 copy: Linear and Conv2d weights per-channel, inputs at ranges calibrated on
    ``calibration`` (an iterable of input batches or (input, target) pairs)."""
    out = copy.deepcopy(model)
    out.eval()
    ranges = _calibrate(out, calibration, (nn.Linear, nn.Conv2d))
    if not ranges:
        raise ValueError("calibration ran no Linear/Conv2d layer: pass at least one batch")
    for name, layer in find(out, (nn.Linear, nn.Conv2d)):
        scale = _act_scale(ranges.get(name, 0.0))
        new = (QuantLinear(layer, scale, kernel) if isinstance(layer, nn.Linear)
               else QuantConv2d(layer, scale))
        if name == "":
            return new
        set_submodule(out, name, new)
    return out


def quantize_dynamic(model, kernel="dequant"):
    """An int8 copy: Linear layers with per-batch activation scales, LSTMs weight-only."""
    out = copy.deepcopy(model)
    out.eval()
    for name, layer in find(out, (nn.Linear, nn.LSTM)):
        new = QuantLinear(layer, None, kernel) if isinstance(layer, nn.Linear) else QuantLSTM(layer)
        if name == "":
            return new
        set_submodule(out, name, new)
    return out


def save_quantized(model, path, metadata=None):
    """The int8 weights and float32 scales as safetensors (input scales in the metadata)."""
    scales = {name: m.input_scale for name, m in find(model, (QuantLinear, QuantConv2d))}
    save(model.state_dict(), path, metadata=dict(metadata or {}, input_scales=scales))


def load_quantized(model, path):
    """The int8 model saved by ``save_quantized``, rebuilt on ``model`` (the float architecture,
    e.g. the recipe's fresh model): layers named in the file's input scales become QuantLinear /
    QuantConv2d, then the int8 weights, scales and biases are loaded over them."""
    tensors, metadata = load_with_metadata(path)
    scales = metadata.get("input_scales")
    if scales is None:
        raise ValueError(f"{path} has no input_scales metadata: not written by save_quantized")
    out = copy.deepcopy(model)
    out.eval()
    for name, layer in find(out, (nn.Linear, nn.Conv2d)):
        if name not in scales:
            continue
        new = (QuantLinear(layer, scales[name]) if isinstance(layer, nn.Linear)
               else QuantConv2d(layer, scales[name]))
        if name == "":
            out = new
        else:
            set_submodule(out, name, new)
    out.load_state_dict(tensors)
    for _, m in find(out, (QuantLinear, QuantConv2d)):
        m._float.value = None  # the dequantized cache was built from the placeholder weights
    return out
