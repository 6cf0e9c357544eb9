"""Arithmetic, activations, reductions and products as ONNX nodes (layerwise/ops: elementwise,
activation, reduce, matmul, linear, random)."""

import math

from layerwise.backend import xp
from layerwise.onnx.table import emits
from layerwise.ops import activation as act
from layerwise.ops import elementwise as ew
from layerwise.ops import reduce as rd
from layerwise.ops.linear import LinearFunction
from layerwise.ops.matmul import MatMul
from layerwise.ops.methods import Compare
from layerwise.ops.random import Dropout

_BINARY = {ew.Add: "Add", ew.Sub: "Sub", ew.Mul: "Mul", ew.Div: "Div", ew.Pow: "Pow",
           ew.Maximum: "Max", ew.Minimum: "Min"}
_UNARY = {ew.Neg: "Neg", ew.Exp: "Exp", ew.Log: "Log", ew.Sqrt: "Sqrt", ew.Abs: "Abs",
          act.ReLU: "Relu", act.Sigmoid: "Sigmoid", act.Tanh: "Tanh"}


@emits(*_BINARY)
def binary(g, op):
    a, b = (g.cast(v, op.out.dtype) for v in op.inputs)  # ONNX wants one dtype
    return g.op(_BINARY[op.kind], [a, b])


@emits(*_UNARY)
def unary(g, op):
    return g.op(_UNARY[op.kind], [op.inputs[0].name])


@emits(Dropout)
def identity(g, op):
    """Dropout draws only in training; a trace in eval mode records it only when a model calls
    F.dropout with training=True itself, which inference would not want either."""
    return op.inputs[0].name


@emits(ew.PowScalar)
def pow_scalar(g, op):
    x = op.inputs[0]
    return g.op("Pow", [x.name, g.scalar(op.params["exponent"], x.dtype)])


@emits(ew.Rsqrt)
def rsqrt(g, op):
    x = op.inputs[0]
    return g.op("Div", [g.scalar(1, x.dtype), g.op("Sqrt", [x.name])])


@emits(ew.Clamp)
def clamp(g, op):
    x, low, high = op.inputs[0], op.params["min"], op.params["max"]
    bounds = [g.scalar(v, x.dtype) if v is not None else "" for v in (low, high)]
    return g.op("Clip", [x.name] + bounds)


@emits(ew.Where)
def where(g, op):
    a, b = (g.cast(v, op.out.dtype) for v in op.inputs)
    return g.op("Where", [op.array(op.params["condition"]).name, a, b])


@emits(ew.MaskedFill)
def masked_fill(g, op):
    x = op.inputs[0]
    mask = op.array(op.params["mask"]).name
    return g.op("Where", [mask, g.scalar(op.params["value"], x.dtype), x.name])


@emits(ew.Cast)
def cast(g, op):
    return g.cast(op.inputs[0], op.out.dtype)


_COMPARISONS = {"lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual",
                "eq": "Equal", "ne": "Equal", "and": "And", "or": "Or", "not": "Not"}


@emits(Compare)
def compare(g, op):
    """Comparisons and boolean logic (And, Or and Not on booleans only)."""
    kind = op.params["op"]
    common = xp.result_type(*(v.dtype for v in op.inputs))
    if kind in ("and", "or", "not") and common != xp.bool_:
        op.refuse(f"is a bitwise {kind!r} of {common} tensors; export takes it on booleans")
    out = g.op(_COMPARISONS[kind], [g.cast(v, common) for v in op.inputs])
    return g.op("Not", [out]) if kind == "ne" else out


# --- activations ---------------------------------------------------------------------------


@emits(act.LeakyReLU)
def leaky_relu(g, op):
    return g.op("LeakyRelu", [op.inputs[0].name], alpha=float(op.params["negative_slope"]))


@emits(act.GELU)
def gelu(g, op):
    """x Phi(x) with the erf (exact) or GPT-2's tanh form: opset 17 has no Gelu node."""
    x = op.inputs[0]
    half_x = g.op("Mul", [x.name, g.scalar(0.5, x.dtype)])
    if op.params.get("approximate", "none") == "tanh":  # tanh(sqrt(2/pi) (x + 0.044715 x^3))
        cube = g.op("Mul", [g.op("Mul", [x.name, x.name]), x.name])
        inner = g.op("Add", [x.name, g.op("Mul", [cube, g.scalar(0.044715, x.dtype)])])
        phi = g.op("Tanh", [g.op("Mul", [inner, g.scalar(math.sqrt(2 / math.pi), x.dtype)])])
    else:  # erf(x / sqrt(2))
        phi = g.op("Erf", [g.op("Mul", [x.name, g.scalar(1 / math.sqrt(2), x.dtype)])])
    return g.op("Mul", [half_x, g.op("Add", [phi, g.scalar(1, x.dtype)])])


@emits(act.SiLU)
def silu(g, op):
    x = op.inputs[0].name
    return g.op("Mul", [x, g.op("Sigmoid", [x])])


@emits(act.Softplus)
def softplus(g, op):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    x = op.inputs[0]
    beta, threshold = float(op.params.get("beta", 1.0)), float(op.params.get("threshold", 20.0))
    z = x.name if beta == 1 else g.op("Mul", [x.name, g.scalar(beta, x.dtype)])
    soft = g.op("Softplus", [z])
    if beta != 1:
        soft = g.op("Div", [soft, g.scalar(beta, x.dtype)])
    linear = g.op("Greater", [z, g.scalar(threshold, x.dtype)])
    return g.op("Where", [linear, x.name, soft])


# --- reductions and the softmax family ------------------------------------------------------


@emits(rd.Sum)
def reduce_sum(g, op):
    axes = op.params["axes"]
    if not axes:  # numpy's sum over no axes is the identity
        return op.inputs[0].name
    return g.reduce("ReduceSum", op.inputs[0].name, axes, op.params["keepdim"])


@emits(rd.Max)
def reduce_max(g, op):
    return g.reduce("ReduceMax", op.inputs[0].name, op.params["axes"], op.params["keepdim"])


@emits(rd.Prod)
def reduce_prod(g, op):
    return g.reduce("ReduceProd", op.inputs[0].name, [op.params["axis"]], op.params["keepdim"])


@emits(rd.LogSumExp)
def logsumexp(g, op):
    return g.reduce("ReduceLogSumExp", op.inputs[0].name, op.params["axes"],
                    op.params["keepdim"])


@emits(rd.Softmax, rd.LogSoftmax)
def softmax(g, op):
    kind = "Softmax" if op.kind is rd.Softmax else "LogSoftmax"
    return g.op(kind, [op.inputs[0].name], axis=int(op.params["axis"]))


# --- products -------------------------------------------------------------------------------


@emits(MatMul)
def matmul(g, op):
    return g.op("MatMul", [v.name for v in op.inputs])


@emits(LinearFunction)
def linear(g, op):
    """x W^T + b: Gemm for a 2-D x, else MatMul by W^T and Add."""
    x, weight = op.inputs[:2]
    bias = op.inputs[2].name if len(op.inputs) > 2 else None
    if x.rank == 2:
        return g.op("Gemm", [x.name, weight.name] + ([bias] if bias else []), transB=1)
    y = g.op("MatMul", [x.name, g.op("Transpose", [weight.name], perm=[1, 0])])
    return g.op("Add", [y, bias]) if bias else y
