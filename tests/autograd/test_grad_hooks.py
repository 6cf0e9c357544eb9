"""The two hook points of backward: a leaf's post-accumulate-grad hooks and queue_callback."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn
from layerwise.autograd import queue_callback
from layerwise.nn import functional as F


def test_a_hook_sees_the_accumulated_gradient_once_per_backward():
    w = lw.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    (w * w).sum().backward()  # w used twice by one op: one accumulation of 2w
    (3 * w).sum().backward()  # added to the first
    assert [s.tolist() for s in seen] == [[2.0, 4.0], [5.0, 7.0]]


def test_hooks_run_from_the_output_layer_down():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    order, first_weight_pending = [], []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: order.append(name))
    model[4].weight.register_post_accumulate_grad_hook(
        lambda t: first_weight_pending.append(model[0].weight.grad is None))
    F.cross_entropy(model(lw.randn(5, 3)), lw.tensor([0, 1, 0, 1, 1])).backward()
    # each as soon as its gradient is complete: the last layer's before backward reaches the
    # first layer, so that data-parallel training can send it while backward goes on
    assert order == ["4.weight", "4.bias", "2.weight", "2.bias", "0.weight", "0.bias"]
    assert first_weight_pending == [True]


def test_a_tied_weight_gets_its_hook_after_its_last_use():
    w = lw.tensor([[1.0, 0.5], [0.0, 2.0]], requires_grad=True)
    x = lw.tensor([[1.0, -1.0]])
    grads = []
    w.register_post_accumulate_grad_hook(lambda t: grads.append(t.grad.data.copy()))
    ((x @ w) @ w).sum().backward()
    x_np, w_np = x.data, w.data
    ones = np.ones((1, 2))
    expected = (x_np @ w_np).T @ ones + x_np.T @ (ones @ w_np.T)  # the two uses' sum
    assert len(grads) == 1 and np.allclose(grads[0], expected)


def test_gradients_are_the_same_with_hooks():
    def grads(hooked):
        lw.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        if hooked:
            for p in model.parameters():
                p.register_post_accumulate_grad_hook(lambda t: None)
        F.mse_loss(model(lw.randn(6, 3)), lw.randn(6, 2)).backward()
        return [p.grad.data for p in model.parameters()]

    for plain, hooked in zip(grads(False), grads(True)):
        assert (plain == hooked).all()


def test_queue_callback_runs_once_backward_has_finished():
    a = lw.tensor([1.0], requires_grad=True)
    b = lw.tensor([2.0], requires_grad=True)
    events = []

    def hook(t):
        events.append("hook")
        if events.count("hook") == 1:
            queue_callback(lambda: events.append(("end", a.grad is not None, b.grad is not None)))

    a.register_post_accumulate_grad_hook(hook)
    b.register_post_accumulate_grad_hook(hook)
    (a * b).sum().backward()
    assert events == ["hook", "hook", ("end", True, True)]


def test_handles_remove_hooks_and_misuse_is_refused():
    w = lw.tensor([1.0], requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    handle.remove()
    (w * 2).sum().backward()
    assert calls == []
    with pytest.raises(RuntimeError, match="no backward pass is under way"):
        queue_callback(lambda: None)
    with pytest.raises(RuntimeError, match="needs a leaf tensor that requires grad"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="hook must be callable, got int"):
        w.register_post_accumulate_grad_hook(3)


def test_backward_in_halves_runs_hooks_once_and_callbacks_at_its_end():
    lw.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = lw.randn(6, 3), lw.randn(6, 2)
    events = []

    def hook(t):
        events.append("hook")
        if events == ["hook"]:
            queue_callback(lambda: events.append("end"))

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(hook)
    lw.parallel.backward_in_halves(model, lambda a, b: F.mse_loss(model(a), b), x, y)
    assert events == ["hook", "hook", "end"]  # each parameter once, with both halves' sum


def test_a_compiled_step_runs_hooks_and_callbacks_on_replay():
    lw.manual_seed(0)
    model = nn.Linear(3, 2)
    x = lw.randn(4, 3)
    hooks, ends = [], []

    def hook(t):
        hooks.append(1)
        queue_callback(lambda: ends.append(1))

    model.weight.register_post_accumulate_grad_hook(hook)

    @lw.compile
    def step(inputs):
        model(inputs).sum().backward()

    for _ in range(3):  # recorded once, then replayed
        step(x)
    assert len(ends) == len(hooks) >= 3  # one end of backward for each backward replayed
