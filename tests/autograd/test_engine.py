"""The backward engine: accumulation, graph freeing, grad modes, deep graphs, errors."""

import numpy as np
import pytest

import layerwise as lw


def test_deep_chain_does_not_hit_recursion_limit():
    x = lw.tensor(1.0, dtype=lw.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**10_000, rel=1e-9)


def test_gradients_accumulate_across_backward_calls_and_shared_uses():
    x = lw.tensor([1.0, 2.0], dtype=lw.float64, requires_grad=True)
    (x * x + x).sum().backward()  # x used twice in one graph: d/dx = 2x + 1
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 5.0])
    (3 * x).sum().backward()  # a second backward adds
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 8.0])


def test_backward_with_gradient_argument():
    x = lw.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lw.float64, requires_grad=True)
    (x * 2).backward(lw.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=lw.float64))
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 0.0], [1.0, 4.0]])


def test_non_scalar_backward_without_gradient_is_a_clear_error():
    x = lw.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar output, got shape \(2, 3\)"):
        (x * 2).backward()


def test_graph_is_freed_after_backward_unless_retained():
    x = lw.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()  # allowed once more: the graph was retained
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]), rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_saved_arrays_are_released_after_backward():
    x = lw.randn(3, requires_grad=True)
    y = x.exp()
    ctx = y.grad_fn
    assert hasattr(ctx, "out")
    y.sum().backward()
    assert not hasattr(ctx, "out") and ctx.parents is None


def test_no_grad_records_nothing_and_restores_mode():
    x = lw.ones(2, requires_grad=True)
    with lw.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert lw.is_grad_enabled()

    @lw.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    assert (x * 3).requires_grad


def test_detach_cuts_the_graph():
    x = lw.tensor([2.0], requires_grad=True)
    y = x * x.detach()  # only the first factor carries gradient
    y.backward(lw.ones(1))
    assert x.grad.item() == 2.0


def test_non_leaf_grad_only_when_retained():
    x = lw.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 3).retain_grad()
    m = x * 4
    (h * m).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), m.detach().numpy())
    assert m.grad is None


def test_requires_grad_on_integer_tensor_is_refused():
    with pytest.raises(RuntimeError, match="floating-point"):
        lw.tensor([1, 2]).requires_grad_()


def test_backward_on_tensor_without_grad_explains():
    with pytest.raises(RuntimeError, match="does not require grad"):
        lw.ones(2).sum().backward()


def test_grad_is_a_tensor_of_the_leaf_dtype():
    x = lw.ones(3, dtype=lw.float32, requires_grad=True)
    (x * lw.tensor(2.0, dtype=lw.float64)).sum().backward()
    assert isinstance(x.grad, lw.Tensor) and x.grad.dtype == lw.float32


def test_anomaly_mode_names_the_op_in_forward_and_backward():
    x = lw.tensor([-1.0, 1.0], requires_grad=True)
    with lw.autograd.detect_anomaly(), pytest.raises(FloatingPointError, match="forward of Log"):
        with np.errstate(invalid="ignore"):
            x.log()
    z = lw.tensor([0.0, 1.0], requires_grad=True)
    with lw.autograd.detect_anomaly(), pytest.raises(FloatingPointError, match="backward of Sqrt"):
        with np.errstate(divide="ignore"):
            z.sqrt().sum().backward()


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(lw.autograd.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return g * self.x  # should be 2x

    x = lw.tensor([0.5, -1.5], dtype=lw.float64, requires_grad=True)
    with pytest.raises(AssertionError, match="differs from finite differences"):
        lw.autograd.gradcheck(WrongSquare.apply, [x])
    with pytest.raises(TypeError, match="float64"):
        lw.autograd.gradcheck(lambda t: t * 2, [lw.ones(2, requires_grad=True)])


def test_leaf_grads_own_their_memory():
    # Add hands the same upstream array to both inputs, and sum's backward is a read-only
    # broadcast view: .grad must still be safe to modify in place.
    a = lw.ones(3, requires_grad=True)
    b = lw.ones(3, requires_grad=True)
    (a + b).sum().backward()
    assert a.grad.data.flags.writeable and b.grad.data.flags.writeable
    a.grad.data *= 10
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0, 1.0])
    assert not np.shares_memory(a.grad.data, b.grad.data)


def test_graph_does_not_keep_intermediate_results_no_backward_needs():
    """An op's output that no backward saved is freed once the caller drops it, though the
    graph through it is still recorded (PyTorch frees it too); backward is still right."""
    import gc
    import weakref

    x = lw.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = x + 1  # Add saves only shapes
    z = -y  # Neg saves nothing
    freed = weakref.ref(y.data), weakref.ref(z.data)
    loss = (z.exp()).sum()  # exp saves its output, not z
    del y, z
    gc.collect()
    assert [r() is None for r in freed] == [True, True]
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), -np.exp(-(x.detach().numpy() + 1)), rtol=1e-12)


def test_retain_grad_and_shared_inputs_still_work_through_graph_refs():
    x = lw.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 2
    y.retain_grad()
    (y * y + y).sum().backward()  # y feeds three uses: their gradients must meet
    expected = 2 * y.detach().numpy() + 1
    np.testing.assert_allclose(y.grad.numpy(), expected)
    np.testing.assert_allclose(x.grad.numpy(), 2 * expected)
