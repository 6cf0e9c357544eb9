"""What every optimizer shares: groups, in-place steps, zero_grad, state_dict and resuming."""

import json

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

import layerwise as lw
from layerwise.autograd import Tensor
from layerwise.optim import SGD, Adam, AdamW, Optimizer, lr_scheduler

MAKERS = {
    "SGD": lambda groups: SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": lambda groups: Adam(groups, lr=0.01, amsgrad=True, weight_decay=0.1),
    "AdamW": lambda groups: AdamW(groups, lr=0.01, betas=(0.8, 0.9)),
}


def make_params(dtype=np.float32):
    rng = np.random.default_rng(0)
    return [lw.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True)
            for s in [(3, 2), (4,), (2, 2, 2)]]


def groups_of(params):
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.003}]


def gradients(steps, params, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = lw.tensor(g)
        opt.step()


@pytest.mark.parametrize("name", MAKERS)
def test_step_is_in_place(name):
    params = make_params()
    datas = [p.data for p in params]
    view = params[0].data[1]  # a view into the first parameter
    before = view.copy()
    opt = MAKERS[name](groups_of(params))
    run(opt, params, gradients(2, params))
    assert all(p.data is d for p, d in zip(params, datas))
    assert not np.array_equal(view, before)
    np.testing.assert_array_equal(view, params[0].data[1])
    assert all(p.grad_fn is None and p.requires_grad for p in params)


@pytest.mark.parametrize("name", MAKERS)
def test_parameters_without_grad_are_skipped(name):
    params = make_params()
    frozen = params[1].data.copy()
    opt = MAKERS[name](groups_of(params))
    for g0, _, g2 in gradients(3, params):
        params[0].grad, params[1].grad, params[2].grad = lw.tensor(g0), None, lw.tensor(g2)
        opt.step()
    np.testing.assert_array_equal(params[1].data, frozen)
    assert params[1] not in opt.state and params[0] in opt.state
    assert sorted(opt.state_dict()["state"]) == [0, 2]


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    params = make_params()
    opt = SGD(params, lr=0.1)
    for p in params:
        (p * 2.0).sum().backward()  # the grads backward really leaves, broadcast views included
    grads = [p.grad for p in params]
    opt.zero_grad(set_to_none=set_to_none)
    for p, g in zip(params, grads):
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is g and p.grad.shape == p.shape and not p.grad.data.any()
    for p in params:
        (p * 3.0).sum().backward()  # accumulates onto the zeros, or starts afresh
        np.testing.assert_array_equal(p.grad.data, np.full(p.shape, 3.0, dtype=np.float32))


def test_step_calls_closure_with_grad_enabled():
    p = lw.tensor([3.0], dtype=lw.float64, requires_grad=True)
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with lw.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 9.0
    np.testing.assert_allclose(p.data, [3.0 - 0.25 * 6.0])


def test_state_dict_layout():
    params = make_params()
    opt = Adam(groups_of(params), lr=0.01)
    run(opt, params, gradients(2, params))
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert [g["lr"] for g in sd["param_groups"]] == [0.01, 0.003]
    assert set(sd["state"]) == {0, 1, 2}
    s = sd["state"][2]
    assert set(s) == {"step", "exp_avg", "exp_avg_sq"} and s["step"] == 2
    assert isinstance(s["step"], int) and isinstance(s["exp_avg"], Tensor)
    np.testing.assert_array_equal(s["exp_avg"].data, opt.state[params[2]]["exp_avg"].data)
    # A snapshot: stepping on does not change what was handed out.
    saved = s["exp_avg"].data.copy()
    run(opt, params, gradients(1, params, seed=9))
    np.testing.assert_array_equal(s["exp_avg"].data, saved)


def to_files(state_dict):
    """What a checkpoint writer does: Tensors to safetensors bytes, the rest to JSON text."""
    arrays, state = {}, {}
    for index, s in state_dict["state"].items():
        state[index] = {}
        for name, value in s.items():
            if isinstance(value, Tensor):
                arrays[f"{index}.{name}"] = value.data
            else:
                state[index][name] = value
    text = json.dumps({"state": state, "param_groups": state_dict["param_groups"]})
    return save_safetensors(arrays), text


def from_files(blob, text):
    loaded = json.loads(text)
    for key, array in load_safetensors(blob).items():
        index, name = key.split(".", 1)
        loaded["state"].setdefault(index, {})[name] = Tensor(array)
    return loaded


@pytest.mark.parametrize("through_files", [False, True], ids=["direct", "safetensors+json"])
@pytest.mark.parametrize("name", MAKERS)
def test_resume_equals_uninterrupted_run(name, through_files):
    grads = gradients(7, make_params())

    params = make_params()
    opt = MAKERS[name](groups_of(params))
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for g in grads:
        run(opt, params, [g])
        sched.step()

    params_a = make_params()
    opt_a = MAKERS[name](groups_of(params_a))
    sched_a = lr_scheduler.StepLR(opt_a, step_size=2, gamma=0.5)
    for g in grads[:3]:
        run(opt_a, params_a, [g])
        sched_a.step()
    opt_sd, sched_sd = opt_a.state_dict(), sched_a.state_dict()
    if through_files:
        opt_sd = from_files(*to_files(opt_sd))
        sched_sd = json.loads(json.dumps(sched_sd))

    # A fresh process: new parameters holding the saved values, new optimizer and scheduler.
    params_b = [lw.tensor(p.data.copy(), requires_grad=True) for p in params_a]
    opt_b = MAKERS[name](groups_of(params_b))
    opt_b.load_state_dict(opt_sd)
    sched_b = lr_scheduler.StepLR(opt_b, step_size=2, gamma=0.5)
    sched_b.load_state_dict(sched_sd)
    for g in grads[3:]:
        run(opt_b, params_b, [g])
        sched_b.step()

    for p, q in zip(params, params_b):
        np.testing.assert_array_equal(p.data, q.data)
    assert opt_b.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert type(opt_b.param_groups[0].get("betas", ())) is tuple
    for p, q in zip(params, params_b):
        for key, value in opt.state[p].items():
            other = opt_b.state[q][key]
            if isinstance(value, Tensor):
                assert other.dtype == value.dtype
                np.testing.assert_array_equal(other.data, value.data)
            else:
                assert other == value


def test_load_state_dict_copies_and_casts_to_parameter_dtype():
    p = lw.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9)
    buf = np.array([1.0, 2.0, 3.0])  # float64 in the file
    opt.load_state_dict({"state": {"0": {"momentum_buffer": Tensor(buf)}},
                         "param_groups": [{"lr": 0.5, "momentum": 0.9, "dampening": 0.0,
                                           "weight_decay": 0.0, "nesterov": False,
                                           "maximize": False, "params": [0]}]})
    restored = opt.state[p]["momentum_buffer"].data
    assert restored.dtype == np.float32 and restored is not buf
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["params"][0] is p


