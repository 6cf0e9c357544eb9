"""Sequential runs a ReLU followed by a max pool as the pool, then the ReLU (container.py says
why). These tests hold it to giving exactly what the written order gives: the same values
and the same gradients, bit for bit, and the same view for anyone who watches a module."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise import nn


def _image(shape, seed):
    """Values with windows of every kind: all negative, ties at the maximum, zeros of both
    signs, and positive maxima."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(np.float32)  # small integers: many ties
    x[..., :2, :2] = -rng.random((2, 2), dtype=np.float32) - 1  # an all-negative window
    x.reshape(-1)[::7] = -0.0
    return x


def _in_written_order(pool):
    """The same layers, each called in the order written (through the functional forms)."""
    def forward(x):
        return F.max_pool2d(F.relu(x), pool.kernel_size, pool.stride, pool.padding,
                            pool.dilation, ceil_mode=pool.ceil_mode)
    return forward


POOLS = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 2, "ceil_mode": True},
    {"kernel_size": 2, "stride": 1, "dilation": 2},
]


@pytest.mark.parametrize("batch", [1, 2, 16])  # 16: the compiled, batch-last kernels
@pytest.mark.parametrize("pool_args", POOLS)
def test_relu_then_pool_matches_the_written_order_exactly(batch, pool_args):
    lw.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    pool = nn.MaxPool2d(**pool_args)
    model = nn.Sequential(conv, nn.ReLU(), pool)
    x_data = _image((batch, 2, 7, 7), seed=batch)
    upstream = np.random.default_rng(1).standard_normal(
        model(lw.tensor(x_data)).shape).astype(np.float32)

    results = []
    for forward in (model, lambda x: _in_written_order(pool)(conv(x))):
        x = lw.tensor(x_data, requires_grad=True)
        conv.zero_grad()
        out = forward(x)
        (out * lw.tensor(upstream)).sum().backward()
        results.append((out.detach().numpy(), x.grad.numpy(), conv.weight.grad.numpy(),
                        conv.bias.grad.numpy()))
    for ours, written in zip(*results):
        np.testing.assert_array_equal(ours, written)


def test_values_and_gradients_against_numpy():
    """An independent reference: max of max(x, 0) over 2x2 windows, and its gradient
    routed to the first position of each window's maximum where that maximum is positive."""
    x_data = _image((2, 1, 4, 6), seed=3)
    x = lw.tensor(x_data, requires_grad=True)
    out = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))(x)
    out.sum().backward()
    windows = x_data.reshape(2, 1, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 1, 2, 3, 4)
    np.testing.assert_array_equal(out.detach().numpy(), np.maximum(windows, 0).max(axis=-1))
    expected = np.zeros_like(windows)
    first = windows.argmax(axis=-1)[..., None]
    np.put_along_axis(expected, first, np.take_along_axis(windows, first, -1) > 0, axis=-1)
    expected = expected.reshape(2, 1, 2, 3, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x_data.shape)
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_nan_comes_out_where_the_written_order_puts_it():
    x_data = _image((16, 1, 4, 4), seed=4)
    x_data[0, 0, 0, 1] = x_data[3, 0, 2, 2] = np.nan
    grads, outs = [], []
    for forward in (nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)), _in_written_order(nn.MaxPool2d(2))):
        x = lw.tensor(x_data, requires_grad=True)
        out = forward(x)
        out.sum().backward()
        outs.append(out.detach().numpy())
        grads.append(x.grad.numpy())
    assert np.isnan(outs[0]).sum() == 2
    np.testing.assert_array_equal(outs[0], outs[1])  # NaN where NaN
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("batch", [1, 16])  # 16: the compiled pool, its ReLU in the same pass
def test_the_pool_runs_first_with_the_relu_in_its_node(monkeypatch, batch):
    from layerwise.ops import activation

    relu_ops = []
    real = activation.ReLU.forward
    monkeypatch.setattr(activation.ReLU, "forward",
                        lambda self, x: relu_ops.append(x.shape) or real(self, x))
    x = lw.randn(batch, 1, 4, 4, requires_grad=True)
    out = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))(x)
    assert type(out.grad_fn).__name__ == "MaxPool2d" and relu_ops == []  # one node
    with lw.no_grad():
        nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))(x)
    assert relu_ops == []


def test_a_hooked_or_replaced_module_keeps_the_written_order():
    seen = []
    relu, pool = nn.ReLU(), nn.MaxPool2d(2)
    relu.register_forward_hook(lambda m, args, out: seen.append(("relu", tuple(out.shape))))
    pool.register_forward_hook(lambda m, args, out: seen.append(("pool", tuple(args[0].shape))))
    nn.Sequential(relu, pool)(lw.randn(1, 1, 4, 4))
    assert seen == [("relu", (1, 1, 4, 4)), ("pool", (1, 1, 4, 4))]

    class CountingReLU(nn.ReLU):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return super().forward(x)

    seen.clear()
    nn.Sequential(CountingReLU(), nn.MaxPool2d(2))(lw.randn(1, 1, 4, 4))
    assert seen == [(1, 1, 4, 4)]

    replaced = nn.ReLU()
    replaced.forward = lambda x: seen.append("replaced") or F.relu(x)
    seen.clear()
    out = nn.Sequential(replaced, nn.MaxPool2d(2))(lw.randn(1, 1, 4, 4, requires_grad=True))
    assert seen == ["replaced"] and type(out.grad_fn).__name__ != "ReLU"


def test_other_neighbours_keep_their_order_and_results():
    x_data = _image((2, 1, 4, 4), seed=5)
    x = lw.tensor(x_data)
    relu_x = np.maximum(x_data, 0)
    np.testing.assert_array_equal(nn.Sequential(nn.ReLU())(x).numpy(), relu_x)  # ReLU last
    np.testing.assert_array_equal(nn.Sequential(nn.ReLU(), nn.ReLU())(x).numpy(), relu_x)
    two = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.MaxPool2d(2), nn.MaxPool2d(2))(x).numpy()
    np.testing.assert_array_equal(two, relu_x.max(axis=(2, 3), keepdims=True))
    then_flat = nn.Sequential(nn.ReLU(), nn.Flatten())(x).numpy()
    np.testing.assert_array_equal(then_flat, relu_x.reshape(2, -1))
    values, indices = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True))(x)
    expected_values, expected_indices = F.max_pool2d(F.relu(x), 2, return_indices=True)
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())


@pytest.mark.parametrize("batch", [1, 3, 16])  # the batch-1 kernel, NumPy slices, batch-last kernel
@pytest.mark.parametrize("pool_args", POOLS)
def test_with_no_graph_the_one_node_gives_the_written_order_with_nan_and_infinity(batch,
                                                                                  pool_args):
    x_data = _image((batch, 2, 7, 7), seed=10 + batch)
    x_data[0, 0, 3, 3], x_data[-1, 1, 5, 0] = np.nan, -np.inf
    x_data[0, 1, :3, :3] = -np.inf  # a window of -inf only: the ReLU makes it 0
    pool = nn.MaxPool2d(**pool_args)
    with lw.no_grad():
        ours = nn.Sequential(nn.ReLU(), pool)(lw.tensor(x_data)).numpy()
        written = _in_written_order(pool)(lw.tensor(x_data)).numpy()
    assert np.isnan(ours).any() and not np.isinf(ours).any()
    np.testing.assert_array_equal(ours, written)
