"""The differentiable ops, by family, and their functional forms."""

from layerwise.ops import methods as _methods
from layerwise.ops.activation import gelu, leaky_relu, relu, sigmoid, silu, softplus, tanh
from layerwise.ops.boxes import batched_nms, box_area, box_convert, box_iou, nms
from layerwise.ops.creation import (
    arange, as_tensor, empty, eye, from_numpy, full, full_like, linspace, ones, ones_like, rand,
    rand_like, randint, randn, randn_like, randperm, tensor, zeros, zeros_like,
)
from layerwise.ops.elementwise import (
    abs, add, cast, clamp, clip, div, exp, log, masked_fill, maximum, minimum, mul, neg, pow,
    rsqrt, sqrt, sub, tril, triu, where,
)
from layerwise.ops.matmul import matmul
from layerwise.ops.loss import sigmoid_focal_loss
from layerwise.ops.movement import (
    broadcast_to, cat, chunk, concat, expand, flatten, gather, getitem, pad, permute, reshape,
    split, squeeze, stack, transpose, unsqueeze, view,
)
from layerwise.ops.random import dropout, one_hot
from layerwise.ops.reduce import (
    all, amax, amin, any, argmax, argmin, log_softmax, logsumexp, max, mean, min, prod, softmax,
    std, sum, var,
)

_methods.bind()

from layerwise.ops import fast  # noqa: E402,F401  (registers the fast paths with dispatch)
