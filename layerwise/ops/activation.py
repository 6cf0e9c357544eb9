"""Activation functions.

Each has its own backward because the derivative is cheapest in terms of the output
(sigmoid, tanh) or needs a stable form (softplus); composing them from exp/log would save
more arrays and overflow for large inputs.
"""

import math

from layerwise.backend import erf, xp
from layerwise.autograd.function import Function


class ReLU(Function):
    def forward(self, x):
        if self.needs_input_grad:
            self.mask = x > 0
        return xp.maximum(x, 0)  # NaN stays NaN (not x * mask: -inf * 0 is NaN)

    def backward(self, g):
        return g * self.mask


class LeakyReLU(Function):
    def forward(self, x, negative_slope=0.01):
        # The slope in x's dtype and a boolean mask only when backward will run: an array of
        # float64 slopes cost four passes (1M float32 values, no graph: 5.0 -> 0.2 ms).
        self.slope = x.dtype.type(negative_slope)
        if self.needs_input_grad:
            self.positive = x > 0
        out = xp.multiply(x, self.slope, out=xp.empty_like(x))  # an array even when x is 0-d
        if 0 <= negative_slope <= 1:  # max(x, a x) is x for x > 0, a x otherwise
            return xp.maximum(x, out, out=out)
        return xp.where(x > 0, x, out)

    def backward(self, g):
        # each element's factor looked up by its mask bit, not chosen by where(): where()
        # branches on a mask that flips at random (262k values: 0.97 -> 0.23 ms), same bits
        factors = xp.array([self.slope, 1], dtype=g.dtype).take(self.positive.view(xp.uint8))
        factors *= g
        return factors


class Sigmoid(Function):
    def forward(self, x):
        # 1/(1+exp(-x)) overflows exp for very negative x; the tanh form never does.
        self.out = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class Tanh(Function):
    def forward(self, x):
        self.out = xp.tanh(x)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


class Softplus(Function):
    """log(1 + exp(beta x)) / beta, computed as max(z, 0) + log1p(exp(-|z|)) to avoid overflow."""

    def forward(self, x, beta=1.0, threshold=20.0):
        z = beta * x
        out = (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) / beta
        linear = z > threshold  # PyTorch reverts to the identity above the threshold
        if self.needs_input_grad:  # d softplus / dx = sigmoid(beta x)
            sig = 0.5 * (1 + xp.tanh(0.5 * z))
            self.sig = xp.where(linear, 1.0, sig).astype(x.dtype, copy=False)
        return xp.where(linear, x, out).astype(x.dtype, copy=False)

    def backward(self, g):
        return g * self.sig


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_A = 0.044715


class GELU(Function):
    """x Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016); 'tanh' uses their tanh
    approximation of it, as GPT-2 does."""

    def forward(self, x, approximate="none"):
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_A * x * x * x))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
        return x * self.cdf

    def backward(self, g):
        x = self.x
        if self.approximate == "tanh":
            t = self.t
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_A * x * x)
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)
        pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return g * (self.cdf + x * pdf)


class SiLU(Function):
    """x * sigmoid(x) (Elfwing et al. 2017), one saved sigmoid instead of a product's two inputs."""

    def forward(self, x):
        self.x = x
        self.sig = 0.5 * (1 + xp.tanh(0.5 * x))
        return x * self.sig

    def backward(self, g):
        return g * self.sig * (1 + self.x * (1 - self.sig))


def relu(x):
    return ReLU.apply(x)


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(x, negative_slope=negative_slope)


def sigmoid(x):
    return Sigmoid.apply(x)


def tanh(x):
    return Tanh.apply(x)


def softplus(x, beta=1.0, threshold=20.0):
    return Softplus.apply(x, beta=beta, threshold=threshold)


def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


def silu(x):
    return SiLU.apply(x)
