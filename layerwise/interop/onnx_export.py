"""Export MLPs, CNNs and GPT to ONNX (opset 17) with the ``onnx`` package's helper API.

The graph is built by walking the module tree: each known module type has a converter that
appends its ONNX nodes (Gemm, MatMul, Conv, MaxPool, LayerNormalization, Softmax, ...) and
returns the name and shape of its output. Sequential containers are walked in order; models
whose forward is Python code (LeNet, GPT) have a converter of their own that mirrors it line
by line. Export runs the model in eval mode: Dropout is the identity and BatchNorm uses its
running statistics, as ``torch.onnx.export`` does by default.

    export_onnx(model, "mlp.onnx", example_input=lw.randn(1, 1, 28, 28))
    # onnxruntime.InferenceSession("mlp.onnx").run(None, {"input": x})[0]

The batch dimension (and for GPT the sequence length) is symbolic, so the file runs on any
batch size. ``register_converter(MyModule, fn)`` teaches the exporter a new module type.
"""

import math

from layerwise import backend
from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp
from layerwise.finetune.lora import LoRALinear
from layerwise.models.gpt import GPT
from layerwise.models.vision import MLP as VisionMLP
from layerwise.models.vision import LeNet
from layerwise.nn import activation as act
from layerwise.nn.batchnorm import BatchNorm1d, BatchNorm2d
from layerwise.nn.container import Sequential
from layerwise.nn.conv import Conv2d
from layerwise.nn.dropout import Dropout, Flatten
from layerwise.nn.embedding import Embedding
from layerwise.nn.linear import Identity, Linear
from layerwise.nn.normalization import LayerNorm
from layerwise.nn.pooling import AvgPool2d, MaxPool2d

OPSET = 17
_CONVERTERS = {}


def register_converter(module_type, fn):
    """``fn(graph, module, x, shape) -> (out_name, out_shape)`` for instances of module_type."""
    _CONVERTERS[module_type] = fn


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise ModuleNotFoundError("ONNX export needs the 'onnx' package: `uv sync --group dev` "
                                  "(or `pip install onnx`)") from None
    return onnx


