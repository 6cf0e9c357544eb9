"""Property tests (hypothesis) for broadcasting: any pair of broadcastable shapes gives
NumPy's result, and each input's gradient has that input's shape and equals the sum of the
upstream gradient over the broadcast axes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import layerwise as lw

OPS = {
    "add": (lambda a, b: a + b, np.add),
    "mul": (lambda a, b: a * b, np.multiply),
    "sub": (lambda a, b: a - b, np.subtract),
    "maximum": (lw.maximum, np.maximum),
}


@settings(max_examples=60, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 2**16))
def test_broadcast_forward_and_gradient_shapes(shapes, op, seed):
    lw_op, np_op = OPS[op]
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes.input_shapes)
    ta, tb = lw.tensor(a, requires_grad=True), lw.tensor(b, requires_grad=True)
    out = lw_op(ta, tb)
    np.testing.assert_allclose(out.detach().numpy(), np_op(a, b), rtol=1e-12)
    upstream = rng.standard_normal(out.shape)
    out.backward(lw.tensor(upstream))
    assert ta.grad.shape == a.shape and tb.grad.shape == b.shape
    if op == "add":  # d(a+b)/da summed over broadcast axes: checkable in closed form
        expected = np.broadcast_to(upstream, shapes.result_shape)
        lead = len(shapes.result_shape) - a.ndim
        expected = expected.sum(axis=tuple(range(lead)))
        expected = expected.sum(axis=tuple(i for i, n in enumerate(a.shape) if n == 1), keepdims=True)
        np.testing.assert_allclose(ta.grad.numpy(), expected.reshape(a.shape), rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), n=st.integers(1, 4),
       k=st.integers(1, 4), m=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_batched_matmul_broadcasts_like_numpy(batch, n, k, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(batch + (n, k)), rng.standard_normal((k, m))
    ta, tb = lw.tensor(a, requires_grad=True), lw.tensor(b, requires_grad=True)
    out = ta @ tb
    np.testing.assert_allclose(out.detach().numpy(), a @ b, rtol=1e-10, atol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(tb.grad.numpy(), (np.swapaxes(a, -1, -2) @ np.ones(a.shape[:-1] + (m,))).reshape(-1, k, m).sum(0), rtol=1e-10)
