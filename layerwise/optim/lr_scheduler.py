"""Learning-rate schedules, named and used as in torch.optim.lr_scheduler.

    scheduler = lr_scheduler.warmup_cosine(optimizer, warmup_steps=100, total_steps=10_000)
    for batch in loader:
        ...; optimizer.step(); scheduler.step()

Each scheduler computes its lr in closed form from ``base_lrs`` (each group's 'initial_lr')
and ``last_epoch`` (the number of ``step()`` calls so far), and writes it into each param
group's 'lr'. The closed form makes resuming exact: the lr depends only on the saved
numbers, not on the lr the optimizer happened to hold. (PyTorch's chainable forms agree
with these up to rounding.) ``state_dict()`` holds plain numbers and lists, ready for JSON.
"""

import math
from bisect import bisect_right

from layerwise.autograd import recording


class LRScheduler:
    # Attributes that are not state: the optimizer, and functions that JSON cannot hold.
    _not_saved = ("optimizer",)

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        f"from last_epoch={last_epoch}; load the optimizer's state_dict first"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()  # epoch 0: the schedule's starting lr is in place before training starts

    def get_lr(self):
        """The lr of each group at ``self.last_epoch``."""
        raise NotImplementedError(f"{type(self).__name__} must define get_lr()")

    @recording.replayable
    def step(self):
        self.last_epoch += 1
        self._apply(self.get_lr())

    def _apply(self, lrs):
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        """The lr each group was last given by this scheduler."""
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in vars(self).items() if k not in self._not_saved}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
        # Building a scheduler sets its epoch-0 lr; put back the lr the saved run was using,
        # so it does not matter whether the optimizer's state was loaded before or after.
        self._apply(self._last_lr)


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch); one function, or one per param group.

    The functions are not in state_dict (JSON cannot hold them): pass the same ones again.
    """

    _not_saved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(
                    f"expected {n} lr_lambdas (one per param group), got {len(lr_lambda)}"
                )
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size): decay by gamma every step_size epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = self.gamma ** (self.last_epoch // self.step_size)
        return [base * factor for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (number of milestones <= epoch)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base * factor for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = self.gamma ** self.last_epoch
        return [base * factor for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2.

    Half a cosine from base_lr at epoch 0 down to eta_min at epoch T_max (SGDR without
    restarts, Loshchilov & Hutter 2017, eq. 5). Past T_max the cosine climbs again, as in PyTorch.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"T_max must be a positive int, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, T) / T)
    with T = total_iters.

    With start_factor < 1 and end_factor = 1 this is a linear warm-up over total_iters epochs.
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor!r}")
        if not isinstance(total_iters, int) or total_iters < 1:
            raise ValueError(f"total_iters must be a positive int, got {total_iters!r}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        progress = min(self.last_epoch, self.total_iters) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base * factor for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run ``schedulers[i]`` from epoch ``milestones[i-1]`` on, each restarted at its epoch 0.

    ``SequentialLR(opt, [LinearLR(opt, ...), CosineAnnealingLR(opt, ...)], milestones=[w])``
    warms up for w epochs, then anneals. All schedulers must drive this one optimizer.
    """

    _not_saved = ("optimizer", "_schedulers")

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers = list(schedulers)
        milestones = [int(m) for m in milestones]
        if len(schedulers) < 1:
            raise ValueError("SequentialLR needs at least one scheduler")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "SequentialLR expects len(milestones) = len(schedulers) - 1 = "
                f"{len(schedulers) - 1}, got {len(milestones)} milestones"
            )
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        for i, scheduler in enumerate(schedulers):
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}] drives a different optimizer than SequentialLR")
        self._schedulers = schedulers
        self.milestones = milestones
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        i = bisect_right(self.milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        scheduler.last_epoch = self.last_epoch - (self.milestones[i - 1] if i > 0 else 0)
        lrs = scheduler.get_lr()
        scheduler._last_lr = list(lrs)
        return lrs

    def state_dict(self):
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop("_schedulers")
        if len(saved) != len(self._schedulers):
            raise ValueError(
                f"loaded SequentialLR state has {len(saved)} schedulers, this one has "
                f"{len(self._schedulers)}"
            )
        for scheduler, state in zip(self._schedulers, saved):
            scheduler.load_state_dict(state)
        super().load_state_dict(state_dict)  # last, so its lr (not a sub-scheduler's) is applied


def warmup_cosine(optimizer, warmup_steps, total_steps, min_lr=0.0):
    """Linear warm-up, then cosine annealing to ``min_lr``; step it once per optimizer step.

    lr(t) = base_lr * (t + 1) / (warmup_steps + 1)                      for t < warmup_steps
    lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * s / S)) / 2     for t >= warmup_steps
    with s = t - warmup_steps and S = total_steps - warmup_steps, so lr reaches min_lr at
    t = total_steps. The warm-up never uses lr 0, which would waste a step (as in nanoGPT).
    """
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    if not isinstance(total_steps, int) or total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps must be an int greater than warmup_steps={warmup_steps}, "
            f"got {total_steps!r}"
        )
    cosine = CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=min_lr)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0,
                      total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
