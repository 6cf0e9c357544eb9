"""Matrix multiplication, batched over leading dims that broadcast."""

from layerwise.backend import xp
from layerwise.autograd.engine import unbroadcast
from layerwise.autograd.function import Function
from layerwise.ops import movement


class MatMul(Function):
    """(..., n, k) @ (..., k, m) -> (..., n, m); both inputs have at least 2 dims here."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(g @ xp.swapaxes(self.b, -1, -2), self.a.shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(xp.swapaxes(self.a, -1, -2) @ g, self.b.shape)
        return ga, gb


def matmul(a, b):
    """PyTorch's rules: a 1-D left operand is a row, a 1-D right operand is a column,
    and the added dim is removed from the result."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs tensors with at least 1 dim, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul shapes {tuple(a.shape)} and {tuple(b.shape)} do not align: "
                         f"{a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]}")
    a2 = movement.unsqueeze(a, 0) if a.ndim == 1 else a
    b2 = movement.unsqueeze(b, 1) if b.ndim == 1 else b
    try:
        out = MatMul.apply(a2, b2)  # (..., n, m), with n = 1 or m = 1 where a dim was added
    except ValueError:  # the inner dims align (checked above), so the batch dims do not
        batch_a, batch_b = tuple(a.shape[:-2]), tuple(b.shape[:-2])
        raise ValueError(f"matmul shapes {tuple(a.shape)} and {tuple(b.shape)}: the batch dims "
                         f"{batch_a} and {batch_b} do not broadcast") from None
    if a.ndim == 1 or b.ndim == 1:
        shape = out.shape[:-2] + out.shape[-2:-1] * (a.ndim > 1) + out.shape[-1:] * (b.ndim > 1)
        out = movement.reshape(out, shape)
    return out
