"""Activation functions.

Each has its own backward because the derivative is cheapest in terms of the output
(sigmoid, tanh) or needs a stable form (softplus); composing them from exp/log would save
more arrays and overflow for large inputs.
"""

import math

from layerwise.backend import erf, threads, xp
from layerwise.autograd.function import Function
from layerwise.ops.blocked import blockwise
from layerwise.ops.kernels import kernel


class ReLU(Function):
    def forward(self, x):
        if x.size < 4096 and not self.needs_input_grad:  # no graph: no mask to keep
            return xp.maximum(x, 0)  # (NaN stays NaN)
        fused = kernel("relu_forward") if x.size >= 4096 else None
        if fused is not None:  # one pass for the output and the mask (kernels.py)
            # empty_like keeps x's memory order, so the three flat views ("K": memory order)
            # line up element by element, whatever x's layout (a conv output is batch-last)
            out, self.mask = xp.empty_like(x), xp.empty_like(x, dtype=bool)
            fused(x.ravel(order="K"), out.ravel(order="K"), self.mask.ravel(order="K"))
            return out
        self.mask = x > 0
        return xp.maximum(x, 0)  # (not x * mask: -inf * 0 is NaN)

    def backward(self, g):
        return relu_grad(g, self.mask)


def relu_in_place(x, keep_mask):
    """x = relu(x), in place (NaN stays NaN); returns the mask x > 0 for the backward when
    ``keep_mask``, else None. For an op that ends in a ReLU (a Linear followed by one)."""
    if not keep_mask:
        xp.maximum(x, 0, out=x)
        return None
    mask = xp.empty_like(x, dtype=bool)
    fused = kernel("relu_forward") if x.size >= 4096 and x.flags.c_contiguous else None
    if fused is not None:
        flat = x.ravel()
        fused(flat, flat, mask.ravel())  # one pass: each element read once, then written
        return mask
    xp.greater(x, 0, out=mask)
    xp.maximum(x, 0, out=x)  # (not x * mask: -inf * 0 is NaN)
    return mask


def relu_grad(g, mask):
    """The gradient through a ReLU whose input was positive where ``mask``."""
    fused = kernel("relu_backward") if mask.size >= 4096 else None
    # the flat views line up only if g is laid out like the mask (the usual case)
    if fused is not None and g.strides == tuple(s * g.itemsize for s in mask.strides):
        dx = xp.empty_like(g)
        fused(g.ravel(order="K"), mask.ravel(order="K"), dx.ravel(order="K"))
        return dx
    return g * mask


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
        self.sig = 0.5 * (1 + xp.tanh(0.5 * z))  # d softplus / dx = sigmoid(beta x)
        out = (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) / beta
        linear = z > threshold  # PyTorch reverts to the identity above the threshold
        self.sig = xp.where(linear, 1.0, self.sig).astype(x.dtype)
        return xp.where(linear, x, out).astype(x.dtype)

    def backward(self, g):
        return g * self.sig


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_A = 0.044715


def _gelu_tanh_forward(out, t, x):
    """t = tanh(sqrt(2/pi) (x + a x^3)), out = x (1 + t) / 2, in place (one block)."""
    xp.multiply(x, x, out=t)
    t *= x
    t *= _GELU_A
    t += x
    t *= _SQRT_2_OVER_PI
    xp.tanh(t, out=t)
    xp.add(t, 1, out=out)
    out *= x
    out *= 0.5


def _gelu_tanh_backward(dx, g, x, t, s):
    """dx = g ((1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3a x^2) / 2), with s as scratch."""
    xp.multiply(x, x, out=s)
    s *= 3 * _GELU_A
    s += 1
    s *= _SQRT_2_OVER_PI  # d(inner)/dx
    xp.multiply(t, t, out=dx)
    xp.subtract(1, dx, out=dx)
    dx *= x
    dx *= s
    dx += t
    dx += 1
    dx *= 0.5
    dx *= g


def _gelu_erf_forward(out, cdf, x):
    """cdf = (1 + erf(x / sqrt 2)) / 2, out = x cdf."""
    xp.multiply(x, 1 / math.sqrt(2), out=cdf)
    erf(cdf, out=cdf)
    cdf += 1
    cdf *= 0.5
    xp.multiply(x, cdf, out=out)


def _gelu_erf_backward(dx, g, x, cdf, s):
    """dx = g (cdf + x pdf), pdf = exp(-x^2 / 2) / sqrt(2 pi)."""
    xp.multiply(x, x, out=s)
    s *= -0.5
    xp.exp(s, out=s)
    s *= 1 / math.sqrt(2 * math.pi)
    s *= x
    xp.add(cdf, s, out=dx)
    dx *= g


