"""Each schedule's lr sequence against hand-computed or closed-form values, and resuming."""

import json
import math

import pytest

import layerwise as lw
from layerwise.optim import SGD, lr_scheduler


def make_optimizer(lrs=(1.0, 0.1)):
    params = [lw.tensor([float(i)], requires_grad=True) for i in range(len(lrs))]
    return SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=0.5)


def lr_sequence(optimizer, scheduler, epochs):
    """The lr of every group at epochs 0..epochs-1, read from the optimizer itself."""
    seq = []
    for _ in range(epochs):
        seq.append([g["lr"] for g in optimizer.param_groups])
        assert scheduler.get_last_lr() == seq[-1]
        scheduler.step()
    return seq


def assert_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a == pytest.approx(e, rel=1e-12, abs=1e-15)


def test_step_lr():
    opt = make_optimizer()
    seq = lr_sequence(opt, lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), 8)
    factors = [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert_close(seq, [[f * 1.0, f * 0.1] for f in factors])
    assert [g["initial_lr"] for g in opt.param_groups] == [1.0, 0.1]


def test_multistep_lr():
    opt = make_optimizer()
    seq = lr_sequence(opt, lr_scheduler.MultiStepLR(opt, milestones=[4, 2], gamma=0.1), 6)
    factors = [1, 1, 0.1, 0.1, 0.01, 0.01]  # milestones are sorted: decays at 2 and at 4
    assert_close(seq, [[f * 1.0, f * 0.1] for f in factors])


def test_exponential_lr():
    opt = make_optimizer()
    seq = lr_sequence(opt, lr_scheduler.ExponentialLR(opt, gamma=0.9), 5)
    assert_close(seq, [[0.9**e, 0.1 * 0.9**e] for e in range(5)])


def test_cosine_annealing_lr():
    opt = make_optimizer()
    seq = lr_sequence(opt, lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.01), 9)
    # Hand values of (1 + cos(pi e / 4)) / 2 for e = 0..8.
    h = 0.5 + math.sqrt(2) / 4
    shape = [1.0, h, 0.5, 1 - h, 0.0, 1 - h, 0.5, h, 1.0]
    assert_close(seq, [[0.01 + (1.0 - 0.01) * c, 0.01 + (0.1 - 0.01) * c] for c in shape])


def test_linear_lr_warm_up():
    opt = make_optimizer()
    sched = lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=3)
    seq = lr_sequence(opt, sched, 6)
    factors = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert_close(seq, [[f, 0.1 * f] for f in factors])


def test_lambda_lr_one_function_per_group():
    opt = make_optimizer()
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1 / (e + 1), lambda e: 2.0**e])
    seq = lr_sequence(opt, sched, 4)
    assert_close(seq, [[1 / (e + 1), 0.1 * 2.0**e] for e in range(4)])


def test_sequential_lr_warm_up_then_cosine():
    opt = make_optimizer()
    warm = lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2)
    cos = lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    seq = lr_sequence(opt, lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[2]), 7)
    h = 0.5 + math.sqrt(2) / 4
    factors = [0.5, 0.75, 1.0, h, 0.5, 1 - h, 0.0]  # the cosine restarts at its epoch 0 at epoch 2
    assert_close(seq, [[f, 0.1 * f] for f in factors])


@pytest.mark.parametrize("warmup, total", [(3, 10), (0, 5), (1, 2)])
def test_warmup_cosine(warmup, total):
    opt = make_optimizer((0.2,))
    sched = lr_scheduler.warmup_cosine(opt, warmup, total, min_lr=0.02)
    seq = [lrs[0] for lrs in lr_sequence(opt, sched, total + 1)]
    for t in range(warmup):
        assert seq[t] == pytest.approx(0.2 * (t + 1) / (warmup + 1), rel=1e-12)
    assert seq[warmup] == pytest.approx(0.2, rel=1e-12)
    assert seq[total] == pytest.approx(0.02, rel=1e-12)
    assert all(a < b for a, b in zip(seq[:warmup], seq[1:warmup + 1]))  # rising
    assert all(a > b for a, b in zip(seq[warmup:], seq[warmup + 1:]))  # then falling


def test_warmup_cosine_rejects_bad_lengths():
    opt = make_optimizer()
    with pytest.raises(ValueError, match="greater than warmup_steps=10, got 10"):
        lr_scheduler.warmup_cosine(opt, 10, 10)
    with pytest.raises(ValueError, match="non-negative int, got -1"):
        lr_scheduler.warmup_cosine(opt, -1, 10)


def make_warmup_cosine(opt):
    return lr_scheduler.warmup_cosine(opt, warmup_steps=3, total_steps=12, min_lr=0.001)


@pytest.mark.parametrize("make", [
    lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.3),
    lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[3, 5]),
    lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.001),
    lambda opt: lr_scheduler.LambdaLR(opt, lambda e: 0.9**e),
    make_warmup_cosine,
], ids=["StepLR", "MultiStepLR", "CosineAnnealingLR", "LambdaLR", "warmup_cosine"])
@pytest.mark.parametrize("split", [2, 5])  # warmup_cosine: saved during the warm-up, and after
def test_state_dict_round_trip_through_json(make, split):
    opt = make_optimizer()
    sched = make(opt)
    full = lr_sequence(opt, sched, 10)

    opt_a = make_optimizer()
    sched_a = make(opt_a)
    head = lr_sequence(opt_a, sched_a, split)
    saved_opt = opt_a.state_dict()
    saved = json.loads(json.dumps(sched_a.state_dict()))  # plain numbers only, or this fails

    opt_b = make_optimizer()
    sched_b = make(opt_b)
    lr_sequence(opt_b, sched_b, 7 - split)  # a different position, which loading must undo
    opt_b.load_state_dict(saved_opt)
    sched_b.load_state_dict(saved)  # after the optimizer, so the scheduler's own lr must be right
    tail = lr_sequence(opt_b, sched_b, 10 - split)
    assert head + tail == full
    assert sched_b.last_epoch == sched.last_epoch


def test_resuming_with_last_epoch_needs_initial_lr():
    opt = make_optimizer()
    with pytest.raises(KeyError, match=r"'initial_lr' is not specified in param_groups\[0\]"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=5)
    lr_scheduler.StepLR(opt, step_size=2)  # sets initial_lr
    opt.param_groups[0]["lr"] = 123.0
    resumed = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5, last_epoch=4)
    assert resumed.last_epoch == 5 and resumed.get_last_lr() == [0.25, 0.025]


@pytest.mark.parametrize("build, message", [
    (lambda opt: lr_scheduler.StepLR(opt, step_size=0), "step_size must be a positive int, got 0"),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=0),
     "T_max must be a positive int, got 0"),
    (lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.0),
     r"start_factor must be in \(0, 1\], got 0.0"),
    (lambda opt: lr_scheduler.LambdaLR(opt, [lambda e: 1.0]), "expected 2 lr_lambdas"),
    (lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)], milestones=[3]),
     "len\\(milestones\\) = len\\(schedulers\\) - 1 = 0, got 1"),
    (lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(make_optimizer(), 2)],
                                           milestones=[]),
     "drives a different optimizer"),
])
def test_scheduler_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build(make_optimizer())
