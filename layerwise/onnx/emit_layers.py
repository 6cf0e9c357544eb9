"""Convolution, pooling, normalisation and attention as ONNX nodes (layerwise/ops: conv, pool,
norm, attention). Adaptive average pooling, conv1d and interpolation are compositions of other
ops in layerwise, so they arrive here as those ops."""

from layerwise.backend import xp
from layerwise.onnx.shapes import ArrayParam
from layerwise.onnx.table import emits
from layerwise.ops import attention as att
from layerwise.ops import conv, norm, pool


@emits(conv.Conv2d)
def conv2d(g, op):
    weight = op.inputs[1]
    top, bottom, left, right = op.params["pads"]
    return g.op("Conv", [v.name for v in op.inputs], kernel_shape=list(weight.shapes[0][2:]),
                strides=list(op.params["stride"]), pads=[top, left, bottom, right],
                dilations=list(op.params["dilation"]), group=int(op.params["groups"]))


@emits(conv.ConvTranspose2d)
def conv_transpose2d(g, op):
    """ONNX's ConvTranspose has PyTorch's weight layout (C, O/groups, kH, kW) and output size."""
    weight = op.inputs[1]
    ph, pw = op.params["padding"]
    return g.op("ConvTranspose", [v.name for v in op.inputs],
                kernel_shape=list(weight.shapes[0][2:]), strides=list(op.params["stride"]),
                pads=[ph, pw, ph, pw], output_padding=list(op.params["output_padding"]),
                dilations=list(op.params["dilation"]), group=int(op.params["groups"]))


def _pool_pads(op, x):
    """(top, left, bottom, right): the padding, and at the end whatever ceil mode reads past
    it (layerwise pads to ``extent``; MaxPool ignores padding, AveragePool counts it)."""
    h, w = (op.static(n, "image size") for n in x.shape[2:])
    (ph, pw), extent = op.params["padding"], op.params["extent"]
    return [ph, pw, extent[0] - h - ph, extent[1] - w - pw]


@emits(pool.MaxPool2d)
def max_pool(g, op):
    x = op.inputs[0]
    return g.op("MaxPool", [x.name], kernel_shape=list(op.params["kernel"]),
                strides=list(op.params["stride"]), pads=_pool_pads(op, x),
                dilations=list(op.params["dilation"]))


@emits(pool.AvgPool2d)
def avg_pool(g, op):
    """The window sums over kh * kw (padding counted), rescaled where layerwise divides by
    something else (count_include_pad=False, divisor_override, clipped windows)."""
    x = op.inputs[0]
    kernel = op.params["kernel"]
    y = g.op("AveragePool", [x.name], kernel_shape=list(kernel), strides=list(op.params["stride"]),
             pads=_pool_pads(op, x), count_include_pad=1)
    divisor, area = op.params["divisor"], kernel[0] * kernel[1]
    if isinstance(divisor, ArrayParam):
        divisor = divisor.arrays[0]
    elif divisor == area:
        return y
    return g.op("Mul", [y, g.const(xp.asarray(area / xp.asarray(divisor), dtype=x.dtype))])


@emits(norm.BatchNorm)
def batch_norm(g, op):
    x, params = op.inputs[0], op.params
    channels = op.static(x.shape[1], "channel count")
    weight = op.inputs[1].name if params["has_weight"] else g.const(
        xp.ones(channels, dtype=x.dtype))
    bias = op.inputs[-1].name if params["has_bias"] else g.const(
        xp.zeros(channels, dtype=x.dtype))
    if params.get("stats") is not None:  # eval: the running statistics
        mean, var = (g.cast(op.array(s), x.dtype) for s in params["stats"])
        return g.op("BatchNormalization", [x.name, weight, bias, mean, var],
                    epsilon=float(params["eps"]))
    # no running statistics: the batch's own, as layerwise computes them in eval too
    axes = params["axes"]
    centred = g.op("Sub", [x.name, g.reduce("ReduceMean", x.name, axes, True)])
    var = g.reduce("ReduceMean", g.op("Mul", [centred, centred]), axes, True)
    x_hat = g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, g.scalar(params["eps"],
                                                                           x.dtype)])])])
    per_channel = g.ints([channels] + [1] * (x.rank - 2))  # (C,) -> (C, 1, ...)
    out = g.op("Mul", [x_hat, g.op("Reshape", [weight, per_channel])])
    return g.op("Add", [out, g.op("Reshape", [bias, per_channel])])