class GELU(Function):
    """x * Phi(x) (Hendrycks & Gimpel 2016); 'tanh' uses their tanh approximation, as GPT-2 does.

    With the compiled kernels (kernels.py; in float32 one pass each way with the tanh of
    kernels_vecmath.py: 0.82 -> 0.67 ms forward, 1.11 -> 0.84 ms backward per 1 M values)
    the tanh form saves only x and recomputes t = tanh(...) in backward, as PyTorch does:
    one (N, 4C) array less per GPT block held between forward and backward (GPT step memory
    130 -> 118 MB on the bench) for ~0.6 ms of recomputation per block.
    The exact form in float32 does the same with the compiled Phi of kernels_vecmath.py in
    place of SciPy's erf, which is a scalar call per value: on (16, 128, 512) values
    13.3 -> 0.9 ms forward, 15.0 -> 2.1 ms forward and backward.
    Otherwise both forms run blockwise in NumPy (blocked.py) and keep t (or Phi(x)), since
    their derivatives are chains of a dozen elementwise passes.
    """

    def forward(self, x, approximate="none"):
        self.x, self.approximate, self.saved = x, approximate, None
        out = xp.empty(x.shape, x.dtype)  # C order whatever x's layout (flat views below)
        names = _FLOAT32_KERNELS[approximate] if x.dtype == xp.float32 else None
        fused = kernel(names[0]) if names else None
        if fused is not None:  # one pass with a compiled tanh or Phi (kernels_vecmath.py)
            _flat_in_halves(lambda o, i: fused(i, o), out.reshape(-1),
                            xp.ascontiguousarray(x).reshape(-1))
            return out
        if approximate == "tanh" and kernel("gelu_tanh_inner") is not None:
            t = _tanh_inner(x)  # not kept: backward recomputes it
            kernel("gelu_tanh_output")(xp.ascontiguousarray(x).reshape(-1), t.reshape(-1),
                                       out.reshape(-1))
            return out
        self.saved = xp.empty(x.shape, x.dtype)  # t or Phi(x)
        step = _gelu_tanh_forward if approximate == "tanh" else _gelu_erf_forward
        blockwise(step, (out, self.saved), (x,), x.dtype)
        return out

    def backward(self, g):
        if self.saved is None and self.x.dtype == xp.float32:  # t or Phi recomputed inside
            dx = xp.empty(self.x.shape, self.x.dtype)
            flat = [xp.ascontiguousarray(a, dtype=xp.float32).reshape(-1) for a in (g, self.x)]
            _flat_in_halves(kernel(_FLOAT32_KERNELS[self.approximate][1]), dx.reshape(-1), *flat)
            return dx
        if self.saved is None:  # the compiled tanh form: t again, then dx
            t = _tanh_inner(self.x)
            dx = xp.empty_like(t)  # not t's memory: aliased arrays stop numba vectorising
            flat = [xp.ascontiguousarray(a, dtype=t.dtype).reshape(-1) for a in (g, self.x)]
            kernel("gelu_tanh_backward")(dx.reshape(-1), *flat, t.reshape(-1))
            return dx
        step = _gelu_tanh_backward if self.approximate == "tanh" else _gelu_erf_backward
        (dx,) = blockwise(step, (xp.empty(g.shape, g.dtype),), (g, self.x, self.saved),
                          self.x.dtype, scratch=1)
        return dx


# approximate -> the float32 kernels (forward, backward) of kernels_vecmath.py
_FLOAT32_KERNELS = {"tanh": ("gelu_tanh_f32", "gelu_tanh_backward_f32"),
                    "none": ("gelu_erf_f32", "gelu_erf_backward_f32")}

# From this many values the float32 GELU kernels run as two halves on two cores
# (backend/threads.py): below it parking and restarting OpenBLAS's threads (~0.13 ms) eats the
# gain. GPT workload, 1 M values (a layer's MLP) after a matrix product: forward 0.68 -> 0.53
# ms, backward 1.10 -> 0.69 ms; the training step 0.99-1.05x, 1.018x on average over seven
# in-process A/B runs.
MIN_VALUES_IN_HALVES = 1 << 18


def _flat_in_halves(kernel_fn, out, *inputs):
    """kernel_fn(out, *inputs) over flat arrays, as two halves at once when they are large."""
    if out.size < MIN_VALUES_IN_HALVES or not threads.available():
        kernel_fn(out, *inputs)
        return
    cut = out.size // 2
    threads.run_pair(lambda: kernel_fn(out[:cut], *[a[:cut] for a in inputs]),
                     lambda: kernel_fn(out[cut:], *[a[cut:] for a in inputs]))


def _tanh_inner(x):
    """tanh(sqrt(2/pi) (x + 0.044715 x^3)) in three passes: the compiled polynomial, then
    NumPy's SIMD tanh in place (a compiled tanh would be scalar, and slower than all nine
    NumPy passes together)."""
    t = xp.empty(x.shape, x.dtype)
    kernel("gelu_tanh_inner")(xp.ascontiguousarray(x).reshape(-1), t.reshape(-1))
    return xp.tanh(t, out=t)


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
