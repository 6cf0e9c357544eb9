"""Sequential runs a Linear followed by a ReLU as one node (container.py, LinearFunction), and a
single row with no graph as one compiled loop (kernels.linear_one_row). These tests hold the
node to the bits of the two layers called in the written order, the loop to float64 NumPy, and
both to leaving alone any module that somebody watches or replaces."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise import nn
from layerwise.autograd.gradcheck import gradcheck
from layerwise.ops import activation, kernels

needs_numba = pytest.mark.skipif(kernels.kernel("linear_one_row") is None,
                                 reason="numba is not installed")


def _count_relu_nodes(monkeypatch):
    """A list that grows by one each time the separate ReLU op runs."""
    calls, real = [], activation.ReLU.forward

    def counted(self, x):
        calls.append(x.shape)
        return real(self, x)
    monkeypatch.setattr(activation.ReLU, "forward", counted)
    return calls


def _mlp(dtype, out_last=3):
    lw.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 9, dtype=dtype), nn.ReLU(), nn.Linear(9, 5, dtype=dtype),
                         nn.ReLU(), nn.Linear(5, out_last, dtype=dtype))


def _written_order(model):
    """The same layers, each one called on its own through the functional forms."""
    def forward(x):
        for layer in model:
            x = F.relu(x) if isinstance(layer, nn.ReLU) else F.linear(x, layer.weight, layer.bias)
        return x
    return forward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 4, 700])  # 700: the ReLU mask by its compiled kernel
def test_linear_then_relu_gives_the_bits_of_the_written_order(monkeypatch, dtype, batch):
    model = _mlp(dtype)
    rng = np.random.default_rng(batch)
    x_data = rng.standard_normal((batch, 6)).astype(dtype)
    x_data[0, :3] = 0  # products of exactly 0 at the first layer: no gradient through them
    upstream = rng.standard_normal((batch, 3)).astype(dtype)
    relu_nodes = _count_relu_nodes(monkeypatch)

    results = []
    for forward in (model, _written_order(model)):
        relu_nodes.clear()
        model.zero_grad()
        x = lw.tensor(x_data, requires_grad=True)
        out = forward(x)
        (out * lw.tensor(upstream)).sum().backward()
        results.append([out.detach().numpy(), x.grad.numpy()]
                       + [p.grad.numpy() for p in model.parameters()])
        assert len(relu_nodes) == (0 if forward is model else 2)  # fused, or written
    for ours, written in zip(*results):
        np.testing.assert_array_equal(ours, written)


def test_linear_then_relu_gradients_match_finite_differences():
    model = _mlp(np.float64)
    weight, bias = model[0].weight, model[0].bias
    x = lw.tensor(np.random.default_rng(3).standard_normal((5, 6)), requires_grad=True)
    assert gradcheck(lambda a, w, b: F.linear_maybe_relu(a, w, b, relu=True), [x, weight, bias])
    assert gradcheck(lambda a, w: F.linear_maybe_relu(a, w, None, relu=True), [x, weight])


class _Watched(nn.Linear):
    pass


@pytest.mark.parametrize("watch", ["hook on the ReLU", "hook on the Linear", "subclass",
                                   "forward replaced"])
def test_a_watched_or_replaced_module_is_called_as_written(monkeypatch, watch):
    model = _mlp(np.float32)
    seen = []
    if watch == "hook on the ReLU":
        model[1].register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    elif watch == "hook on the Linear":
        model[0].register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    elif watch == "subclass":
        model[0] = _Watched(6, 9)
    else:
        linear = model[0]
        linear.forward = lambda x: seen.append(x) or nn.Linear.forward(linear, x)
    relu_nodes = _count_relu_nodes(monkeypatch)
    x = lw.tensor(np.random.default_rng(4).standard_normal((2, 6)).astype(np.float32))
    out = model(x).detach().numpy()
    assert len(relu_nodes) == 2 - 1  # the watched pair as written; the other one fused
    if watch.startswith("hook"):
        assert (seen[0].numpy() < 0).any()  # the Linear's output before the ReLU
    np.testing.assert_array_equal(out, _written_order(model)(x).detach().numpy())


def _float64_linear(x, weight, bias, relu):
    out = x.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        out = out + bias
    return np.maximum(out, 0) if relu else out


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_out", [1, 3, 4, 13, 64])  # rows in fours, and the rest
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_one_row_with_no_graph_is_one_loop_matching_float64(monkeypatch, dtype, n_out, relu,
                                                            with_bias):
    rng = np.random.default_rng(n_out)
    weight = rng.standard_normal((n_out, 37)).astype(dtype)
    bias = rng.standard_normal(n_out).astype(dtype) if with_bias else None
    x = rng.standard_normal((1, 37)).astype(dtype)
    used, real = [], kernels.kernel
    monkeypatch.setattr(F, "kernel", lambda name: used.append(name) or real(name))
    with lw.no_grad():
        out = F.linear_maybe_relu(lw.tensor(x), lw.tensor(weight),
                                  None if bias is None else lw.tensor(bias), relu=relu).numpy()
    assert used == ["linear_one_row"]
    assert out.dtype == dtype and out.shape == (1, n_out)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, _float64_linear(x, weight, bias, relu), rtol=tol, atol=tol)


@needs_numba
@pytest.mark.parametrize("case", ["1-D input", "(1, 1, in) input", "strided row",
                                  "requires grad", "float16", "transposed weight"])
def test_one_row_loop_only_where_it_applies_and_the_same_values_everywhere(monkeypatch, case):
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((7, 10))
    x = rng.standard_normal((1, 10))
    grad = case == "requires grad"
    if case == "1-D input":
        x = x[0]
    elif case == "(1, 1, in) input":
        x = x[None]
    elif case == "strided row":
        x = rng.standard_normal((1, 20))[:, ::2]  # (lw.tensor would copy it contiguous)
    elif case == "float16":
        weight, x = weight.astype(np.float16), x.astype(np.float16)
    elif case == "transposed weight":
        weight = np.ascontiguousarray(weight.T).T
    used, real = [], kernels.kernel
    monkeypatch.setattr(F, "kernel", lambda name: used.append(name) or real(name))
    with lw.no_grad() if not grad else lw.enable_grad():
        out = F.linear(lw.Tensor(x, requires_grad=grad), lw.Tensor(weight)).detach().numpy()
    takes_loop = case in ("1-D input", "(1, 1, in) input")
    assert ("linear_one_row" in used) == takes_loop
    assert out.shape == x.shape[:-1] + (7,) and out.dtype == x.dtype
    tol = 2e-2 if case == "float16" else 1e-12
    expected = _float64_linear(x.reshape(1, -1), weight, None, False).reshape(out.shape)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("batch", [1, 3])  # 1: the compiled loop where numba is present
def test_relu_after_a_linear_keeps_nan_and_zeroes_minus_infinity(batch):
    """The ReLU's IEEE edges in every form it takes: separate op, fused node, one-row loop."""
    weight = np.array([[1.0, 0.0], [-np.inf, 0.0], [np.nan, 0.0], [np.inf, 1.0], [-1.0, 0.0]])
    x = np.tile([[2.0, 1.0]], (batch, 1))
    expected = np.tile([2.0, 0.0, np.nan, np.inf, 0.0], (batch, 1))
    for grad in (False, True):
        with lw.enable_grad() if grad else lw.no_grad():
            fused = F.linear_maybe_relu(lw.tensor(x, requires_grad=grad), lw.tensor(weight),
                                        None, relu=True)
            separate = F.relu(F.linear(lw.tensor(x, requires_grad=grad), lw.tensor(weight)))
        np.testing.assert_array_equal(fused.detach().numpy(), expected)
        np.testing.assert_array_equal(separate.detach().numpy(), expected)


def test_relu_of_minus_infinity_is_zero_on_every_path(monkeypatch):
    x = np.array([-np.inf, -1.0, np.nan, 2.0, np.inf])
    for large in (False, True):  # below and above the compiled kernels' minimum size
        data = np.tile(x, 1000) if large else x
        for with_kernels in (True, False):
            if not with_kernels:
                monkeypatch.setattr(activation, "kernel", lambda name: None)
            t = lw.tensor(data, requires_grad=True)
            out = lw.relu(t).detach().numpy()
            np.testing.assert_array_equal(out, np.where(data > 0, data, np.where(
                np.isnan(data), np.nan, 0.0)))
            monkeypatch.undo()
