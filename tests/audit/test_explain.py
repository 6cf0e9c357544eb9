"""Explanations: saliency, integrated gradients, Grad-CAM and attention maps."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn
from layerwise.audit import explain as E
from layerwise.autograd import Tensor, no_grad
from layerwise.models.gpt import GPT, GPTConfig
from layerwise.train.recipes import get_recipe
from layerwise.train.run import make_config


def _mlp64(seed=0):
    lw.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _forward(model, x):
    with no_grad():
        return model(Tensor(x)).data


def test_ig_on_a_linear_model_is_input_times_weight():
    lw.manual_seed(0)
    model = nn.Linear(5, 3).double()
    rng = np.random.default_rng(0)
    x, base = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    target = np.array([0, 2, 1, 2])
    attr, delta, _ = E.integrated_gradients(model, x, target, baseline=base, n_steps=5)
    w = model.weight.data  # (out, in)
    np.testing.assert_allclose(attr, (x - base) * w[target], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(delta, 0, atol=1e-12)


def test_saliency_equals_finite_difference_gradient():
    model = _mlp64()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6))
    target = np.array([2, 0, 1])
    sal = E.saliency(model, x, target)
    eps, ref = 1e-6, np.zeros_like(x)
    for i in range(6):  # central differences, no autograd involved
        step = np.zeros_like(x)
        step[:, i] = eps
        up, down = _forward(model, x + step), _forward(model, x - step)
        ref[:, i] = (up - down)[np.arange(3), target] / (2 * eps)
    np.testing.assert_allclose(sal, ref, rtol=1e-6, atol=1e-9)


def test_ig_converges_and_batching_changes_nothing():
    model = _mlp64()
    x = np.random.default_rng(2).normal(size=(5, 6))
    a1, d1, _ = E.integrated_gradients(model, x, 1, n_steps=32, batch_size=7)
    a2, d2, _ = E.integrated_gradients(model, x, 1, n_steps=32, batch_size=10_000)
    np.testing.assert_allclose(a1, a2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d1, d2, atol=1e-14)
    assert np.abs(d1).max() < 1e-8  # smooth model: Gauss-Legendre is all but exact


def test_ig_rejects_bad_steps():
    with pytest.raises(ValueError, match="n_steps must be a positive int, got 0"):
        E.integrated_gradients(_mlp64(), np.zeros((1, 6)), 0, n_steps=0)


@pytest.fixture(scope="module")
def sample(digits, digits_mlp):
    x, _ = digits["test"]
    x = np.ascontiguousarray(x[::50])  # 10 images, one per class (the split is class-ordered)
    target = _forward(digits_mlp, x).argmax(1)
    return x, target


def test_ig_completeness_within_one_percent_on_the_trained_model(digits_mlp, sample):
    x, target = sample
    attr, delta, f_diff = E.integrated_gradients(digits_mlp, x, target, n_steps=50)
    assert np.all(np.abs(delta) <= 0.01 * np.abs(f_diff)), np.abs(delta) / np.abs(f_diff)
    np.testing.assert_allclose(attr.reshape(10, -1).sum(1) - f_diff, delta, atol=1e-9)


def test_weight_randomisation_destroys_the_attributions(digits_mlp, sample):
    # Adebayo et al. 2018: explanations of a re-initialised model must look different
    x, target = sample
    lw.manual_seed(1234)
    fresh = get_recipe("mlp").build(make_config("mlp")["hyperparameters"], 1, None).model
    fresh.eval()
    trained = E.integrated_gradients(digits_mlp, x, target)[0]
    random = E.integrated_gradients(fresh, x, target)[0]
    rhos = [E.spearman(trained[i], random[i]) for i in range(len(x))]
    assert max(rhos) < 0.3, rhos
    sal_t, sal_r = E.saliency(digits_mlp, x, target), E.saliency(fresh, x, target)
    assert max(E.spearman(sal_t[i], sal_r[i]) for i in range(len(x))) < 0.3


def test_grad_cam_equals_cam_on_a_global_average_pooling_model():
    # conv -> GAP -> linear: d logit_t / d A_c,ij = W[t, c] / (H W), so Grad-CAM is the
    # class activation map ReLU(sum_c W[t, c] A_c) (Zhou et al. 2016), up to the scale
    lw.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    head = nn.Linear(4, 3)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), head).double()
    x = np.random.default_rng(0).normal(size=(2, 1, 6, 6))
    target = np.array([0, 2])
    cam = E.grad_cam(model, conv, x, target)
    with no_grad():
        a = conv(Tensor(x)).data  # (B, 4, 6, 6)
    ref = np.maximum(np.einsum("bc,bchw->bhw", head.weight.data[target], a), 0)
    ref /= ref.reshape(2, -1).max(1)[:, None, None]
    np.testing.assert_allclose(cam, ref, rtol=1e-10, atol=1e-12)
    assert not conv.__dict__.get("_forward_hooks")  # the hook is removed


def test_grad_cam_needs_a_layer_of_the_model():
    model = _mlp64()
    with pytest.raises(ValueError, match="did not run"):
        E.grad_cam(model, nn.Linear(2, 2), np.zeros((1, 6)), 0)


def test_attention_maps_of_a_gpt():
    lw.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    idx = Tensor(np.array([[1, 2, 3, 4, 5]]))
    maps = E.attention_maps(model, idx)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 5, 5)
    for m in maps:
        np.testing.assert_allclose(m.sum(-1), 1, rtol=1e-5)  # each query's weights sum to 1
        assert np.all(np.triu(m[0, 0], k=1) == 0)  # causal: no weight on future tokens
    attn = [mod for _, mod in model.named_modules() if hasattr(mod, "store_attn_weights")]
    assert not any(mod.store_attn_weights for mod in attn)  # switched back off


def test_attention_maps_need_attention():
    with pytest.raises(ValueError, match="no attention module"):
        E.attention_maps(_mlp64(), Tensor(np.zeros((1, 6))))