def test_load_state_dict_rejects_mismatched_groups():
    params = make_params()
    opt = SGD(groups_of(params), lr=0.1, momentum=0.9)
    run(opt, params, gradients(1, params))
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="has 2 parameter groups, but this optimizer has 1"):
        SGD(params, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="group 0 of the loaded state dict has 2 parameters, "
                                         "but this optimizer's group 0 has 1"):
        SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(sd)
    swapped = [params[1], params[0], params[2]]  # same sizes, shapes in the wrong order
    with pytest.raises(ValueError, match=r"has shape \(3, 2\), but its parameter has shape \(4,\)"):
        SGD(groups_of(swapped), lr=0.1).load_state_dict(sd)


def test_constructor_errors():
    p, q = make_params()[:2]
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        Adam(iter([]))
    with pytest.raises(ValueError, match="appears twice in a parameter group"):
        SGD([p, q, p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [q, p]}], lr=0.1)
    with pytest.raises(TypeError, match="got a single Tensor; pass \\[tensor\\]"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="not a set"):
        SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors, got ndarray"):
        SGD([p.data], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([p * 2], lr=0.1)


def test_add_param_group_takes_defaults_and_overrides():
    p, q, r = make_params()
    opt = Adam([p], lr=0.01, betas=(0.8, 0.9))
    opt.add_param_group({"params": q, "lr": 0.5})
    assert len(opt.param_groups[1]["params"]) == 1 and opt.param_groups[1]["params"][0] is q
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [r, p]})
    assert isinstance(opt, Optimizer) and "Parameter Group 1" in repr(opt)
