"""LayerNorm and RMSNorm, with PyTorch's parameter names (``weight``, ``bias``)."""

import numbers

from layerwise import backend
from layerwise.backend import xp
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.ops.norm import layer_norm, rms_norm


def _shape(name, normalized_shape):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in shape):
        raise ValueError(
            f"{name} normalized_shape must be a positive int or a tuple of them, "
            f"got {normalized_shape!r}"
        )
    return shape


def _eps(name, eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"{name} eps must be a number >= 0, got {eps!r}")
    return eps


class LayerNorm(Module):
    """Normalises the last dims to zero mean and unit variance, then scales and shifts:
    y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias (Ba et al. 2016).

    weight starts at ones and bias at zeros, as in PyTorch; ``bias=False`` drops the bias,
    ``elementwise_affine=False`` both.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        self.normalized_shape = _shape("LayerNorm", normalized_shape)
        self.eps = _eps("LayerNorm", eps)
        self.elementwise_affine = elementwise_affine
        dtype = backend.to_dtype(dtype or backend.default_float())
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = Parameter(xp.ones(self.normalized_shape, dtype=dtype))
            if bias:
                self.bias = Parameter(xp.zeros(self.normalized_shape, dtype=dtype))

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
            + (", bias=False" if self.elementwise_affine and self.bias is None else "")
        )


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dims (Zhang & Sennrich 2019), as
    torch.nn.RMSNorm (PyTorch 2.4+): ``eps=None`` uses the input dtype's machine epsilon."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=None):
        super().__init__()
        self.normalized_shape = _shape("RMSNorm", normalized_shape)
        self.eps = None if eps is None else _eps("RMSNorm", eps)
        self.elementwise_affine = elementwise_affine
        dtype = backend.to_dtype(dtype or backend.default_float())
        self.weight = (
            Parameter(xp.ones(self.normalized_shape, dtype=dtype)) if elementwise_affine else None
        )

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )
