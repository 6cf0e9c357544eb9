"""Fast paths of the activations: ReLU and GELU as compiled single passes."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import threads, xp
from layerwise.ops.activation import GELU, ReLU
from layerwise.ops.fast.path import FastPath

# Below this many values a ReLU's two NumPy passes (compare, maximum) are as fast as one call.
MIN_RELU_VALUES = 4096

# From this many values the float32 GELU runs as two halves on two cores (backend/threads.py):
# below it parking OpenBLAS's threads (~0.13 ms) eats the gain. 1 M values: forward 0.68 ->
# 0.53 ms, backward 1.10 -> 0.69 ms.
MIN_GELU_VALUES_IN_HALVES = 1 << 18


@fast_path
class ReluOnePass(FastPath, ReLU):
    """The output and the backward's mask in one pass, and the backward in one pass."""

    kernels = ("relu_forward", "relu_backward")
    why = "CNN workload ReLU forward 1.56 -> 0.89 ms, backward 1.29 -> 0.83 ms a step"

    @classmethod
    def worth_it(cls, x, *, graph):
        # with no graph too, its mask unused: NumPy's maximum alone is slower (262 K float32
        # values: 100 us against 29)
        return x.size >= MIN_RELU_VALUES

    def forward(self, x):
        # empty_like keeps x's memory order, so the three flat views ("K": memory order) line
        # up element by element, whatever x's layout (a conv output is batch-last)
        out, self.mask = xp.empty_like(x), xp.empty_like(x, dtype=bool)
        self.kernel("relu_forward")(x.ravel(order="K"), out.ravel(order="K"),
                                    self.mask.ravel(order="K"))
        return out

    def backward(self, g):
        if g.strides != tuple(s * g.itemsize for s in self.mask.strides):
            return g * self.mask  # the flat views line up only if g is laid out like the mask
        dx = xp.empty_like(g)
        self.kernel("relu_backward")(g.ravel(order="K"), self.mask.ravel(order="K"),
                                     dx.ravel(order="K"))
        return dx


@fast_path
class GeluFloat32(FastPath, GELU):
    """Both forms in float32 as one compiled pass each way, with the tanh or Phi of
    fast/vecmath.py; nothing saved but x (backward recomputes Phi or t), as PyTorch does."""

    kernels = ("gelu_erf_f32", "gelu_erf_backward_f32", "gelu_tanh_f32", "gelu_tanh_backward_f32")
    why = "exact form, (16, 128, 512): 13.3 -> 0.9 ms forward (SciPy's erf is a call per value)"
    _KERNELS = {"none": ("gelu_erf_f32", "gelu_erf_backward_f32"),
                "tanh": ("gelu_tanh_f32", "gelu_tanh_backward_f32")}

    @classmethod
    def supports(cls, x, approximate="none", *, graph):
        return x.dtype == xp.float32

    def forward(self, x, approximate="none"):
        self.x, self.approximate = x, approximate
        out = xp.empty(x.shape, x.dtype)  # C order whatever x's layout (flat views below)
        forward = self.kernel(self._KERNELS[approximate][0])
        _flat_in_halves(lambda o, i: forward(i, o), out.reshape(-1),
                        xp.ascontiguousarray(x).reshape(-1))
        return out

    def backward(self, g):
        dx = xp.empty(self.x.shape, self.x.dtype)
        flat = [xp.ascontiguousarray(a, dtype=xp.float32).reshape(-1) for a in (g, self.x)]
        _flat_in_halves(self.kernel(self._KERNELS[self.approximate][1]), dx.reshape(-1), *flat)
        return dx


def _flat_in_halves(kernel_fn, out, *inputs):
    """kernel_fn(out, *inputs) over flat arrays, as two halves at once when they are large."""
    if out.size < MIN_GELU_VALUES_IN_HALVES or not threads.available():
        kernel_fn(out, *inputs)
        return
    cut = out.size // 2
    threads.run_pair(lambda: kernel_fn(out[:cut], *[a[:cut] for a in inputs]),
                     lambda: kernel_fn(out[cut:], *[a[cut:] for a in inputs]))
