"""Vision layers: Conv2d / Conv1d, BatchNorm1d / 2d, pooling and Upsample modules.

Behaviour against NumPy and hand-derived values, and against PyTorch through fixtures made by
scripts/torch_reference/vision.py (state dicts load unchanged; outputs and gradients match).
"""

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import layerwise as lw
from layerwise.nn.batchnorm import BatchNorm1d, BatchNorm2d, batch_norm
from layerwise.nn.conv import Conv1d, Conv2d
from layerwise.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from layerwise.nn.upsample import Upsample, UpsamplingBilinear2d
from layerwise.ops.pool import interpolate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


def load_fixture(name):
    return load_file(str(FIXTURES / f"vision_{name}.safetensors"))


def state_of(f, prefix=""):
    """The entries of a fixture that are a module's state (no '/' in the key)."""
    return {k[len(prefix):]: v for k, v in f.items() if "/" not in k and k.startswith(prefix)}


def run_with_probe(module, x, probe):
    """out and d sum(out * probe) / d x."""
    x = lw.tensor(x, requires_grad=True)
    out = module(x)
    (out * lw.tensor(probe)).sum().backward()
    return out.detach().numpy(), x.grad.numpy()


# --- Conv2d / Conv1d --------------------------------------------------------------------------


def test_conv2d_parameters_follow_pytorch_layout_and_init():
    lw.manual_seed(0)
    conv = Conv2d(6, 32, kernel_size=(3, 5), groups=2)
    assert conv.weight.shape == (32, 3, 3, 5) and conv.bias.shape == (32,)
    assert list(conv.state_dict()) == ["weight", "bias"]
    bound = 1 / math.sqrt(3 * 3 * 5)  # kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    w = conv.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(conv.bias.detach().numpy()).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound  # uniform's std, 1440 draws
    assert Conv2d(3, 4, 3, bias=False).bias is None
    assert list(Conv2d(3, 4, 3, bias=False).state_dict()) == ["weight"]


def test_conv1d_module_matches_conv2d_on_height_one():
    lw.manual_seed(1)
    conv1 = Conv1d(4, 6, kernel_size=3, stride=2, padding=1, groups=2)
    assert conv1.weight.shape == (6, 2, 3)
    conv2 = Conv2d(4, 6, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), groups=2)
    conv2.load_state_dict({"weight": conv1.weight.detach().numpy()[:, :, None],
                           "bias": conv1.bias.detach().numpy()})
    x = np.random.default_rng(0).standard_normal((2, 4, 9)).astype(np.float32)
    got = conv1(lw.tensor(x)).detach().numpy()
    want = conv2(lw.tensor(x[:, :, None])).detach().numpy()[:, :, 0]
    assert got.shape == (2, 6, 5)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", ["conv2d_groups", "conv2d_same", "conv2d_stride"])
def test_conv2d_matches_torch(name):
    f = load_fixture(name)
    cin, cout = (int(v) for v in f["config/channels"])
    padding = "same" if "config/same" in f else tuple(int(v) for v in f["config/padding"])
    conv = Conv2d(cin, cout, tuple(int(v) for v in f["config/kernel_size"]),
                  stride=tuple(int(v) for v in f["config/stride"]), padding=padding,
                  dilation=tuple(int(v) for v in f["config/dilation"]),
                  groups=int(f["config/groups"]), bias=bool(f["config/bias"]))
    conv.load_state_dict(state_of(f))
    out, grad_x = run_with_probe(conv, f["input/x"], f["probe/out"])
    np.testing.assert_allclose(out, f["output/out"], atol=1e-5)
    np.testing.assert_allclose(grad_x, f["grad/x"], atol=1e-5)
    for pname, p in conv.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), f[f"grad/{pname}"], atol=1e-5, err_msg=pname)


