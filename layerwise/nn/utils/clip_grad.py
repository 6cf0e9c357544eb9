"""Gradient clipping, applied between backward() and the optimizer step.

Gradients are replaced, never scaled in place: the autograd engine may give two parameters
the same gradient array, or a read-only broadcast view.
"""

from layerwise.backend import xp
from layerwise.autograd import recording
from layerwise.autograd.tensor import Tensor


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


@recording.replayable
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    The joint norm is the norm of the per-parameter norms (the norm of all gradients
    concatenated). When it exceeds max_norm every gradient is multiplied by
    max_norm / (norm + 1e-6), as in PyTorch. Returns the norm before clipping, as a Tensor.
    """
    params = _grads(parameters)
    norm_type = float(norm_type)
    if not params:
        return Tensor(xp.asarray(0.0, dtype=xp.float32))
    norms = xp.stack([xp.linalg.norm(p.grad.data.reshape(-1), ord=norm_type) for p in params])
    total = xp.linalg.norm(norms, ord=norm_type)
    if error_if_nonfinite and not xp.isfinite(total):
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is {float(total)}, "
            "so they cannot be clipped; pass error_if_nonfinite=False to skip this check"
        )
    coef = float(max_norm) / (float(total) + 1e-6)
    if coef < 1:
        for p in params:
            p.grad = Tensor((p.grad.data * coef).astype(p.grad.dtype, copy=False))
    return Tensor(xp.asarray(total, dtype=params[0].grad.dtype))


@recording.replayable
def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    for p in _grads(parameters):
        p.grad = Tensor(xp.clip(p.grad.data, -clip_value, clip_value))
