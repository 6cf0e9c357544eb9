"""Freezing by name, replacing heads, parameter groups and discriminative learning rates."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn
from layerwise.finetune import (
    discriminative_lr,
    freeze,
    param_groups,
    replace_head,
    trainable_parameters,
    unfreeze,
)
from layerwise.models import MLP, LeNet
from layerwise.optim import SGD, AdamW


def _net():
    lw.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), nn.Linear(6, 3))


def test_frozen_parameters_get_no_gradient_and_do_not_move():
    model = _net()
    names = freeze(model, "0.*")
    assert names == ["0.0.weight", "0.0.bias"]
    before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = SGD(trainable_parameters(model), lr=0.1)
    x, y = lw.randn(5, 4), lw.tensor([0, 1, 2, 0, 1])
    nn.functional.cross_entropy(model(x), y).backward()
    assert model[0][0].weight.grad is None and model[1].weight.grad is not None
    opt.step()
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.0.weight"].detach().numpy(), before["0.0.weight"])
    assert not np.array_equal(after["1.weight"].detach().numpy(), before["1.weight"])
    assert unfreeze(model, "*.weight") == ["0.0.weight", "1.weight"]
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True]


def test_a_pattern_that_matches_nothing_names_the_real_parameters():
    with pytest.raises(ValueError, match=r"features\.\*.*0\.0\.weight"):
        freeze(_net(), "features.*")


def test_replace_head_keeps_input_width_inside_sequential_and_as_attribute():
    mlp = MLP(16, hidden=(8,), num_classes=10)
    old = replace_head(mlp, "layers.3", num_classes=4)
    assert old.out_features == 10 and mlp.layers[3].weight.shape == (4, 8)
    assert mlp(lw.randn(2, 16)).shape == (2, 4)
    lenet = LeNet()
    replace_head(lenet, "fc3", nn.Linear(84, 2))
    assert lenet(lw.randn(1, 1, 28, 28)).shape == (1, 2)
    with pytest.raises(ValueError, match="fc3"):
        replace_head(lenet, "head", num_classes=2)


def test_param_groups_first_match_wins_and_frozen_are_left_out():
    model = _net()
    freeze(model, "0.0.bias")
    groups = param_groups(model, [{"params": "1.*", "lr": 0.5, "weight_decay": 0.0}],
                          weight_decay=0.1)
    assert [len(g["params"]) for g in groups] == [2, 1]
    assert groups[0]["lr"] == 0.5 and groups[1] == {"weight_decay": 0.1,
                                                    "params": [model[0][0].weight]}
    opt = AdamW(groups, lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 1e-3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.1]


def test_per_group_lr_scales_the_sgd_step():
    model = _net()
    groups = discriminative_lr(model, ["0.*", "1.*"], lr=0.2, decay=4.0)
    assert [g["lr"] for g in groups] == [0.05, 0.2]
    opt = SGD(groups, lr=0.2)
    w0, w1 = model[0][0].weight.detach().numpy().copy(), model[1].weight.detach().numpy().copy()
    x, y = lw.randn(5, 4), lw.tensor([0, 1, 2, 0, 1])
    nn.functional.cross_entropy(model(x), y).backward()
    g0, g1 = model[0][0].weight.grad.detach().numpy(), model[1].weight.grad.detach().numpy()
    opt.step()
    np.testing.assert_allclose(model[0][0].weight.detach().numpy(), w0 - 0.05 * g0, rtol=1e-6)
    np.testing.assert_allclose(model[1].weight.detach().numpy(), w1 - 0.2 * g1, rtol=1e-6)