class Graph:
    """Nodes and initializers under construction, with fresh names."""

    def __init__(self):
        self.onnx = _onnx()
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array, hint="const"):
        """A weight or constant as an initializer; returns its name."""
        name = self.name(hint)
        array = array.data if isinstance(array, Tensor) else xp.asarray(array)
        self.initializers.append(self.onnx.numpy_helper.from_array(
            xp.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, hint=None, **attrs):
        """Append one node with one output; returns the output's name."""
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def ops(self, op_type, inputs, n_out, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs


def convert(graph, module, x, shape):
    """Append ``module``'s nodes applied to the value named ``x`` of ``shape``."""
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls](graph, module, x, shape)
    known = sorted(c.__name__ for c in _CONVERTERS)
    raise NotImplementedError(f"no ONNX converter for {type(module).__name__}; known types: "
                              f"{known}; add one with register_converter")


# --- layers ------------------------------------------------------------------------------------


def _sequential(g, m, x, shape):
    for child in m._modules.values():
        x, shape = convert(g, child, x, shape)
    return x, shape


def _linear_weights(m):
    if isinstance(m, LoRALinear):  # the adapter folded in: W + alpha/r B A
        w = m.weight.data if m.merged else m.weight.data + m.delta_weight().astype(m.weight.dtype)
        return w, m.bias
    return m.weight.data, m.bias


def linear(g, m, x, shape):
    w, bias = _linear_weights(m)
    out_shape = tuple(shape[:-1]) + (w.shape[0],)
    if len(shape) == 2:
        inputs = [x, g.const(w, "weight")] + ([g.const(bias, "bias")] if bias is not None else [])
        return g.op("Gemm", inputs, transB=1), out_shape  # x W^T + b
    y = g.op("MatMul", [x, g.const(w.T, "weight_t")])  # (..., in) @ (in, out)
    if bias is not None:
        y = g.op("Add", [y, g.const(bias, "bias")])
    return y, out_shape


def _unary(op_type):
    return lambda g, m, x, shape: (g.op(op_type, [x]), shape)


def gelu_tanh(g, x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's GELU (Hendrycks & Gimpel)."""
    cube = g.op("Mul", [g.op("Mul", [x, x]), x])
    inner = g.op("Add", [x, g.op("Mul", [cube, g.const(xp.float32(0.044715))])])
    t = g.op("Tanh", [g.op("Mul", [inner, g.const(xp.float32(math.sqrt(2 / math.pi)))])])
    half_x = g.op("Mul", [x, g.const(xp.float32(0.5))])
    return g.op("Mul", [half_x, g.op("Add", [t, g.const(xp.float32(1.0))])])


def _gelu(g, m, x, shape):
    if m.approximate == "tanh":
        return gelu_tanh(g, x), shape
    erf = g.op("Erf", [g.op("Mul", [x, g.const(xp.float32(1 / math.sqrt(2)))])])
    half_x = g.op("Mul", [x, g.const(xp.float32(0.5))])
    return g.op("Mul", [half_x, g.op("Add", [erf, g.const(xp.float32(1.0))])]), shape


def _flatten(g, m, x, shape):
    start = m.start_dim % len(shape)
    end = m.end_dim % len(shape)
    if end != len(shape) - 1:
        raise NotImplementedError(f"ONNX export of Flatten supports end_dim=-1, got {m.end_dim}")
    inner = math.prod(shape[start:])
    if start == 1:  # ONNX Flatten gives 2-D (N, rest), the common case
        return g.op("Flatten", [x], axis=1), (shape[0], inner)
    target = g.const(xp.array(list(shape[:start]) + [inner], dtype=backend.int64), "shape")
    return g.op("Reshape", [x, target]), tuple(shape[:start]) + (inner,)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pool_out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv(g, m, x, shape):
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"ONNX export of Conv2d supports padding_mode='zeros', got "
                                  f"{m.padding_mode!r}")
    kh, kw = m.kernel_size
    if isinstance(m.padding, str):  # "same" (stride 1) or "valid"
        if m.padding == "valid":
            pads = (0, 0, 0, 0)
        else:
            th, tw = m.dilation[0] * (kh - 1), m.dilation[1] * (kw - 1)
            pads = (th // 2, tw // 2, th - th // 2, tw - tw // 2)  # extra on the end, as torch
    else:
        pads = (m.padding[0], m.padding[1], m.padding[0], m.padding[1])
    inputs = [x, g.const(m.weight, "conv_weight")]
    if m.bias is not None:
        inputs.append(g.const(m.bias, "conv_bias"))
    y = g.op("Conv", inputs, kernel_shape=[kh, kw], strides=list(m.stride), pads=list(pads),
             dilations=list(m.dilation), group=m.groups)
    h = (shape[2] + pads[0] + pads[2] - m.dilation[0] * (kh - 1) - 1) // m.stride[0] + 1
    w = (shape[3] + pads[1] + pads[3] - m.dilation[1] * (kw - 1) - 1) // m.stride[1] + 1
    return y, (shape[0], m.out_channels, h, w)


def _maxpool(g, m, x, shape):
    if m.return_indices:
        raise NotImplementedError("ONNX export of MaxPool2d(return_indices=True) is not supported")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (m.kernel_size, m.stride, m.padding,
                                                        m.dilation))
    y = g.op("MaxPool", [x], kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
             dilations=[dh, dw], ceil_mode=int(m.ceil_mode))
    rnd = math.ceil if m.ceil_mode else math.floor
    h = rnd((shape[2] + 2 * ph - dh * (kh - 1) - 1) / sh) + 1
    w = rnd((shape[3] + 2 * pw - dw * (kw - 1) - 1) / sw) + 1
    return y, (shape[0], shape[1], h, w)


def _avgpool(g, m, x, shape):
    (kh, kw), (sh, sw), (ph, pw) = map(_pair, (m.kernel_size, m.stride, m.padding))
    y = g.op("AveragePool", [x], kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
             ceil_mode=int(m.ceil_mode), count_include_pad=int(m.count_include_pad))
    return y, (shape[0], shape[1], _pool_out(shape[2], kh, sh, ph), _pool_out(shape[3], kw, sw, pw))


def _batchnorm(g, m, x, shape):
    c = shape[1]
    scale = m.weight.data if m.weight is not None else xp.ones(c, dtype=backend.float32)
    bias = m.bias.data if m.bias is not None else xp.zeros(c, dtype=backend.float32)
    y = g.op("BatchNormalization", [x, g.const(scale), g.const(bias), g.const(m.running_mean),
                                    g.const(m.running_var)], epsilon=float(m.eps))
    return y, shape


def layer_norm(g, m, x, shape):
    n = len(m.normalized_shape) if isinstance(m.normalized_shape, tuple) else 1
    width = m.normalized_shape if isinstance(m.normalized_shape, tuple) else (m.normalized_shape,)
    scale = m.weight.data if m.weight is not None else xp.ones(width, dtype=backend.float32)
    inputs = [x, g.const(scale, "ln_weight")]
    if getattr(m, "bias", None) is not None:
        inputs.append(g.const(m.bias, "ln_bias"))
    return g.op("LayerNormalization", inputs, axis=-n, epsilon=float(m.eps)), shape


def _embedding(g, m, x, shape):
    return g.op("Gather", [g.const(m.weight, "embedding"), x]), tuple(shape) + (m.embedding_dim,)


def _identity(g, m, x, shape):
    return x, shape


def _vision_mlp(g, m, x, shape):
    return convert(g, m.layers, x, shape)


def _lenet(g, m, x, shape):
    for conv in (m.conv1, m.conv2):
        x, shape = _conv(g, conv, x, shape)
        x, shape = _maxpool(g, m.pool, g.op("Relu", [x]), shape)
    x, shape = _flatten(g, Flatten(), x, shape)  # (N, 400)
    for fc in (m.fc1, m.fc2):
        x, shape = linear(g, fc, x, shape)
        x = g.op("Relu", [x])
    return linear(g, m.fc3, x, shape)


for _type, _fn in [
    (Sequential, _sequential), (Linear, linear), (LoRALinear, linear),
    (act.ReLU, _unary("Relu")), (act.Tanh, _unary("Tanh")), (act.Sigmoid, _unary("Sigmoid")),
    (act.GELU, _gelu), (Dropout, _identity), (Identity, _identity), (Flatten, _flatten),
    (Conv2d, _conv), (MaxPool2d, _maxpool), (AvgPool2d, _avgpool), (BatchNorm1d, _batchnorm),
    (BatchNorm2d, _batchnorm), (LayerNorm, layer_norm), (Embedding, _embedding),
    (VisionMLP, _vision_mlp), (LeNet, _lenet),
]:
    register_converter(_type, _fn)


# --- the model ---------------------------------------------------------------------------------


def to_onnx(model, example_input, input_name="input", output_name="output", opset=OPSET):
    """The onnx.ModelProto for ``model`` applied to inputs shaped like ``example_input``."""
    onnx = _onnx()
    helper = onnx.helper
    array = example_input.data if isinstance(example_input, Tensor) else xp.asarray(example_input)
    shape = tuple(array.shape)
    g = Graph()
    g.nodes.append(helper.make_node("Identity", [input_name], ["x_0"]))
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, GPT):
            from layerwise.interop.onnx_gpt import gpt

            out, out_shape = gpt(g, model, "x_0", ("batch", "sequence"))
            in_dims = ["batch", "sequence"]
        else:
            out, out_shape = convert(g, model, "x_0", ("batch",) + shape[1:])
            in_dims = ["batch"] + list(shape[1:])
    finally:
        model.train(was_training)
    g.nodes.append(helper.make_node("Identity", [out], [output_name]))
    elem = helper.np_dtype_to_tensor_dtype(array.dtype)
    out_elem = onnx.TensorProto.FLOAT if elem == onnx.TensorProto.INT64 else elem
    graph = helper.make_graph(
        g.nodes, f"layerwise_{type(model).__name__}",
        [helper.make_tensor_value_info(input_name, elem, in_dims)],
        [helper.make_tensor_value_info(output_name, out_elem, list(out_shape))],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="layerwise")
    proto.ir_version = min(proto.ir_version, 9)  # runnable by onnxruntime releases of 2024 on
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model, path, example_input, input_name="input", output_name="output",
                opset=OPSET):
    """Write ``model`` as an ONNX file at ``path``; returns the ModelProto."""
    proto = to_onnx(model, example_input, input_name, output_name, opset)
    _onnx().save(proto, str(path))
    return proto
