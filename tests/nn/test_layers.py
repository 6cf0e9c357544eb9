"""Linear, activation layers, Flatten, Identity and the containers."""

import math
from collections import OrderedDict

import numpy as np
import pytest
from scipy.special import erf

import layerwise as lw
import layerwise.nn as nn
import layerwise.nn.functional as F
from layerwise.autograd import gradcheck


def t64(array, requires_grad=False):
    return lw.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


@pytest.mark.parametrize("shape", [(5, 3), (3,), (2, 4, 3), (2, 1, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_matches_numpy(shape, bias):
    layer = nn.Linear(3, 4, bias=bias, dtype=lw.float64)
    x = np.random.default_rng(0).standard_normal(shape)
    expected = x @ layer.weight.data.T + (layer.bias.data if bias else 0)
    out = layer(t64(x))
    assert out.shape == shape[:-1] + (4,)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 3), (3,)])
def test_linear_gradients_match_finite_differences(shape):
    rng = np.random.default_rng(1)
    x = t64(rng.standard_normal(shape), requires_grad=True)
    w = t64(rng.standard_normal((2, 3)), requires_grad=True)
    b = t64(rng.standard_normal(2), requires_grad=True)
    assert gradcheck(F.linear, [x, w, b])
    assert gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_linear_gradient_through_module_matches_composed_ops():
    layer = nn.Linear(3, 2, dtype=lw.float64)
    x = t64(np.random.default_rng(2).standard_normal((2, 5, 3)), requires_grad=True)
    layer(x).pow(2).sum().backward()
    fused = [x.grad.data, layer.weight.grad.data, layer.bias.grad.data]
    w, b = (t64(layer.weight.data, True), t64(layer.bias.data, True))
    x2 = t64(x.data, True)
    ((x2 @ w.T + b) ** 2).sum().backward()
    for got, want in zip(fused, [x2.grad.data, w.grad.data, b.grad.data], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_linear_bad_input_shape_and_dtype():
    layer = nn.Linear(784, 10)
    with pytest.raises(ValueError) as info:
        layer(lw.zeros(2, 28, 28))
    assert str(info.value) == ("Linear expected last dim 784 (weight of shape (10, 784), "
                               "(out_features, in_features)), got input of shape (2, 28, 28)")
    with pytest.raises(TypeError, match="dtype int64"):
        layer(lw.zeros(2, 784, dtype=lw.int64))


def test_linear_init_bounds_and_seed():
    lw.manual_seed(3)
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = layer.weight.data, layer.bias.data
    assert w.shape == (300, 400) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-a, a) has std a / sqrt(3); 120,000 draws pin it to well under 1%.
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(w.mean()) < 0.01 * bound
    lw.manual_seed(3)
    again = nn.Linear(400, 300)
    np.testing.assert_array_equal(again.weight.data, w)
    np.testing.assert_array_equal(again.bias.data, b)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.GELU(), lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))),
    (nn.GELU(approximate="tanh"), _gelu_tanh),
    (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Softplus(), lambda x: np.log1p(np.exp(x))),
    (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (nn.LogSoftmax(dim=-1), lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
    (nn.Identity(), lambda x: x),
]


@pytest.mark.parametrize(
    "module, reference", ACTIVATIONS, ids=lambda v: repr(v) if isinstance(v, nn.Module) else ""
)
def test_activation_modules_forward_and_backward(module, reference):
    x = np.random.default_rng(4).standard_normal((3, 4)) * 2
    np.testing.assert_allclose(module(t64(x)).data, reference(x), rtol=1e-10, atol=1e-12)
    if not isinstance(module, nn.Identity):
        assert gradcheck(module, [t64(x, requires_grad=True)])


def test_activation_reprs():
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"


@pytest.mark.parametrize("start, end, shape", [(1, -1, (2, 12)), (0, 1, (6, 4)), (1, 2, (2, 12))])
def test_flatten(start, end, shape):
    x = lw.arange(24).reshape(2, 3, 4)
    out = nn.Flatten(start, end)(x)
    np.testing.assert_array_equal(out.numpy(), np.arange(24).reshape(shape))


def test_sequential_indexing_slicing_and_append():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    seq.append(c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    x = lw.randn(4, 2)
    np.testing.assert_allclose(seq(x).data, c(b(a(x))).data)
    named = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert named.fc is a and [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    with pytest.raises(TypeError, match="nn.ReLU"):
        nn.Sequential(lw.relu)


def test_module_list_and_dict():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.Linear(2, 1))
    assert len(layers) == 4 and [n for n, _ in layers.named_children()] == ["0", "1", "2", "3"]
    del layers[0]
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    heads = nn.ModuleDict({"cls": nn.Linear(2, 3)})
    heads["reg"] = nn.Linear(2, 1)
    assert list(heads) == ["cls", "reg"] and "reg" in heads
    assert [n for n, _ in heads.named_parameters()] == [
        "cls.weight",
        "cls.bias",
        "reg.weight",
        "reg.bias",
    ]
    with pytest.raises(KeyError, match="cls, reg|'cls', 'reg'"):
        heads["nope"]