@emits(norm.LayerNormFunction)
def layer_norm(g, op):
    x, params = op.inputs[0], op.params
    n = params["n_dims"]
    inputs = [v.name for v in op.inputs]
    if params["affine"] == "none":
        normalized = tuple(op.static(s, "normalized size") for s in x.shape[-n:])
        inputs.append(g.const(xp.ones(normalized, dtype=x.dtype)))
    return g.op("LayerNormalization", inputs, axis=-n, epsilon=float(params["eps"]))


@emits(norm.RMSNormFunction)
def rms_norm(g, op):
    x, n = op.inputs[0], op.params["n_dims"]
    axes = list(range(x.rank - n, x.rank))
    mean_square = g.reduce("ReduceMean", g.op("Mul", [x.name, x.name]), axes, True)
    rms = g.op("Sqrt", [g.op("Add", [mean_square, g.scalar(op.params["eps"], x.dtype)])])
    y = g.op("Div", [x.name, rms])
    return g.op("Mul", [y, op.inputs[1].name]) if len(op.inputs) > 1 else y


# --- attention ------------------------------------------------------------------------------


@emits(att.SDPAttention)
def attention(g, op):
    """softmax(q k^T * scale + masks) v, decomposed (opset 17 has no attention node)."""
    q, k, v = op.inputs[:3]
    if op.params["dropout_p"]:
        op.refuse(f"drops attention weights (dropout_p={op.params['dropout_p']}); pass "
                  "dropout_p=0 outside training")
    perm = list(range(k.rank - 2)) + [k.rank - 1, k.rank - 2]
    scaled = g.op("Mul", [q.name, g.scalar(op.params["scale"], q.dtype)])
    scores = g.op("MatMul", [scaled, g.op("Transpose", [k.name], perm=perm)])  # (..., Tq, Tk)
    probs = _masked_softmax(g, op, scores, q, k, op.inputs[3:])
    return g.op("MatMul", [probs, v.name])


@emits(att.MaskedSoftmax)
def masked_softmax(g, op):
    s = op.inputs[0]
    return _masked_softmax(g, op, s.name, s, s, op.inputs[1:], keys_last=True)


def _masked_softmax(g, op, scores, q, k, masks, keys_last=False):
    """Softmax over the last axis after the op's masks; a row with nothing to attend gives
    zeros, as layerwise's softmax does (ONNX's would give NaN)."""
    params, masked = op.params, False
    if params["bias"] is not None:
        scores = g.op("Add", [scores, op.array(params["bias"]).name])
        masked = True
    for mask in masks:
        scores = g.op("Add", [scores, mask.name])
        masked = True
    if params["is_causal"]:
        scores = g.op("Add", [scores, _causal_bias(g, q, k, keys_last)])
        masked = True
    probs = g.op("Softmax", [scores], axis=-1)
    if masked:
        probs = g.op("Where", [g.op("IsNaN", [probs]), g.scalar(0, q.dtype), probs])
    return probs


def _causal_bias(g, q, k, keys_last):
    """(Tq, Tk): 0 where query i may see key j <= i + Tk - Tq, -inf elsewhere (layerwise
    aligns the causal mask to the end of the keys)."""
    tq = q.shape[-2]
    tk = k.shape[-1] if keys_last else k.shape[-2]
    if isinstance(tq, int) and isinstance(tk, int):
        return g.const(att.causal_bias(tq, tk, q.dtype.name))

    def size(value, start, end):  # a 0-d int64: the runtime size of one axis of value
        shape = g.op("Shape", [value.name], start=start, **({} if end is None else {"end": end}))
        return g.op("Squeeze", [shape, g.ints([0])])

    n_q = size(q, -2, -1)
    n_k = size(k, -1, None) if keys_last else size(k, -2, -1)
    zero, one = (g.const(xp.array(v, dtype=xp.int64)) for v in (0, 1))
    rows = g.op("Add", [g.op("Range", [zero, n_q, one]), g.op("Sub", [n_k, n_q])])
    cols = g.op("Range", [zero, n_k, one])
    allowed = g.op("LessOrEqual", [g.op("Unsqueeze", [cols, g.ints([0])]),
                                   g.op("Unsqueeze", [rows, g.ints([1])])])  # (Tq, Tk)
    return g.op("Where", [allowed, g.scalar(0, q.dtype), g.scalar(-xp.inf, q.dtype)])
