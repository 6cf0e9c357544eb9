"""A model's parameters as one flat vector and back, e.g. for line searches or weight averaging."""

from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor
from layerwise.ops.movement import cat


def parameters_to_vector(parameters):
    """All parameters flattened and concatenated into one 1-D Tensor (differentiable)."""
    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of ``vec`` into the parameters, in place."""
    data = vec.data if isinstance(vec, Tensor) else xp.asarray(vec)
    params = list(parameters)
    needed = sum(p.numel() for p in params)
    if data.ndim != 1 or data.size != needed:
        raise ValueError(
            f"vector_to_parameters needs a 1-D vector of {needed} elements, "
            f"got shape {tuple(data.shape)}"
        )
    start = 0
    for p in params:
        p.data[...] = data[start : start + p.numel()].reshape(p.shape)
        start += p.numel()
