"""layerwise: deep learning from first principles, readable in Python.

    import layerwise as lw
    x = lw.randn(4, 3, requires_grad=True)
    (x ** 2).sum().backward()
"""

from layerwise.backend import (
    bool_ as bool, float16, float32, float64, int8, int32, int64, uint8, manual_seed,
    get_rng_state, set_rng_state, set_default_dtype,
)
from layerwise.backend import default_float as get_default_dtype
from layerwise.autograd import Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from layerwise import autograd
from layerwise.autograd.compile import compile
from layerwise.ops import (
    abs, add, all, amax, amin, any, arange, argmax, argmin, as_tensor, broadcast_to, cat, chunk,
    clamp, clip, concat, div, dropout, empty, exp, expand, eye, flatten, from_numpy, full,
    full_like, gather, gelu, leaky_relu, linspace, log, log_softmax, logsumexp, masked_fill,
    matmul, max, maximum, mean, min, minimum, mul, neg, one_hot, ones, ones_like, pad, permute,
    pow, prod, rand, rand_like, randint, randn, randn_like, randperm, relu, reshape, rsqrt,
    sigmoid, silu, softmax, softplus, split, sqrt, squeeze, stack, std, sub, sum, tanh, tensor,
    transpose, tril, triu, unsqueeze, var, view, where, zeros, zeros_like,
)
from layerwise.serialization import load, save

float = float32
double = float64
long = int64

__version__ = "0.1.0"

# Subpackages, reachable as lw.nn, lw.optim, ... as in PyTorch (they import the names above).
from layerwise import data, distributed, models, nn, optim, parallel  # noqa: E402


def __getattr__(name):
    # lw.audit attaches to the core rather than being part of it: it is imported on first use
    # (lw.audit.card), so `import layerwise` does not load matplotlib and scipy; lw.onnx (the
    # exporter) and lw.serve (the server's batcher and models) attach the same way
    if name in ("audit", "onnx", "serve"):
        import importlib

        return importlib.import_module(f"layerwise.{name}")
    raise AttributeError(f"module 'layerwise' has no attribute {name!r}")
