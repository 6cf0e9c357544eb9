"""Linear (fully connected) layer, and Identity."""

import math

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import check_tensor
from layerwise.nn import functional as F
from layerwise.nn import init
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    Initialised as PyTorch does: W ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
    b ~ U(-1/sqrt(in), 1/sqrt(in)), drawn from the global generator (weight first, then bias).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"Linear {name} must be a positive int, got {n!r}")
        self.in_features, self.out_features = in_features, out_features
        dtype = backend.to_dtype(dtype or backend.default_float())
        self.weight = Parameter(xp.empty((out_features, in_features), dtype=dtype))
        self.bias = Parameter(xp.empty((out_features,), dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(self._checked(x), self.weight, self.bias)

    def _checked(self, x):
        check_tensor(x, "Linear")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expected last dim {self.in_features} (weight of shape "
                f"{tuple(self.weight.shape)}, (out_features, in_features)), got input of shape "
                f"{tuple(x.shape)}"
            )
        if x.dtype != self.weight.dtype:
            hint = (
                "x.float()"
                if self.weight.dtype == backend.float32
                else f"x.to({self.weight.dtype})"
            )
            raise TypeError(
                f"Linear got input of dtype {x.dtype} but its weight is {self.weight.dtype}; "
                f"convert the input ({hint}) or the model (model.to(dtype))"
            )
        return x

    def extra_repr(self):
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


class Identity(Module):
    """Returns its input; a placeholder where a layer is optional."""

    def __init__(self, *args, **kwargs):  # accepts and ignores arguments, as PyTorch's does
        super().__init__()

    def forward(self, x):
        return x
