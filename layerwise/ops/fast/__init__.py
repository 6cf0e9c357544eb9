"""Fast paths: compiled kernels, layouts and two-core splits that replace a reference op of
layerwise/ops where they apply and measured faster. Each module registers its paths with
layerwise.autograd.dispatch on import; the kernels themselves are in kernels.py and vecmath.py.
"""

from layerwise.ops.fast import (  # noqa: F401  (each registers its paths)
    activation, attention, conv, elementwise, embedding, linear, loss, matmul, movement, norm,
    pool, random, reduce, rnn,
)
