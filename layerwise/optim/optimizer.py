"""Optimizer: parameter groups, per-parameter state, zero_grad, step, and state_dict.

Each optimizer is split MLX-style into two small methods that a subclass writes:

    init_state(param, group) -> dict   the state a parameter starts with (zeros, step 0)
    update(param, grad, state, group)  one step, written in place into ``param``

``param`` and ``grad`` are the raw xp arrays (``p.data`` and ``p.grad.data``), so a step
records no autograd graph, and ``param`` is changed in place: the Parameter objects, and any
views of their data, stay valid across steps.

``state_dict()`` has PyTorch's layout, so a checkpoint writer can save it as safetensors
(the Tensors) plus JSON (everything else):

    {"state": {index: {name: Tensor or number}},
     "param_groups": [{"lr": ..., ..., "params": [index, ...]}]}

where ``index`` counts parameters over all groups, in order.
"""

import math
from collections import defaultdict

from layerwise.autograd import Tensor, enable_grad, recording
from layerwise.backend import xp


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)  # param -> {name: Tensor or number}
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(
                "params should be an iterable of Tensors or of dicts (parameter groups), "
                "got a single Tensor; pass [tensor] or model.parameters()"
            )
        if hasattr(params, "parameters") and callable(params.parameters):
            raise TypeError(f"params should be an iterable of Tensors, got a "
                            f"{type(params).__name__} module; pass model.parameters()")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(f"params should be an iterable of Tensors or of dicts (parameter "
                            f"groups), got {type(params).__name__}; pass model.parameters()"
                            ) from None
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # --- groups -------------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group of parameters with its own options; missing options take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            # A set has no stable order, and state_dict indices depend on the order.
            raise TypeError("parameters must be given in a list or other ordered iterable, "
                            "not a set")
        params = list(params)
        if len(params) == 0:
            raise ValueError("optimizer got an empty parameter list")
        seen = set()
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(
                    "can't optimize a non-leaf Tensor (one made by an op); optimize the leaf "
                    "tensors it was computed from, or use .detach().requires_grad_()"
                )
            if id(p) in seen:
                raise ValueError(f"parameter of shape {p.shape} appears twice in a parameter group")
            seen.add(id(p))
        for other in self.param_groups:
            if any(id(q) in seen for q in other["params"]):
                raise ValueError("some parameters appear in more than one parameter group")

        group = dict(self.defaults)
        group.update(param_group)
        group["params"] = params
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Reject option values that make no sense. Subclasses add their own checks."""
        lr = group["lr"]
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0 or math.isnan(lr):
            raise ValueError(f"Invalid learning rate: lr must be a number >= 0, got {lr!r}")
        wd = group.get("weight_decay", 0.0)
        if not _is_number(wd) or wd < 0:
            raise ValueError(f"Invalid weight_decay value: must be a number >= 0, got {wd!r}")

    # --- one step -----------------------------------------------------------------------
    @recording.replayable
    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set ``.grad`` to None (default) or fill it with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    # A new zero array in the same grad Tensor: backward may have left a
                    # read-only broadcast view there, which cannot be zeroed in place.
                    p.grad.data = xp.zeros_like(p.grad.data)

    @recording.replayable
    def step(self, closure=None):
        """Update every parameter that has a gradient; parameters with ``grad is None`` are skipped.

        ``closure``, if given, re-evaluates the model and returns the loss (as in PyTorch).
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        state = self.state
        init_state, update = self.init_state, self.update
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                s = state.get(p)
                if not s:
                    s = state[p] = init_state(p.data, group)
                update(p.data, grad.data, s, group)
        return loss

    def init_state(self, param, group):
        raise NotImplementedError(f"{type(self).__name__} must define init_state(param, group)")

    def update(self, param, grad, state, group):
        raise NotImplementedError(
            f"{type(self).__name__} must define update(param, grad, state, group)"
        )

    # --- saving and resuming --------------------------------------------------------------
    def state_dict(self):
        """A snapshot (copies, not views) of the state and the group options, PyTorch layout."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if id(p) in index:
                state[index[id(p)]] = {
                    k: Tensor(v.data.copy()) if isinstance(v, Tensor) else v for k, v in s.items()
                }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict()`` returned, exactly, onto this optimizer's parameters.

        The optimizer must have been built with the same groups, of the same sizes, in the
        same order. Keys of ``state`` may be ints or their strings (as JSON gives them back).
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, but this optimizer "
                f"has {len(self.param_groups)}; build it with the same groups as the saved one"
            )
        params_by_index = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"parameter group {i} of the loaded state dict has {len(saved['params'])} "
                    f"parameters, but this optimizer's group {i} has {len(group['params'])}"
                )
            for index, p in zip(saved["params"], group["params"]):
                params_by_index[int(index)] = p

        state = defaultdict(dict)
        for index, saved_state in state_dict["state"].items():
            p = params_by_index.get(int(index))
            if p is None:
                raise ValueError(
                    f"loaded state dict has state for parameter {index}, which is in no group; "
                    f"expected indices 0..{len(params_by_index) - 1}"
                )
            state[p] = {name: _restore(name, value, p) for name, value in saved_state.items()}

        groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            restored = {}
            for k, v in saved.items():
                # JSON turns tuples (betas) into lists; give back the type the option had.
                was_tuple = isinstance(group.get(k), tuple) and isinstance(v, list)
                restored[k] = tuple(v) if was_tuple else v
            restored["params"] = group["params"]
            groups.append(restored)
        self.state = state
        self.param_groups = groups

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _restore(name, value, param):
    """A copy of one saved state value, as the live state wants it."""
    if isinstance(value, Tensor):
        value = value.data
    if not isinstance(value, xp.ndarray):
        return value  # plain numbers: the step count, for one
    if name == "step":
        return value.item()  # a 0-d array saved by a checkpoint writer
    if value.shape != param.shape:
        raise ValueError(
            f"state {name!r} has shape {value.shape}, but its parameter has shape {param.shape}; "
            "was the optimizer built with its parameters in the same order?"
        )
    # Same casting rule as PyTorch: floating state follows the parameter's dtype.
    dtype = param.dtype if value.dtype.kind == "f" and param.dtype.kind == "f" else value.dtype
    return Tensor(xp.array(value, dtype=dtype, copy=True))


def _is_number(value):
    """A real number that is not a bool or NaN: what every optimizer option must be."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not math.isnan(value))
