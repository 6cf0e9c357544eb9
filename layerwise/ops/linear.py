"""The linear layer's op: y = x W^T + b over any leading dims."""

from layerwise.backend import xp
from layerwise.autograd.function import Function


class LinearFunction(Function):
    """One node instead of transpose, matmul and add. The leading dims are flattened first, so
    the weight gradient of a (B, T, in) input is one (out, B*T) @ (B*T, in) product rather than
    B products summed afterwards."""

    def forward(self, x, weight, bias=None):
        self.x, self.weight = x, weight
        out = x.reshape(-1, x.shape[-1]) @ weight.T  # (M, in) @ (in, out) -> (M, out)
        if bias is not None:
            out += bias  # in place: one (M, out) array fewer
        return out.reshape(x.shape[:-1] + (weight.shape[0],))  # (..., out)

    def backward(self, g):
        needs = self.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])  # (M, out)
        gx = (g2 @ self.weight).reshape(self.x.shape) if needs[0] else None
        gw = g2.T @ self.x.reshape(-1, self.x.shape[-1]) if needs[1] else None  # (out, in)
        gb = g2.sum(axis=0) if len(needs) > 2 and needs[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with weight laid out (out_features, in_features)."""
    if weight.ndim != 2:
        raise ValueError("linear weight must be 2-D (out_features, in_features), "
                         f"got shape {tuple(weight.shape)}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear expected input with last dim {weight.shape[1]} (weight shape "
            f"{tuple(weight.shape)} is (out, in)), got input of shape {tuple(x.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    dtypes = {t.dtype for t in (x, weight, bias) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"linear needs input, weight and bias of one dtype, got "
                        f"{', '.join(str(d) for d in dtypes)}; convert with .to(dtype)")
    if not xp.issubdtype(x.dtype, xp.floating):
        raise TypeError(f"linear needs floating-point tensors, got {x.dtype}; convert with .float()")
    if bias is None:
        return LinearFunction.apply(x, weight)
    return LinearFunction.apply(x, weight, bias)
