"""nn.utils: gradient clipping against a NumPy computation, and flat parameter vectors."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn as nn
from layerwise.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    parameters_to_vector,
    vector_to_parameters,
)


def _params_with_grads(shapes, scale, seed=0):
    rng = np.random.default_rng(seed)
    params = []
    for shape in shapes:
        p = nn.Parameter(lw.zeros(*shape, dtype=lw.float64))
        p.grad = lw.tensor(rng.standard_normal(shape) * scale)
        params.append(p)
    return params


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_matches_numpy(norm_type, scale):
    params = _params_with_grads([(3, 4), (4,), (2, 2, 2)], scale)
    grads = [p.grad.data.copy() for p in params]
    flat = np.concatenate([g.ravel() for g in grads])
    total = (
        np.abs(flat).max()
        if norm_type == float("inf")
        else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    )
    max_norm = 1.0
    returned = clip_grad_norm_(params, max_norm, norm_type)
    np.testing.assert_allclose(returned.item(), total, rtol=1e-12)
    coef = min(1.0, max_norm / (total + 1e-6))
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_allclose(p.grad.data, g * coef, rtol=1e-12)
    if scale > 1:  # clipped: the new joint norm is max_norm (up to the 1e-6 guard)
        assert clip_grad_norm_(params, max_norm, norm_type).item() == pytest.approx(
            max_norm, rel=1e-5
        )


def test_clip_grad_norm_skips_missing_grads_and_handles_aliased_grads():
    a = lw.randn(3, requires_grad=True)
    b = lw.randn(3, requires_grad=True)
    c = nn.Parameter(lw.zeros(2))  # no grad: ignored
    (10 * (a + b)).sum().backward()  # the engine may give a and b the same gradient array
    before = a.grad.data.copy()
    total = clip_grad_norm_([a, b, c], max_norm=1.0)
    expected = np.sqrt(2 * (before**2).sum())
    np.testing.assert_allclose(total.item(), expected, rtol=1e-6)
    np.testing.assert_allclose(a.grad.data, before / (expected + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(b.grad.data, before / (expected + 1e-6), rtol=1e-6)
    assert c.grad is None


def test_clip_grad_norm_nonfinite():
    params = _params_with_grads([(3,)], 1.0)
    params[0].grad.data[0] = np.inf
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    params = _params_with_grads([(5, 5)], 2.0)
    g = params[0].grad.data.copy()
    clip_grad_value_(params, 0.5)
    np.testing.assert_array_equal(params[0].grad.data, np.clip(g, -0.5, 0.5))


def test_parameters_to_vector_and_back():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    vec = parameters_to_vector(model.parameters())
    assert vec.shape == (model.num_parameters(),)
    np.testing.assert_array_equal(vec.data[:6], model[0].weight.data.ravel())
    vector_to_parameters(lw.arange(11, dtype=lw.float32), model.parameters())
    np.testing.assert_array_equal(model[1].bias.data, [10.0])
    with pytest.raises(ValueError, match="11 elements"):
        vector_to_parameters(lw.zeros(3), model.parameters())