def test_conv2d_errors_quote_the_shapes():
    conv = Conv2d(3, 4, 3)
    message = r"Conv2d expected input with 3 channels, got shape \(2, 4, 8, 8\)"
    with pytest.raises(ValueError, match=message):
        conv(lw.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="4-D input"):
        conv(lw.randn(8, 8))
    with pytest.raises(TypeError, match="float64"):
        conv(lw.randn(1, 3, 8, 8, dtype=lw.float64))
    with pytest.raises(ValueError, match="divisible by groups"):
        Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="stride 1"):
        Conv2d(4, 6, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(4, 6, (3, 3, 3))


# --- BatchNorm --------------------------------------------------------------------------------


def np_batchnorm_train(x, weight, bias, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return out * weight.reshape(shape) + bias.reshape(shape), mean, x.var(axis=axes, ddof=1)


def test_batchnorm2d_state_dict_keys_and_initial_values():
    bn = BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(3))
    assert bn.num_batches_tracked.dtype == lw.int64 and int(bn.num_batches_tracked.item()) == 0


def test_batchnorm2d_train_and_eval_match_numpy():
    rng = np.random.default_rng(0)
    bn = BatchNorm2d(3, momentum=0.25).double()
    weight, bias = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    bn.load_state_dict({**bn.state_dict(), "weight": weight, "bias": bias})
    running_mean, running_var = np.zeros(3), np.ones(3)
    for step in range(1, 3):
        x = 1 + 2 * rng.standard_normal((4, 3, 5, 2))
        want, mean, unbiased = np_batchnorm_train(x, weight, bias)
        np.testing.assert_allclose(bn(lw.tensor(x)).detach().numpy(), want, atol=1e-12)
        running_mean = 0.75 * running_mean + 0.25 * mean
        running_var = 0.75 * running_var + 0.25 * unbiased  # unbiased for the running average
        np.testing.assert_allclose(bn.running_mean.numpy(), running_mean, atol=1e-12)
        np.testing.assert_allclose(bn.running_var.numpy(), running_var, atol=1e-12)
        assert int(bn.num_batches_tracked.item()) == step
    bn.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    want = (x - running_mean.reshape(1, 3, 1, 1)) / np.sqrt(running_var.reshape(1, 3, 1, 1) + 1e-5)
    want = want * weight.reshape(1, 3, 1, 1) + bias.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(bn(lw.tensor(x)).detach().numpy(), want, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), running_mean)  # eval leaves them alone
    assert int(bn.num_batches_tracked.item()) == 2


def test_batchnorm_momentum_none_is_a_cumulative_average():
    rng = np.random.default_rng(1)
    bn = BatchNorm1d(2, momentum=None).double()
    batches = [rng.standard_normal((5, 2)) + i for i in range(3)]
    for x in batches:
        bn(lw.tensor(x))
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean([b.mean(0) for b in batches], 0),
                               atol=1e-12)


def test_batchnorm_without_running_stats_always_uses_the_batch():
    bn = BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    assert list(bn.state_dict()) == [] and bn.running_mean is None
    x = np.random.default_rng(2).standard_normal((3, 2, 2, 2))
    want, _, _ = np_batchnorm_train(x, np.ones(2), np.zeros(2))
    np.testing.assert_allclose(bn(lw.tensor(x)).numpy(), want, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4), (2, 3, 2, 2)])
def test_batch_norm_gradient_matches_finite_differences(shape, training):
    rng = np.random.default_rng(3)
    c = shape[1]
    running_mean, running_var = lw.tensor(rng.standard_normal(c)), lw.tensor(rng.uniform(0.5, 2, c))
    x = lw.tensor(rng.standard_normal(shape), requires_grad=True)
    w = lw.tensor(rng.uniform(0.5, 1.5, c), requires_grad=True)
    b = lw.tensor(rng.standard_normal(c), requires_grad=True)

    def fn(x, w, b):  # no running-stat updates while differencing
        return batch_norm(x, None if training else running_mean,
                          None if training else running_var, w, b, training=training)

    assert lw.autograd.gradcheck(fn, [x, w, b])


