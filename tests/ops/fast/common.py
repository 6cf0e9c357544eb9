"""Running a function through the reference ops and through one forced fast path."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from tests.harness import PATH_TOLERANCE

# How far a fast path may stray from its reference: the harness's figures.
TOL = {np.dtype(name).type: tolerance for name, tolerance in PATH_TOLERANCE.items()}


def needs(path):
    """Skip a test where ``path``'s kernels cannot compile (numba missing or turned off)."""
    return pytest.mark.skipif(not path.available(), reason=f"{path.__name__} needs numba")


def outputs_and_grads(fn, arrays, probe=None):
    """fn's output and, with a probe (the upstream gradient), the inputs' gradients."""
    if probe is None:
        with lw.no_grad():
            return [fn(*[lw.tensor(a) for a in arrays]).numpy()]
    tensors = [lw.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * lw.tensor(probe)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


def path_and_reference(path, fn, arrays, probe=None):
    """(through ``path``, through the reference ops); fails unless ``path`` ran at least once."""
    with dispatch.forced(dispatch.REFERENCE):
        reference = outputs_and_grads(fn, arrays, probe)
    with dispatch.forced(path) as uses:
        got = outputs_and_grads(fn, arrays, probe)
    assert uses.count, f"{path.__name__} did not run: the test's inputs do not reach it"
    return got, reference


def assert_close(got, reference, dtype):
    for i, (g, r) in enumerate(zip(got, reference)):
        np.testing.assert_allclose(g, r, **TOL[np.dtype(dtype).type], err_msg=f"result {i}")
