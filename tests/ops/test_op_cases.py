"""Every differentiable op through the harness: forward vs NumPy float64, gradient vs
central differences, over broadcasting, size-1 and 0-d shapes."""

import math

import numpy as np

import layerwise as lw
import layerwise.nn.functional as F
from tests.harness import OpCase, erf, harness_tests

BINARY = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((1,), ())]
UNARY = [((3, 4),), ((2, 3, 5),), ((),), ((1,),)]


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_cross_entropy(x, target, reduction="mean", ignore_index=-100):
    """-log softmax at each target in float64; ignored rows count 0 and not in the mean."""
    keep = target != ignore_index
    log_p = np.log(_np_softmax(x, 1))
    rows = np.where(keep, -log_p[np.arange(len(target)), np.where(keep, target, 0)], 0)
    return {"none": rows, "sum": rows.sum(), "mean": rows.sum() / keep.sum()}[reduction]


def _np_smoothed_weighted_cross_entropy(x, target, weight, smoothing):
    c = x.shape[1]
    coef = weight * ((1 - smoothing) * np.eye(c)[target] + smoothing / c)
    return -(coef * np.log(_np_softmax(x, 1))).sum() / weight[target].sum()


TARGET = np.array([0, 6, 2, 2, 3])
IGNORING = np.array([4, -100, 0, 6, -100])
CLASS_WEIGHT = np.linspace(0.5, 2.0, 7)
CAUSAL = np.triu(np.ones((4, 4), bool), 1)  # (T, T): True above the diagonal, masked
EMBEDDED = np.array([[3, 0, 3], [8, 3, 1]])  # repeated indices, and unread table rows


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


