"""Module: walking attributes, names and order, buffers, state_dict, modes, conversion, repr."""

import copy
from collections import OrderedDict

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn as nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(lw.ones(2))
        self.fc = nn.Linear(2, 2)
        self.register_buffer("count", lw.zeros(1))


class Net(nn.Module):
    """Members held every way the walk must understand."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 2)
        self.alpha = nn.Parameter(lw.zeros(1))
        self.blocks = [Block(), Block()]  # a plain list of modules
        self.heads = {"a": nn.Linear(2, 1), "b": [nn.Linear(2, 4)]}  # nested dict / list
        self.seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        self.mlist = nn.ModuleList([nn.Identity(), nn.Linear(2, 2, bias=False)])
        self.mdict = nn.ModuleDict({"out": nn.Linear(2, 2)})
        self.register_buffer("stats", lw.zeros(2))
        self.register_buffer("scratch", lw.zeros(5), persistent=False)
        self.temp = lw.ones(3)  # a plain tensor attribute is neither parameter nor buffer
        self.act = lw.relu  # functions are ignored


EXPECTED_PARAMS = [
    "alpha",
    "first.weight",
    "first.bias",
    "blocks.0.scale",
    "blocks.0.fc.weight",
    "blocks.0.fc.bias",
    "blocks.1.scale",
    "blocks.1.fc.weight",
    "blocks.1.fc.bias",
    "heads.a.weight",
    "heads.a.bias",
    "heads.b.0.weight",
    "heads.b.0.bias",
    "seq.0.weight",
    "seq.0.bias",
    "mlist.1.weight",
    "mdict.out.weight",
    "mdict.out.bias",
]

# PyTorch order: own params, own buffers, then children recursively.
EXPECTED_STATE = [
    "alpha",
    "stats",
    "first.weight",
    "first.bias",
    "blocks.0.scale",
    "blocks.0.count",
    "blocks.0.fc.weight",
    "blocks.0.fc.bias",
    "blocks.1.scale",
    "blocks.1.count",
    "blocks.1.fc.weight",
    "blocks.1.fc.bias",
    "heads.a.weight",
    "heads.a.bias",
    "heads.b.0.weight",
    "heads.b.0.bias",
    "seq.0.weight",
    "seq.0.bias",
    "mlist.1.weight",
    "mdict.out.weight",
    "mdict.out.bias",
]


def test_named_parameters_dotted_names_in_order():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == EXPECTED_PARAMS
    assert all(isinstance(p, nn.Parameter) for p in net.parameters())
    assert net.num_parameters() == sum(p.numel() for p in net.parameters())


def test_named_modules_and_children():
    net = Net()
    children = [n for n, _ in net.named_children()]
    assert children == [
        "first",
        "blocks.0",
        "blocks.1",
        "heads.a",
        "heads.b.0",
        "seq",
        "mlist",
        "mdict",
    ]
    modules = [n for n, _ in net.named_modules()]
    assert modules[:4] == ["", "first", "blocks.0", "blocks.0.fc"]
    assert "seq.1" in modules and "mlist.0" in modules and "mdict.out" in modules
    assert net.get_submodule("seq.0") is net.seq[0]


def test_buffers_persistent_and_not():
    net = Net()
    assert [n for n, _ in net.named_buffers()] == [
        "stats",
        "scratch",
        "blocks.0.count",
        "blocks.1.count",
    ]
    assert list(net.state_dict()) == EXPECTED_STATE
    assert "scratch" not in net.state_dict() and "temp" not in net.state_dict()


def test_assigning_a_tensor_to_a_buffer_name_updates_the_buffer():
    net = Net()
    net.stats = lw.tensor([3.0, 4.0])
    np.testing.assert_array_equal(net.state_dict()["stats"].numpy(), [3.0, 4.0])
    with pytest.raises(TypeError, match="buffer 'stats'"):
        net.stats = nn.Parameter(lw.zeros(2))
    with pytest.raises(TypeError, match="buffer 'stats'"):
        net.stats = "oops"


def test_shared_parameter_listed_once_but_saved_under_both_names():
    a = nn.Linear(2, 2)
    tied = nn.Sequential(a, nn.Linear(2, 2))
    tied[1].weight = a.weight
    assert len(list(tied.parameters())) == 3
    assert list(tied.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_state_dict_round_trip_into_fresh_model_keeps_parameter_objects():
    lw.manual_seed(1)
    src = Net()
    for p in src.parameters():
        p.data[...] = np.random.default_rng(0).standard_normal(p.shape)
    src.stats = lw.tensor([5.0, 6.0])
    dst = Net()
    before = {n: p for n, p in dst.named_parameters()}
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, p in dst.named_parameters():
        assert p is before[name]
        np.testing.assert_array_equal(p.data, dict(src.named_parameters())[name].data)
    np.testing.assert_array_equal(dst.stats.numpy(), [5.0, 6.0])
    x = lw.randn(4, 3)
    np.testing.assert_allclose(dst.first(x).data, src.first(x).data)


def test_load_state_dict_accepts_arrays_and_converts_dtype():
    model = nn.Linear(3, 2)
    w = np.arange(6, dtype=np.float64).reshape(2, 3)
    model.load_state_dict({"weight": w, "bias": np.array([1, 2])})
    assert model.weight.dtype == lw.float32 and model.bias.dtype == lw.float32
    np.testing.assert_array_equal(model.weight.data, w.astype(np.float32))
    w[0, 0] = 99  # the model holds a copy
    assert model.weight.data[0, 0] == 0


def test_strict_load_lists_missing_unexpected_and_mismatched_in_one_error():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    state = model.state_dict()
    bad = OrderedDict(state)
    del bad["0.bias"]
    bad["extra.weight"] = lw.zeros(1)
    bad["2.weight"] = lw.zeros(5, 3)
    original = model[2].weight.data.copy()
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(bad)
    msg = str(info.value)
    assert "missing keys: 0.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "2.weight" in msg and "(5, 3)" in msg and "(2, 3)" in msg
    np.testing.assert_array_equal(model[2].weight.data, original)  # nothing was written


def test_non_strict_load_returns_keys_and_still_rejects_shapes():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    partial = {"0.weight": lw.ones(3, 4), "other": lw.zeros(2)}
    result = model.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["0.bias", "1.weight", "1.bias"]
    assert result.unexpected_keys == ["other"]
    np.testing.assert_array_equal(model[0].weight.data, np.ones((3, 4)))
    with pytest.raises(RuntimeError, match=r"0.weight.*\(4, 4\).*\(3, 4\)"):
        model.load_state_dict({"0.weight": lw.ones(4, 4)}, strict=False)


def test_train_eval_propagate_to_every_module():
    net = Net()
    net.eval()
    assert all(not m.training for m in net.modules())
    net.blocks[1].train()
    assert net.blocks[1].training and net.blocks[1].fc.training and not net.training
    net.train()
    assert all(m.training for m in net.modules())


def test_dropout_respects_training_flag():
    lw.manual_seed(0)
    drop = nn.Dropout(0.5)
    x = lw.ones(1000)
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 400 < (y == 0).sum() < 600
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


def test_zero_grad_requires_grad_and_apply():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model(lw.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.data.any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Linear", "Sequential"]


def test_to_double_converts_in_place():
    model = nn.Sequential(nn.Linear(3, 2))
    model.register_buffer("steps", lw.zeros(1, dtype=lw.int64))
    weight = model[0].weight
    model.double()
    assert model[0].weight is weight and weight.dtype == lw.float64
    assert model.steps.dtype == lw.int64  # integer buffers keep their dtype
    assert model(lw.randn(2, 3, dtype=lw.float64)).dtype == lw.float64
    model.float()
    assert weight.dtype == lw.float32
    with pytest.raises(TypeError):
        model.to(lw.int64)


def test_repr_matches_pytorch_layout():
    model = nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Sequential(nn.Linear(512, 10, bias=False))
    )
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=784, out_features=512, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Linear(in_features=512, out_features=10, bias=False)\n"
        "  )\n"
        ")"
    )
    assert repr(nn.Parameter(lw.zeros(2))).startswith("Parameter containing:\ntensor(")


def test_forward_hook_sees_and_can_replace_output():
    layer = nn.Linear(2, 2)
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    layer(lw.randn(3, 2))
    assert seen == [(3, 2)]
    handle.remove()
    layer(lw.randn(3, 2))
    assert len(seen) == 1


def test_deepcopy_gives_independent_parameters():
    model = nn.Sequential(nn.Linear(2, 2))
    clone = copy.deepcopy(model)
    clone[0].weight.data[...] = 0
    assert model[0].weight.data.any()
    assert isinstance(clone[0].weight, nn.Parameter)


def test_back_reference_cycle_is_reported_not_looped():
    model = nn.Sequential(nn.Linear(2, 2))
    model[0].owner = model
    assert len(list(model.parameters())) == 2  # the walk visits each module once
    with pytest.raises(ValueError, match="'0.owner' refers back"):
        model.state_dict()


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(lw.zeros(1))


def test_sequential_calls_each_module_in_order_as_written():
    """No pair of layers is merged: every module's hook sees its own output, in order."""
    import layerwise as lw
    from layerwise import nn

    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU())
    seen = []
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, args, out, name=name: seen.append((name, out)))
    x = lw.randn(2, 4)
    out = model(x)
    assert [name for name, _ in seen] == ["0", "1", "2", "3"]
    assert (seen[0][1].detach().numpy() < 0).any()  # the Linear's output before its ReLU
    assert seen[-1][1] is out


def test_global_module_hooks_see_every_call_in_order_and_can_be_removed():
    import layerwise as lw
    from layerwise import nn

    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seen = []
    pre = nn.register_module_forward_pre_hook(lambda m, args: seen.append(("pre", type(m).__name__)))
    post = nn.register_module_forward_hook(lambda m, args, out: seen.append(("post", type(m).__name__)))
    model(lw.randn(1, 2))
    pre.remove()
    post.remove()
    model(lw.randn(1, 2))
    assert seen == [("pre", "Sequential"), ("pre", "Linear"), ("post", "Linear"),
                    ("pre", "ReLU"), ("post", "ReLU"), ("post", "Sequential")]


def test_a_global_forward_hook_may_replace_the_output_before_the_modules_own_hooks():
    import layerwise as lw
    from layerwise import nn

    layer = nn.Identity()
    order = []
    layer.register_forward_hook(lambda m, args, out: order.append(("own", out.item())))
    handle = nn.register_module_forward_hook(lambda m, args, out: out * 2)
    try:
        out = layer(lw.tensor(3.0))
    finally:
        handle.remove()
    assert out.item() == 6.0 and order == [("own", 6.0)]
