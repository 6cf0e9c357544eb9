"""nn.ConvTranspose2d: PyTorch's parameter layout and initialisation, outputs and gradients
against PyTorch through fixtures made by scripts/torch_reference/conv_transpose.py (state dicts
load unchanged), forward's output_size, and the errors a user can cause."""

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import layerwise as lw
from layerwise import nn

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


def load_fixture(name):
    return load_file(str(FIXTURES / f"conv_transpose2d_{name}.safetensors"))


def ints(array):
    return tuple(int(v) for v in array)


def _defaults(fn):
    return [(name, p.default) for name, p in inspect.signature(fn).parameters.items()]


def test_signatures_are_pytorchs():
    """Names, order and defaults as in PyTorch 2.x's documentation (copied, not read here)."""
    empty = inspect.Parameter.empty
    assert _defaults(nn.ConvTranspose2d)[:10] == [
        ("in_channels", empty), ("out_channels", empty), ("kernel_size", empty), ("stride", 1),
        ("padding", 0), ("output_padding", 0), ("groups", 1), ("bias", True), ("dilation", 1),
        ("padding_mode", "zeros")]
    assert _defaults(nn.ConvTranspose2d.forward) == [("self", empty), ("x", empty),
                                                     ("output_size", None)]
    assert _defaults(nn.functional.conv_transpose2d) == [
        ("input", empty), ("weight", empty), ("bias", None), ("stride", 1), ("padding", 0),
        ("output_padding", 0), ("groups", 1), ("dilation", 1)]


def test_parameters_follow_pytorch_layout_and_init():
    lw.manual_seed(0)
    conv = nn.ConvTranspose2d(16, 24, kernel_size=3, groups=2)
    assert conv.weight.shape == (16, 12, 3, 3) and conv.bias.shape == (24,)
    assert list(conv.state_dict()) == ["weight", "bias"]
    # PyTorch's fan_in is weight.size(1) * kH * kW: out_channels // groups here, not in // groups
    bound = 1 / math.sqrt(12 * 3 * 3)
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    assert 0.97 * bound < np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound  # uniform's std, 1728 draws
    assert nn.ConvTranspose2d(3, 4, 3, bias=False).bias is None


def test_pytorch_initial_weights_fill_the_same_range():
    """PyTorch's own freshly built layer (16 -> 24, groups 2): its weights reach, but never
    pass, 1/sqrt(12 * 9); the bound 1/sqrt(8 * 9) of the other fan would leave 18% unused."""
    f = load_fixture("init")
    assert f["weight"].shape == (16, 12, 3, 3)
    bound = 1 / math.sqrt(12 * 3 * 3)
    assert 0.97 * bound < np.abs(f["weight"]).max() <= bound
    assert np.abs(f["bias"]).max() <= bound


@pytest.mark.parametrize("name", ["groups", "unet", "output_size"])
def test_matches_torch(name):
    f = load_fixture(name)
    cin, cout = ints(f["config/channels"])
    conv = nn.ConvTranspose2d(cin, cout, ints(f["config/kernel_size"]),
                              stride=ints(f["config/stride"]), padding=ints(f["config/padding"]),
                              output_padding=ints(f["config/output_padding"]),
                              groups=int(f["config/groups"]), bias=bool(f["config/bias"]),
                              dilation=ints(f["config/dilation"]))
    conv.load_state_dict({k: v for k, v in f.items() if "/" not in k})
    output_size = ints(f["config/output_size"]) if "config/output_size" in f else None
    x = lw.tensor(f["input/x"], requires_grad=True)
    out = conv(x, output_size=output_size)
    (out * lw.tensor(f["probe/out"])).sum().backward()
    assert out.shape == f["output/out"].shape
    np.testing.assert_allclose(out.detach().numpy(), f["output/out"], atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), f["grad/x"], atol=1e-5)
    for pname, p in conv.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), f[f"grad/{pname}"], atol=1e-5, err_msg=pname)


def test_output_size_picks_among_the_sizes_a_stride_allows():
    conv = nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1)
    x = lw.randn(1, 2, 4, 5)  # smallest output (4-1)*3 - 2 + 3 = 10 by 13, largest 12 by 15
    assert conv(x).shape == (1, 3, 10, 13)
    assert conv(x, output_size=(12, 13)).shape == (1, 3, 12, 13)
    assert conv(x, output_size=[1, 3, 11, 15]).shape == (1, 3, 11, 15)  # the full shape
    assert conv(lw.randn(2, 4, 5), output_size=(3, 11, 14)).shape == (3, 11, 14)  # unbatched
    # the layer's output_padding gives way to output_size, as in PyTorch
    padded = nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1, output_padding=2)
    padded.load_state_dict(conv.state_dict())
    with lw.no_grad():
        np.testing.assert_array_equal(padded(x, output_size=(12, 14)).numpy(),
                                      conv(x, output_size=(12, 14)).numpy())
    with pytest.raises(ValueError, match=r"output size of \(13, 13\), but valid sizes range "
                                         r"from \(10, 13\) to \(12, 15\)"):
        conv(x, output_size=(13, 13))
    with pytest.raises(ValueError, match=r"output_size must be \(H, W\)"):
        conv(x, output_size=(12,))


def test_unet_decoder_step_doubles_the_size_and_repr_names_the_options():
    conv = nn.ConvTranspose2d(64, 32, kernel_size=2, stride=2)
    assert conv(lw.randn(2, 64, 6, 6)).shape == (2, 32, 12, 12)
    assert repr(conv) == "ConvTranspose2d(64, 32, kernel_size=(2, 2), stride=(2, 2))"
    text = repr(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                   bias=False))
    assert "output_padding=(1, 1)" in text and "groups=2" in text and "bias=False" in text


def test_errors_quote_the_values():
    conv = nn.ConvTranspose2d(3, 4, 3)
    message = r"expected input with 3 channels, got shape \(2, 4, 8, 8\)"
    with pytest.raises(ValueError, match=message):
        conv(lw.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="4-D input"):
        conv(lw.randn(8, 8))
    with pytest.raises(TypeError, match="float64"):
        conv(lw.randn(1, 3, 8, 8, dtype=lw.float64))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.ConvTranspose2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="output_padding must be smaller than either stride"):
        nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2)(lw.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="output_padding must be non-negative"):
        nn.ConvTranspose2d(3, 4, 3, output_padding=-1)
    with pytest.raises(ValueError, match="padding must be an int or a tuple of 2 ints, got 'same'"):
        nn.ConvTranspose2d(3, 4, 3, padding="same")
    with pytest.raises(NotImplementedError, match="padding_mode='zeros'"):
        nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect")
