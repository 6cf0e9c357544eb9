"""Dropout and Flatten: layers without parameters that reshape or mask their input."""

from layerwise.autograd.tensor import check_tensor
from layerwise.nn import functional as F
from layerwise.nn.module import Module


class Dropout(Module):
    """Zeroes each element with probability p while training and scales the rest by 1/(1-p);
    the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be a number in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = inplace  # accepted for PyTorch compatibility; the result is always new

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    """Merges dims start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) with the defaults."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return check_tensor(x, "Flatten").flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