@pytest.mark.parametrize("name,cls", [("batchnorm2d", BatchNorm2d), ("batchnorm1d", BatchNorm1d)])
def test_batchnorm_matches_torch_train_step_then_eval(name, cls):
    f = load_fixture(name)
    bn = cls(f["input/x"].shape[1], momentum=int(f["config/momentum_x1000"]) / 1000)
    bn.load_state_dict(state_of(f))
    out, grad_x = run_with_probe(bn, f["input/x"], f["probe/out"])
    np.testing.assert_allclose(out, f["output/out"], atol=1e-5)
    np.testing.assert_allclose(grad_x, f["grad/x"], atol=1e-5)
    np.testing.assert_allclose(bn.weight.grad.numpy(), f["grad/weight"], atol=1e-4)
    np.testing.assert_allclose(bn.bias.grad.numpy(), f["grad/bias"], atol=1e-4)
    after = state_of({k[len("after/"):]: v for k, v in f.items() if k.startswith("after/")})
    for key, value in bn.state_dict().items():
        np.testing.assert_allclose(value.numpy(), after[key], atol=1e-5, err_msg=key)
    bn.eval()
    out, grad_x = run_with_probe(bn, f["eval/x"], f["eval/probe"])
    np.testing.assert_allclose(out, f["eval/out"], atol=1e-5)
    np.testing.assert_allclose(grad_x, f["eval/grad_x"], atol=1e-5)


def test_batchnorm_errors():
    message = r"BatchNorm2d expected 4-D \(N, C, H, W\) input, got shape \(2, 3\)"
    with pytest.raises(ValueError, match=message):
        BatchNorm2d(3)(lw.randn(2, 3))
    message = r"expected input with 3 channels \(dim 1\), got shape \(2, 4\)"
    with pytest.raises(ValueError, match=message):
        BatchNorm1d(3)(lw.randn(2, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1d(3)(lw.randn(1, 3))
    BatchNorm1d(3).eval()(lw.randn(1, 3))  # fine in eval: the running stats are used


# --- pooling and upsampling ---------------------------------------------------------------------

POOLING = {
    "maxpool_overlap": MaxPool2d(3, stride=2, padding=1),
    "maxpool_ceil_dilated": MaxPool2d(2, stride=2, dilation=2, padding=1, ceil_mode=True),
    "avgpool_pad": AvgPool2d(3, stride=2, padding=1),
    "avgpool_ceil_nopad": AvgPool2d(2, padding=1, ceil_mode=True, count_include_pad=False),
    "adaptive_3x4": AdaptiveAvgPool2d((3, 4)),
    "nearest_x2": Upsample(scale_factor=2, mode="nearest"),
    "nearest_size": lambda x: interpolate(x, size=(5, 10), mode="nearest"),
    "bilinear": Upsample(size=(9, 11), mode="bilinear", align_corners=False),
    "bilinear_corners": Upsample(scale_factor=1.5, mode="bilinear", align_corners=True),
}


@pytest.mark.parametrize("name", list(POOLING))
def test_pooling_and_upsampling_match_torch(name):
    f = load_fixture("pooling")
    out, grad_x = run_with_probe(POOLING[name], f["input/x"], f[f"probe/{name}"])
    np.testing.assert_allclose(out, f[f"output/{name}"], atol=1e-5)
    np.testing.assert_allclose(grad_x, f[f"grad/{name}"], atol=1e-5)


def test_maxpool_return_indices_match_torch():
    f = load_fixture("pooling")
    _, index = MaxPool2d(3, stride=2, padding=1, return_indices=True)(lw.tensor(f["input/x"]))
    np.testing.assert_array_equal(index.numpy(), f["output/maxpool_overlap_indices"])


def test_pool_modules_default_stride_to_kernel():
    x = lw.randn(1, 2, 8, 6)
    assert MaxPool2d(2)(x).shape == (1, 2, 4, 3) and AvgPool2d((2, 3))(x).shape == (1, 2, 4, 2)
    assert AdaptiveAvgPool2d(1)(x).shape == (1, 2, 1, 1)
    assert UpsamplingBilinear2d(scale_factor=2)(x).shape == (1, 2, 16, 12)


def test_upsample_errors():
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        Upsample()
    with pytest.raises(ValueError, match="mode must be one of"):
        Upsample(scale_factor=2, mode="bicubic")
