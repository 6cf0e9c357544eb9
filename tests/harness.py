"""The one op-test harness: every op's forward against NumPy in float64, its gradient
against central finite differences, and its float32 forward against the same reference, all
on the reference ops; then each fast path registered for an op the case runs (the ``path``
axis), forced on the case's inputs, against the reference op: forward and gradients, in float32
and float64, with and without a graph.

An ``OpCase`` names a layerwise function and an independent NumPy reference, plus the input
shapes to try. Inputs are drawn from a domain that keeps the op smooth (positive for log,
away from zero for abs/relu kinks, where finite differences would straddle the kink).
"""

import math
from dataclasses import dataclass, field

import numpy as np

import layerwise as lw
from layerwise.autograd import dispatch

DOMAINS = {
    "real": lambda rng, shape: rng.standard_normal(shape),
    "positive": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    # |x| in [0.2, 2]: keeps finite differences of kinked ops (relu, abs, clamp) off the kink.
    "nonzero": lambda rng, shape: rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape),
    "unit": lambda rng, shape: rng.uniform(-0.9, 0.9, shape),
}


@dataclass
class OpCase:
    name: str
    op: callable  # (*Tensors) -> Tensor
    ref: callable  # (*float64 arrays) -> array
    shapes: list  # each entry: a tuple of input shapes
    domain: str = "real"
    grad: bool = True
    atol: float = 1e-6
    f32_atol: float = 1e-4
    kwargs: dict = field(default_factory=dict)

    def ids(self):
        return [f"{self.name}-{'x'.join(str(s) for s in shapes)}" for shapes in self.shapes]


def make_inputs(case, shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [DOMAINS[case.domain](rng, shape) for shape in shapes]


def check_forward(case, shapes):
    with dispatch.forced(dispatch.REFERENCE):
        _check_forward(case, shapes)


def _check_forward(case, shapes):
    arrays = make_inputs(case, shapes)
    expected = np.asarray(case.ref(*arrays))
    got64 = case.op(*[lw.tensor(a) for a in arrays])
    assert got64.dtype == lw.float64, f"{case.name} changed float64 to {got64.dtype}"
    assert got64.shape == expected.shape, f"{case.name}: shape {got64.shape} != {expected.shape}"
    np.testing.assert_allclose(got64.numpy(), expected, atol=case.atol, rtol=1e-7)
    got32 = case.op(*[lw.tensor(a, dtype=lw.float32) for a in arrays])
    assert got32.dtype == lw.float32, f"{case.name} changed float32 to {got32.dtype}"
    np.testing.assert_allclose(got32.numpy(), expected, atol=case.f32_atol, rtol=1e-4)


def check_gradient(case, shapes):
    arrays = make_inputs(case, shapes, seed=1)
    inputs = [lw.tensor(a, requires_grad=True) for a in arrays]
    with dispatch.forced(dispatch.REFERENCE):
        assert lw.autograd.gradcheck(case.op, inputs, atol=1e-5, rtol=1e-4)


def fast_paths(case, shapes):
    """The available fast paths that support at least one call of the ops this case runs,
    found by running it in float32 and float64, with and without a graph."""
    arrays = make_inputs(case, shapes)
    with dispatch.traced() as calls:
        for dtype in (lw.float32, lw.float64):
            for graph in (False, True) if case.grad else (False,):
                _outputs_and_grads(case, arrays, dtype, graph)
    paths = {path for reference, call_arrays, params, graph in calls
             for path in dispatch.paths_of(reference)
             if path.available() and path.supports(*call_arrays, graph=graph, **params)}
    return sorted(paths, key=lambda p: p.__name__)


# How far a fast path may stray from its reference: float32 kernels may reassociate sums and
# use their own exp; float64 ones compute the same formulas in the same precision.
PATH_TOLERANCE = {"float32": dict(atol=2e-5, rtol=2e-5), "float64": dict(atol=1e-12, rtol=1e-10)}


def _outputs_and_grads(case, arrays, dtype, graph):
    inputs = [lw.tensor(a, dtype=dtype, requires_grad=graph) for a in arrays]
    if not graph:
        with lw.no_grad():
            return [case.op(*inputs).numpy()]
    out = case.op(*inputs)
    upstream = np.random.default_rng(2).standard_normal(out.shape)
    (out * lw.tensor(upstream, dtype=dtype)).sum().backward()
    # an input the output does not depend on gets no gradient: compare it as zeros
    return [out.detach().numpy()] + [np.zeros(t.shape) if t.grad is None else t.grad.numpy()
                                     for t in inputs]


def check_path(case, shapes, path):
    arrays = make_inputs(case, shapes, seed=3)
    used = 0
    for dtype in ("float32", "float64"):
        for graph in (False, True) if case.grad else (False,):
            with dispatch.forced(dispatch.REFERENCE):
                expected = _outputs_and_grads(case, arrays, getattr(lw, dtype), graph)
            with dispatch.forced(path) as uses:
                got = _outputs_and_grads(case, arrays, getattr(lw, dtype), graph)
            used += uses.count
            for name, g, e in zip(["output"] + [f"grad {i}" for i in range(len(arrays))], got, expected):
                np.testing.assert_allclose(g, e, **PATH_TOLERANCE[dtype],
                                           err_msg=f"{path.__name__} {dtype} graph={graph}: {name}")
    assert used, f"{path.__name__} supports none of {case.name}'s calls on shapes {shapes}"


def erf(x):
    return np.vectorize(math.erf)(x)


def harness_tests(cases):
    """The three harness tests, parametrized over every case and shape (and fast path).

    A test module collects them by assigning them to module-level names:
        (test_forward_matches_numpy, test_gradient_matches_finite_differences,
         test_fast_path_matches_reference) = harness_tests(CASES)
    """
    import pytest

    params = [(case, shapes) for case in cases for shapes in case.shapes]
    ids = [i for case in cases for i in case.ids()]
    with_grad = [(p, i) for p, i in zip(params, ids) if p[0].grad]

    @pytest.mark.parametrize("case,shapes", params, ids=ids)
    def test_forward_matches_numpy(case, shapes):
        check_forward(case, shapes)

    @pytest.mark.parametrize("case,shapes", [p for p, _ in with_grad], ids=[i for _, i in with_grad])
    def test_gradient_matches_finite_differences(case, shapes):
        check_gradient(case, shapes)

    path_params = [(case, shapes, path) for (case, shapes), i in zip(params, ids)
                   for path in fast_paths(case, shapes)]
    path_ids = [f"{i}-{path.__name__}" for (case, shapes), i in zip(params, ids)
                for path in fast_paths(case, shapes)]

    @pytest.mark.parametrize("case,shapes,path", path_params, ids=path_ids)
    def test_fast_path_matches_reference(case, shapes, path):
        check_path(case, shapes, path)

    return (test_forward_matches_numpy, test_gradient_matches_finite_differences,
            test_fast_path_matches_reference)
