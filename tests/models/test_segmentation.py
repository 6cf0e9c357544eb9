"""UNet and dice_loss: output shapes at sizes the poolings do and do not divide, the Dice
loss against a NumPy float64 formula and finite differences, gradients reaching the first
conv, a few steps of training on digit scenes, and the errors a user can cause."""

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise.autograd.gradcheck import gradcheck
from layerwise.data.scenes import digit_scenes
from layerwise.models.segmentation import UNet, dice_loss
from layerwise.optim import AdamW

SMALL = (4, 8, 16, 32)  # three poolings, as the default widths, at a fraction of the cost


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("size", [(32, 40), (29, 45), (13, 8)])  # /8, not /8, odd and minimal
def test_output_has_the_input_size(size, bilinear):
    lw.manual_seed(0)
    model = UNet(in_channels=2, num_classes=5, widths=SMALL, bilinear=bilinear)
    out = model(lw.randn(2, 2, *size))
    assert out.shape == (2, 5, *size)
    assert np.isfinite(out.detach().numpy()).all()


def test_module_layout():
    model = UNet(widths=(16, 32, 64, 128))
    assert len(model.downs) == 3 and len(model.ups) == 3
    sd = model.state_dict()
    assert sd["inc.double_conv.0.weight"].shape == (16, 1, 3, 3)
    assert sd["downs.2.maxpool_conv.1.double_conv.0.weight"].shape == (128, 64, 3, 3)
    assert sd["ups.0.up.weight"].shape == (128, 64, 2, 2)  # ConvTranspose2d: (in, out, kH, kW)
    assert sd["ups.0.conv.double_conv.0.weight"].shape == (64, 128, 3, 3)  # skip 64 + up 64
    assert sd["outc.weight"].shape == (11, 16, 1, 1)
    bilinear = UNet(widths=(16, 32, 64, 128), bilinear=True).state_dict()
    assert bilinear["ups.0.up.1.weight"].shape == (64, 128, 1, 1)  # the 1x1 conv after Upsample


def _dice_reference(logits, masks, eps):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = np.eye(logits.shape[1])[masks].transpose(0, 3, 1, 2)
    inter = (p * t).sum(axis=(0, 2, 3))
    card = p.sum(axis=(0, 2, 3)) + t.sum(axis=(0, 2, 3))
    return 1 - np.mean((2 * inter + eps) / (card + eps))


@pytest.mark.parametrize("eps", [1.0, 1e-3])
def test_dice_loss_matches_numpy_and_finite_differences(eps):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 4, 5, 3)) * 2
    masks = rng.integers(0, 3, size=(2, 5, 3))  # class 3 never true
    x = lw.tensor(logits, requires_grad=True)
    loss = dice_loss(x, lw.tensor(masks), eps=eps)
    np.testing.assert_allclose(loss.item(), _dice_reference(logits, masks, eps), rtol=1e-12)
    assert gradcheck(lambda t: dice_loss(t, masks, eps=eps), [x])


def test_dice_loss_is_zero_for_a_perfect_prediction():
    masks = np.random.default_rng(2).integers(0, 4, size=(3, 6, 7))
    logits = 50.0 * np.eye(4)[masks].transpose(0, 3, 1, 2)  # softmax is one-hot to float64
    assert abs(dice_loss(lw.tensor(logits), lw.tensor(masks)).item()) < 1e-12
    wrong = 50.0 * np.eye(4)[(masks + 1) % 4].transpose(0, 3, 1, 2)
    assert dice_loss(lw.tensor(wrong), lw.tensor(masks)).item() > 0.9


def test_gradient_reaches_the_first_conv():
    lw.manual_seed(3)
    model = UNet(widths=SMALL)
    x = lw.randn(2, 1, 16, 16)
    masks = lw.randint(0, 11, (2, 16, 16))
    (F.cross_entropy(model(x), masks) + dice_loss(model(x), masks)).backward()
    for p in (model.inc.double_conv[0].weight, model.ups[0].up.weight, model.outc.bias):
        assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0


def test_loss_decreases_on_a_few_scenes():
    lw.manual_seed(4)
    images, _, _, masks = digit_scenes(seed=0, counts={"train": 4, "val": 1, "test": 1})[
        "train"].tensors
    images, masks = images[:, :, :48, :48], masks[:, :48, :48]  # a corner: the test stays fast
    model = UNet(widths=SMALL)
    opt = AdamW(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_bad_inputs_are_one_line_errors():
    model = UNet(in_channels=1, widths=SMALL)
    with pytest.raises(ValueError, match=r"images \(B, 1, H, W\), got shape \(1, 16, 16\)"):
        model(lw.randn(1, 16, 16))
    with pytest.raises(ValueError, match=r"images \(B, 1, H, W\), got shape \(2, 3, 16, 16\)"):
        model(lw.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"3 poolings needs H and W >= 8, got shape "
                                         r"\(1, 1, 7, 16\)"):
        model(lw.randn(1, 1, 7, 16))
    with pytest.raises(ValueError, match=r"widths must be at least two ints >= 2.*\(8,\)"):
        UNet(widths=(8,))
    with pytest.raises(ValueError, match=r"masks of shape \(2, 4, 4\) .* got \(2, 4, 5\)"):
        dice_loss(lw.randn(2, 3, 4, 4), lw.randint(0, 3, (2, 4, 5)))
    with pytest.raises(ValueError, match=r"logits \(B, C, H, W\), got shape \(2, 3, 4\)"):
        dice_loss(lw.randn(2, 3, 4), lw.randint(0, 3, (2, 4)))
    with pytest.raises(ValueError, match=r"one_hot labels must be in \[0, 2\]"):
        dice_loss(lw.randn(1, 3, 2, 2), lw.tensor(np.full((1, 2, 2), 3)))