CASES = [
    # arithmetic
    OpCase("add", lambda a, b: a + b, np.add, BINARY),
    OpCase("sub", lambda a, b: a - b, np.subtract, BINARY),
    OpCase("mul", lambda a, b: a * b, np.multiply, BINARY),
    OpCase("div", lambda a, b: a / b, np.divide, BINARY, domain="positive"),
    OpCase("pow", lambda a, b: a**b, np.power, BINARY, domain="positive"),
    OpCase("pow_scalar", lambda a: a**3, lambda a: a**3, UNARY),
    OpCase("rpow", lambda a: 2.0**a, lambda a: 2.0**a, UNARY),
    OpCase("rsub", lambda a: 1.5 - a, lambda a: 1.5 - a, UNARY),
    OpCase("rdiv", lambda a: 1.5 / a, lambda a: 1.5 / a, UNARY, domain="positive"),
    OpCase("neg", lambda a: -a, np.negative, UNARY),
    OpCase("exp", lambda a: a.exp(), np.exp, UNARY),
    OpCase("log", lambda a: a.log(), np.log, UNARY, domain="positive"),
    OpCase("sqrt", lambda a: a.sqrt(), np.sqrt, UNARY, domain="positive"),
    OpCase("rsqrt", lambda a: a.rsqrt(), lambda a: 1 / np.sqrt(a), UNARY, domain="positive"),
    OpCase("amax", lambda a: a.amax(dim=-1), lambda a: a.max(axis=-1), [((3, 4),), ((2, 3, 5),)]),
    OpCase("abs", lambda a: a.abs(), np.abs, UNARY, domain="nonzero"),
    OpCase("clamp", lambda a: a.clamp(-0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7), UNARY, domain="nonzero"),
    OpCase("clamp_min", lambda a: lw.clamp(a, min=0.1), lambda a: np.maximum(a, 0.1), UNARY, domain="nonzero"),
    OpCase("maximum", lw.maximum, np.maximum, BINARY),
    OpCase("minimum", lw.minimum, np.minimum, BINARY),
    OpCase("where", lambda a, b: lw.where(a > 0, a, b), lambda a, b: np.where(a > 0, a, b), BINARY),
    OpCase("masked_fill", lambda a: a.masked_fill(a < 0, 0.25), lambda a: np.where(a < 0, 0.25, a), UNARY),
    # a causal mask repeated over batch and heads, and a padding mask that is not
    OpCase("masked_fill_causal", lambda a: a.masked_fill(lw.tensor(CAUSAL).view(1, 1, 4, 4), -5.0),
           lambda a: np.where(CAUSAL, -5.0, a), [((2, 3, 4, 4),), ((1, 2, 4, 4),)]),
    OpCase("masked_fill_causal_2d", lambda a: a.masked_fill(lw.tensor(CAUSAL), -5.0),
           lambda a: np.where(CAUSAL, -5.0, a), [((4, 4),), ((3, 4, 4),)]),
    OpCase("masked_fill_padding", lambda a: a.masked_fill(lw.tensor(CAUSAL[:2, None, None]), -5.0),
           lambda a: np.where(CAUSAL[:2, None, None], -5.0, a), [((2, 3, 4, 4),)]),
    OpCase("pow_scalar_4", lambda a: a**4, lambda a: a**4, UNARY),
    OpCase("pow_scalar_half", lambda a: a**2.5, lambda a: a**2.5, UNARY, domain="positive"),
    # activations
    OpCase("relu", lw.relu, lambda a: np.maximum(a, 0), UNARY, domain="nonzero"),
    OpCase("leaky_relu", lambda a: lw.leaky_relu(a, 0.1), lambda a: np.where(a > 0, a, 0.1 * a), UNARY, domain="nonzero"),
    OpCase("sigmoid", lw.sigmoid, lambda a: 1 / (1 + np.exp(-a)), UNARY),
    OpCase("tanh", lw.tanh, np.tanh, UNARY),
    OpCase("softplus", lw.softplus, lambda a: np.log1p(np.exp(a)), UNARY),
    OpCase("softplus_beta", lambda a: lw.softplus(a, beta=2.0), lambda a: np.log1p(np.exp(2 * a)) / 2, UNARY),
    OpCase("gelu", lw.gelu, lambda a: 0.5 * a * (1 + erf(a / math.sqrt(2))), UNARY),
    OpCase("gelu_tanh", lambda a: lw.gelu(a, approximate="tanh"), _np_gelu_tanh, UNARY),
    OpCase("silu", lw.silu, lambda a: a / (1 + np.exp(-a)), UNARY),
    # linear: x (..., in), weight (out, in), bias (out,)
    OpCase("linear", lw.nn.functional.linear, lambda x, w, b: x @ w.T + b,
           [((4, 3), (5, 3), (5,)), ((2, 3, 4), (2, 4), (2,)), ((1, 6), (7, 6), (7,)), ((6,), (3, 6), (3,))]),
    OpCase("linear_no_bias", lw.nn.functional.linear, lambda x, w: x @ w.T,
           [((4, 3), (5, 3)), ((1, 6), (7, 6))]),
    # reductions
    OpCase("sum_all", lambda a: a.sum(), np.sum, UNARY),
    OpCase("sum_dim", lambda a: a.sum(dim=1), lambda a: a.sum(axis=1), [((3, 4),), ((2, 3, 5),)]),
    OpCase("sum_keepdim", lambda a: a.sum(dim=(0, -1), keepdim=True), lambda a: a.sum(axis=(0, -1), keepdims=True), [((3, 4),), ((2, 3, 5),)]),
    OpCase("mean", lambda a: a.mean(dim=-1), lambda a: a.mean(axis=-1), [((3, 4),), ((2, 3, 5),), ((1,),)]),
    OpCase("max_all", lambda a: a.max(), np.max, UNARY),
    OpCase("max_dim", lambda a: a.max(dim=0).values, lambda a: a.max(axis=0), [((3, 4),), ((2, 3, 5),)]),
    OpCase("amin", lambda a: a.amin(dim=1, keepdim=True), lambda a: a.min(axis=1, keepdims=True), [((3, 4),), ((2, 3, 5),)]),
    OpCase("prod", lambda a: a.prod(dim=1), lambda a: a.prod(axis=1), [((3, 4),), ((2, 3, 5),)]),
    OpCase("prod_all", lambda a: a.prod(), np.prod, [((3, 4),), ((),)]),
    OpCase("prod_last", lambda a: a.prod(dim=-1), lambda a: a.prod(axis=-1), [((3, 4),), ((2, 3, 11),), ((5,),)]),
    OpCase("prod_last_keepdim", lambda a: a.prod(dim=-1, keepdim=True),
           lambda a: a.prod(axis=-1, keepdims=True), [((2, 9),)]),
    OpCase("var", lambda a: a.var(dim=1), lambda a: a.var(axis=1, ddof=1), [((3, 4),), ((2, 3, 5),)]),
    OpCase("var_biased", lambda a: a.var(dim=-1, unbiased=False, keepdim=True), lambda a: a.var(axis=-1, keepdims=True), [((3, 4),)]),
    OpCase("std", lambda a: a.std(), lambda a: a.std(ddof=1), [((3, 4),), ((2, 3, 5),)]),
    OpCase("softmax", lambda a: a.softmax(dim=-1), lambda a: _np_softmax(a, -1), [((3, 4),), ((2, 3, 5),), ((5,),)]),
    OpCase("softmax_dim0", lambda a: lw.softmax(a, dim=0), lambda a: _np_softmax(a, 0), [((3, 4),)]),
    OpCase("log_softmax", lambda a: a.log_softmax(dim=1), lambda a: np.log(_np_softmax(a, 1)), [((3, 4),), ((2, 3, 5),)]),
    # rows longer than the row kernels' eight lanes, with a remainder: (37 = 4 * 8 + 5)
    OpCase("softmax_long_rows", lambda a: lw.softmax(a * 4, dim=-1), lambda a: _np_softmax(a * 4, -1), [((3, 37),), ((2, 2, 37),)]),
    OpCase("log_softmax_long_rows", lambda a: lw.log_softmax(a * 4, dim=-1), lambda a: np.log(_np_softmax(a * 4, -1)), [((3, 37),), ((2, 2, 37),)]),
    OpCase("logsumexp", lambda a: a.logsumexp(dim=-1), lambda a: np.log(np.exp(a).sum(axis=-1)), [((3, 4),), ((2, 3, 5),)]),
    # cross-entropy: logits (N, C) against class indices
    OpCase("cross_entropy", lambda a: F.cross_entropy(a, lw.tensor(TARGET)), lambda a: _np_cross_entropy(a, TARGET), [((5, 7),)]),
    OpCase("cross_entropy_ignore_sum", lambda a: F.cross_entropy(a, lw.tensor(IGNORING), reduction="sum"),
           lambda a: _np_cross_entropy(a, IGNORING, "sum"), [((5, 7),)]),
    OpCase("cross_entropy_none", lambda a: F.cross_entropy(a, lw.tensor(IGNORING), reduction="none"),
           lambda a: _np_cross_entropy(a, IGNORING, "none"), [((5, 7),)]),
    OpCase("cross_entropy_weight_smoothing",
           lambda a: F.cross_entropy(a, lw.tensor(TARGET), weight=lw.tensor(CLASS_WEIGHT, dtype=a.dtype), label_smoothing=0.1),
           lambda a: _np_smoothed_weighted_cross_entropy(a, TARGET, CLASS_WEIGHT, 0.1), [((5, 7),)]),
    # embedding: a (9, 4) table read at integer positions
    OpCase("embedding", lambda w: F.embedding(lw.tensor(EMBEDDED), w), lambda w: w[EMBEDDED], [((9, 4),)]),
    # movement
    OpCase("reshape", lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [((3, 4),), ((2, 2, 6),)]),
    OpCase("flatten", lambda a: a.flatten(1), lambda a: a.reshape(a.shape[0], -1), [((2, 3, 5),), ((3, 4),)]),
    OpCase("permute", lambda a: a.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1), [((2, 3, 5),)]),
    OpCase("transpose", lambda a: a.transpose(0, -1), lambda a: np.swapaxes(a, 0, -1), [((2, 3, 5),), ((3, 4),)]),
    OpCase("T", lambda a: a.T, lambda a: a.T, [((3, 4),)]),
    OpCase("unsqueeze", lambda a: a.unsqueeze(1), lambda a: np.expand_dims(a, 1), [((3, 4),), ((3,),)]),
    OpCase("squeeze", lambda a: a.squeeze(1), lambda a: np.squeeze(a, 1), [((3, 1, 4),)]),
    OpCase("expand", lambda a: a.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), [((3, 1),), ((4,),), ((),)]),
    OpCase("slice", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [((3, 4),), ((4, 5, 2),)]),
    # a run of one axis, as a packed output's x[:n]
    OpCase("slice_run_first", lambda a: a[1:3], lambda a: a[1:3], [((4, 3),), ((7,),)]),
    OpCase("slice_run_middle", lambda a: a[:, 1:, :], lambda a: a[:, 1:, :], [((2, 3, 4),)]),
    OpCase("slice_run_last", lambda a: a[:, -2:], lambda a: a[:, -2:], [((3, 4),)]),
    OpCase("slice_all", lambda a: a[:] * 2, lambda a: a[:] * 2, [((3, 4),)]),
    OpCase("int_index", lambda a: a[1, -1], lambda a: a[1, -1], [((3, 4),)]),
    OpCase("ellipsis_none", lambda a: a[..., None, 0], lambda a: a[..., None, 0], [((3, 4),), ((2, 3, 5),)]),
    OpCase("fancy_repeat", lambda a: a[[0, 2, 0, 0]], lambda a: a[[0, 2, 0, 0]], [((3, 4),), ((3,),)]),
    OpCase("fancy_2d", lambda a: a[lw.tensor([0, 1, 1]), lw.tensor([2, 0, 2])], lambda a: a[[0, 1, 1], [2, 0, 2]], [((3, 4),)]),
    OpCase("bool_mask", lambda a: a[a > 0], lambda a: a[a > 0], [((3, 4),)]),
    OpCase("cat", lambda a, b: lw.cat([a, b, a], dim=1), lambda a, b: np.concatenate([a, b, a], axis=1), [((3, 2), (3, 4)), ((2, 1, 3), (2, 2, 3))]),
    OpCase("stack", lambda a, b: lw.stack([a, b], dim=-1), lambda a, b: np.stack([a, b], axis=-1), [((3, 4), (3, 4)), ((), ())]),
    OpCase("split", lambda a: a.split(2, dim=1)[1] * 2 + a.split(2, dim=1)[0], lambda a: a[:, 2:4] * 2 + a[:, 0:2], [((3, 5),)]),
    OpCase("chunk", lambda a: lw.cat(a.chunk(3, dim=0)[::-1]), lambda a: np.concatenate([a[4:], a[2:4], a[:2]]), [((6, 2),), ((5, 3),)]),
    OpCase("pad", lambda a: lw.pad(a, (1, 2, 0, 1)), lambda a: np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, 1), (1, 2)]), [((3, 4),), ((2, 3, 5),)]),
    OpCase("gather", lambda a: a.gather(1, lw.tensor([[0, 0, 3], [1, 2, 1], [3, 3, 3]])),
           lambda a: np.take_along_axis(a, np.array([[0, 0, 3], [1, 2, 1], [3, 3, 3]]), 1), [((3, 4),)]),
    OpCase("gather_last_3d_negative",  # repeated and negative indices: the gradient adds up
           lambda a: a.gather(-1, lw.tensor(np.array([[[0, -1, 0], [2, 2, -4]], [[1, 1, 1], [3, 0, -2]]]))),
           lambda a: np.take_along_axis(a, np.array([[[0, -1, 0], [2, 2, -4]], [[1, 1, 1], [3, 0, -2]]]), -1),
           [((2, 2, 4),)]),
    OpCase("gather_middle_dim", lambda a: a.gather(1, lw.tensor(np.array([[[0, 1], [2, 0]]]))),
           lambda a: np.take_along_axis(a, np.array([[[0, 1], [2, 0]]]), 1), [((1, 3, 2),)]),
    # matmul, batched and broadcast
    OpCase("matmul", lambda a, b: a @ b, np.matmul,
           [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)),
            ((3, 2, 4, 5), (3, 2, 5, 3)), ((2, 3, 4), (2, 4, 5))]),
    OpCase("matmul_transposed", lambda a, b: a @ b.transpose(-2, -1), lambda a, b: a @ np.swapaxes(b, -1, -2),
           [((5, 2, 4, 3), (5, 2, 6, 3))]),
]

(test_forward_matches_numpy, test_gradient_matches_finite_differences,
 test_fast_path_matches_reference) = harness_tests(CASES)
