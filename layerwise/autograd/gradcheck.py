"""Check analytic gradients against central finite differences in float64."""

from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor


def numerical_grad(fn, inputs, index, eps=1e-6):
    """d(sum(fn(*inputs) * probe))/d(inputs[index]) by central differences, for a fixed probe."""
    x = inputs[index].data
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: writing into flat moves x
    probe = _probe(fn, inputs)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = float((fn(*inputs).data * probe).sum())
        flat[i] = old - eps
        minus = float((fn(*inputs).data * probe).sum())
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def _probe(fn, inputs):
    # A fixed, non-uniform weighting of the outputs so that every output element is checked,
    # not only their sum (a sum can hide gradients that cancel).
    out = fn(*inputs).data
    return xp.linspace(0.5, 1.5, out.size).reshape(out.shape) if out.size else out


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, raise_exception=True):
    """True when autograd's gradients of ``fn`` match finite differences for every input.

    ``inputs`` are Tensors; those with requires_grad=True are checked and must be float64,
    because float32 finite differences are too coarse to tell a bug from rounding.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck needs at least one input with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != xp.float64:
            raise TypeError(
                f"gradcheck input {i} has dtype {inputs[i].dtype}; use float64 for finite differences"
            )
    out = fn(*inputs)
    probe = _probe(fn, inputs)
    for i in checked:
        inputs[i].grad = None
    out.backward(Tensor(probe.astype(out.dtype)))
    for i in checked:
        analytic = inputs[i].grad.data if inputs[i].grad is not None else xp.zeros_like(inputs[i].data)
        numeric = numerical_grad(fn, inputs, i, eps)
        if not xp.allclose(analytic, numeric, atol=atol, rtol=rtol):
            if not raise_exception:
                return False
            worst = float(xp.abs(analytic - numeric).max())
            raise AssertionError(
                f"gradient of input {i} (shape {inputs[i].shape}) differs from finite differences "
                f"by up to {worst:.3g}\nanalytic:\n{analytic}\nnumeric:\n{numeric}"
            )
    return True
