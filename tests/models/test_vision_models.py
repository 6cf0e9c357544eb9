"""MLP, LeNet, BasicBlock and ResNet: layouts, shapes, gradients, and the small ResNet against
PyTorch (state dict loaded unchanged; train-mode and eval-mode logits and input gradients)."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.models.vision import MLP, BasicBlock, LeNet, ResNet
from layerwise.optim import Adam

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "torch" / "vision_resnet.safetensors"


def test_lenet_layout_and_parameter_count():
    model = LeNet()
    # Hand count: conv1 6*1*5*5+6, conv2 16*6*5*5+16, fc1 400*120+120, fc2 120*84+84, fc3 84*10+10.
    assert model.num_parameters() == 156 + 2416 + 48120 + 10164 + 850
    keys = list(model.state_dict())
    assert keys[:4] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert model(lw.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"28x28 images .* got shape \(2, 1, 32, 32\)"):
        model(lw.randn(2, 1, 32, 32))


def test_lenet_learns_where_a_bright_square_is():
    # Class k = a 7x7 bright square in cell k of a 4x4 grid (10 of the 16 cells), plus noise.
    lw.manual_seed(0)
    rng = np.random.default_rng(0)
    y = np.arange(20) % 10
    x = 0.3 * rng.random((20, 1, 28, 28))
    for i, k in enumerate(y):
        x[i, 0, 7 * (k // 4):7 * (k // 4) + 7, 7 * (k % 4):7 * (k % 4) + 7] += 1.0
    x, y = lw.tensor(x, dtype=lw.float32), lw.tensor(y)
    model = LeNet()
    opt = Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert (model(x).argmax(dim=1).numpy() == y.numpy()).all()


def test_mlp_layout_and_dropout_modes():
    model = MLP(12, hidden=(8, 6), num_classes=3, dropout=0.5)
    assert [k for k in model.state_dict()] == [
        "layers.1.weight", "layers.1.bias", "layers.4.weight", "layers.4.bias",
        "layers.7.weight", "layers.7.bias"]
    assert model.state_dict()["layers.4.weight"].shape == (6, 8)
    x = lw.randn(4, 3, 2, 2)  # flattened to 12 features
    model.eval()
    first = model(x).detach().numpy()
    np.testing.assert_array_equal(first, model(x).detach().numpy())  # eval: no dropout
    model.train()
    lw.manual_seed(1)
    a = model(x).detach().numpy()
    b = model(x).detach().numpy()
    assert a.shape == (4, 3) and not np.allclose(a, b)


def test_basic_block_downsample_only_when_the_shape_changes():
    assert BasicBlock(8, 8).downsample is None
    block = BasicBlock(4, 8, stride=2)
    keys = list(block.state_dict())
    assert keys[:2] == ["conv1.weight", "bn1.weight"]
    assert "downsample.0.weight" in keys and "downsample.1.running_var" in keys
    assert block(lw.randn(2, 4, 6, 6)).shape == (2, 8, 3, 3)


def test_basic_block_gradient_matches_finite_differences():
    lw.manual_seed(2)
    block = BasicBlock(2, 3, stride=2).double()
    x = lw.tensor(np.random.default_rng(2).standard_normal((2, 2, 4, 4)), requires_grad=True)
    assert lw.autograd.gradcheck(block, [x])


def _fixture():
    f = load_file(str(FIXTURE))
    config = {k[len("config/"):]: f[k] for k in f if k.startswith("config/")}
    model = ResNet(num_blocks=tuple(int(v) for v in config["num_blocks"]),
                   channels=tuple(int(v) for v in config["channels"]),
                   in_channels=int(config["in_channels"]), num_classes=int(config["num_classes"]))
    return f, model


def test_resnet_state_dict_keys_are_torchvision_style():
    f, model = _fixture()
    ours = list(model.state_dict())
    assert set(ours) == {k for k in f if "/" not in k}
    assert ours[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                        "bn1.running_var", "bn1.num_batches_tracked"]
    assert ours[-2:] == ["fc.weight", "fc.bias"]


def test_resnet_matches_torch_in_train_and_eval_mode():
    f, model = _fixture()
    model.load_state_dict({k: v for k, v in f.items() if "/" not in k})  # unchanged keys, strict
    x = lw.tensor(f["input/x"], requires_grad=True)
    logits = model(x)  # train mode: batch statistics, running stats updated
    (logits * lw.tensor(f["probe/out"])).sum().backward()
    np.testing.assert_allclose(logits.detach().numpy(), f["output/out"], atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), f["grad/x"], atol=1e-5)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), f[f"grad/{name}"], atol=1e-4, err_msg=name)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), f[f"after/{key}"], atol=1e-5, err_msg=key)

    model.eval()
    x = lw.tensor(f["eval/x"], requires_grad=True)
    logits = model(x)
    (logits * lw.tensor(f["eval/probe"])).sum().backward()
    np.testing.assert_allclose(logits.detach().numpy(), f["eval/out"], atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), f["eval/grad_x"], atol=1e-5)


def test_resnet_default_shapes():
    model = ResNet()  # (1, 1, 1) blocks of 16, 32, 64 channels on 1-channel images
    assert model(lw.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.layer3[0].conv1.weight.shape == (64, 32, 3, 3)
    with pytest.raises(ValueError, match="one block count per stage"):
        ResNet(num_blocks=(1, 1), channels=(8, 16, 32))
