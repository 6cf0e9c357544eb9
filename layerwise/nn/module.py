"""Module: a tree of layers whose parameters are found by walking attributes.

Nothing is registered by hand. A Module's parameters and children are whatever its
attributes hold, in assignment order: Parameters, Modules, and lists, tuples or dicts of them
(``self.blocks = [Block(), Block()]`` is named ``blocks.0``, ``blocks.1`` as a ModuleList
would be). Buffers are the exception, because a plain Tensor attribute may be a temporary:
``register_buffer`` marks the names that belong in ``state_dict``.

Names and order follow PyTorch, so state_dict keys read the same: a module's own
parameters, then its own buffers, then each child's entries under ``child_name.``.
"""

from collections import OrderedDict, namedtuple

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd import recording
from layerwise.autograd.tensor import Tensor
from layerwise.nn.parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# Bookkeeping attributes that the walk must not read as members. Containers keep their
# entries in ``_modules`` and list them through ``_attributes`` with their own names.
_INTERNAL = frozenset({"training", "_buffers", "_modules", "_forward_hooks"})


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _collect(name, value, params, children):
    """Sort one attribute into params or children, looking inside lists, tuples and dicts."""
    if isinstance(value, Parameter):
        params.append((name, value))
    elif isinstance(value, Module):
        children.append((name, value))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _collect(f"{name}.{i}", item, params, children)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(f"{name}.{key}", item, params, children)


class _HookHandle:
    def __init__(self, hooks, key):
        self.hooks, self.key = hooks, key

    def remove(self):
        self.hooks.pop(self.key, None)


def _add_hook(hooks, hook):
    key = max(hooks, default=-1) + 1
    hooks[key] = hook
    return _HookHandle(hooks, key)


# Hooks on every module's call, as torch.nn.modules.module's global hooks: for tools that
# watch a whole model (the FLOP counter) without touching its modules.
_global_forward_pre_hooks = {}
_global_forward_hooks = {}


def register_module_forward_pre_hook(hook):
    """``hook(module, args)`` runs before every module's forward; returns a handle whose
    ``remove()`` takes it off again."""
    return _add_hook(_global_forward_pre_hooks, hook)


def register_module_forward_hook(hook):
    """``hook(module, args, output)`` runs after every module's forward, before the module's
    own hooks; a non-None return replaces the output. Returns a handle with ``remove()``."""
    return _add_hook(_global_forward_hooks, hook)


class Module:
    """Base class of every layer: subclass it, assign parameters and submodules, write forward."""

    training = True  # a class default, so a subclass that skips super().__init__() still works

    def __init__(self):
        self.training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} has no forward(); define forward(self, ...)"
        )

    def __call__(self, *args, **kwargs):
        if _global_forward_pre_hooks:
            for hook in list(_global_forward_pre_hooks.values()):
                hook(self, args)
        out = self.forward(*args, **kwargs)
        if _global_forward_hooks or self.__dict__.get("_forward_hooks"):
            return self._run_forward_hooks(args, out)
        return out

    def _run_forward_hooks(self, args, out):
        for hooks in (_global_forward_hooks, self.__dict__.get("_forward_hooks")):
            for hook in list(hooks.values()) if hooks else ():
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook):
        """``hook(module, args, output)`` runs after forward; a non-None return replaces output.
        Returns a handle whose ``remove()`` takes the hook off again."""
        return _add_hook(self.__dict__.setdefault("_forward_hooks", {}), hook)

    # --- attributes -----------------------------------------------------------------------
    def __setattr__(self, name, value):
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            value = _as_buffer(name, value)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self.__dict__.get("_buffers", {}).pop(name, None)
        object.__delattr__(self, name)

    def _attributes(self):
        """(name, value) pairs the walk reads: the instance dict in assignment order."""
        return ((k, v) for k, v in self.__dict__.items() if k not in _INTERNAL)

    def _members(self):
        """This module's own parameters and its direct children, in order, duplicates kept."""
        params, children = [], []
        for name, value in self._attributes():
            _collect(name, value, params, children)
        return params, children

    def register_buffer(self, name, tensor, persistent=True):
        """A Tensor that is state but not a parameter (running statistics, masks).

        Persistent buffers go into state_dict. Assigning ``self.name = new_tensor`` later
        replaces the buffer.
        """
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"buffer name must be a non-empty string without '.', got {name!r}")
        if name in self.__dict__ and name not in self.__dict__.get("_buffers", {}):
            raise KeyError(
                f"attribute {name!r} already exists on {type(self).__name__}; "
                "register the buffer under another name"
            )
        self.__dict__.setdefault("_buffers", {})[name] = bool(persistent)
        setattr(self, name, tensor)

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot register {type(param).__name__} as parameter {name!r}; "
                "expected an nn.Parameter or None"
            )
        setattr(self, name, param)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module; cannot add it as {name!r}")
        setattr(self, name, module)

    # --- walking the tree -----------------------------------------------------------------
    def named_children(self):
        seen = set()
        for name, child in self._members()[1]:
            if id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        return (child for _, child in self.named_children())

    def _tree(self, prefix=""):
        """(prefix, module, own params) for this module and each distinct descendant, in
        pre-order. Iterative, so deep nesting cannot hit the recursion limit."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            params, children = module._members()
            yield path, module, params
            for name, child in reversed(children):
                stack.append((_join(path, name), child))

    def named_modules(self, prefix=""):
        return ((path, module) for path, module, _ in self._tree(prefix))

    def modules(self):
        return (module for _, module, _ in self._tree())

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs, each Parameter once even when shared (tied weights)."""
        seen = set()
        tree = self._tree(prefix) if recurse else [(prefix, self, self._members()[0])]
        for path, _, params in tree:
            for name, p in params:
                if id(p) not in seen:
                    seen.add(id(p))
                    yield _join(path, name), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def _own_buffers(self, persistent_only=False):
        d = self.__dict__
        for name, persistent in d.get("_buffers", {}).items():
            if d.get(name) is not None and (persistent or not persistent_only):
                yield name, d[name]

    def named_buffers(self, prefix="", recurse=True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for path, module in modules:
            for name, b in module._own_buffers():
                if id(b) not in seen:
                    seen.add(id(b))
                    yield _join(path, name), b

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    def get_submodule(self, target):
        """The module at a dotted path such as ``"layers.1"``; ``""`` is this module."""
        for path, module in self.named_modules():
            if path == target:
                return module
        raise AttributeError(f"{type(self).__name__} has no submodule {target!r}")

    def num_parameters(self, trainable_only=False):
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- state ----------------------------------------------------------------------------
    def _state_entries(self, prefix=""):
        """(key, Tensor) in PyTorch's state_dict order. Shared submodules appear under every
        name they have, as in PyTorch, so tied weights save and load under both keys."""
        stack = [(prefix, self, frozenset())]
        while stack:
            path, module, ancestors = stack.pop()
            params, children = module._members()
            for name, p in params:
                yield _join(path, name), p
            for name, b in module._own_buffers(persistent_only=True):
                yield _join(path, name), b
            ancestors = ancestors | {id(module)}
            for name, child in reversed(children):
                if id(child) in ancestors:  # e.g. self.block.owner = self
                    raise ValueError(
                        f"module attribute {_join(path, name)!r} refers back to an enclosing "
                        f"{type(child).__name__}, so the state_dict would never end; keep a "
                        "back-reference as weakref.ref(module), which the walk skips"
                    )
                stack.append((_join(path, name), child, ancestors))

    def state_dict(self, prefix="", keep_vars=False):
        """OrderedDict of name -> Tensor: parameters and persistent buffers.

        The tensors share memory with the model (no copy); ``keep_vars=True`` returns the
        Parameter objects themselves.
        """
        out = OrderedDict()
        for key, t in self._state_entries(prefix.rstrip(".")):
            out[key] = t if keep_vars else t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the existing parameters and buffers, in place.

        The Parameter objects stay the same, so an optimizer built earlier keeps working.
        Values may be Tensors or arrays; they are converted to each parameter's dtype.
        Everything is checked before anything is written, so a failed load changes nothing.
        Shape mismatches always raise; missing or unexpected keys raise when ``strict``.
        """
        own = OrderedDict(self._state_entries())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched, arrays = [], {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.data if isinstance(value, Tensor) else xp.asarray(value)
            if array.dtype == object:
                raise TypeError(f"state_dict entry {key!r} is not numeric: {type(value).__name__}")
            if array.shape != target.shape:
                mismatched.append(
                    f"{key}: checkpoint has shape {tuple(array.shape)}, "
                    f"model has {tuple(target.shape)}"
                )
            arrays[key] = array
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        problems += ["size mismatch for " + m for m in mismatched]
        if problems:
            hint = (
                "\n(strict=False skips missing and unexpected keys)"
                if strict and not mismatched
                else ""
            )
            raise RuntimeError(
                f"error(s) loading state_dict into {type(self).__name__}:\n  "
                + "\n  ".join(problems)
                + hint
            )
        for key, array in arrays.items():
            _copy_into(own[key], array)
        return IncompatibleKeys(missing, unexpected)

    # --- modes and conversions ------------------------------------------------------------
    def train(self, mode=True):
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    @recording.replayable
    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            # New zero arrays, never in-place writes: the engine may hand two leaves the same
            # gradient array, or a read-only broadcast view.
            p.grad = None if set_to_none or p.grad is None else Tensor(xp.zeros_like(p.data))

    def apply(self, fn):
        """Call ``fn(module)`` on every child (recursively) and then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, *args, dtype=None, device=None):
        """``model.to(lw.float64)``, ``model.to("cpu")``: converts floating parameters and
        buffers in place, keeping the same Parameter objects."""
        for arg in args:
            if isinstance(arg, str) and (arg == "cpu" or arg.startswith("cuda")):
                device = arg
            else:
                dtype = arg
        if device is not None and device != "cpu":
            raise RuntimeError(f"this build of layerwise has no {device!r} device; use 'cpu'")
        if dtype is None:
            return self
        dtype = backend.to_dtype(dtype)
        if not backend.is_floating(dtype):
            raise TypeError(f"Module.to only converts to floating dtypes, got {dtype}")
        for t in list(self.parameters()) + list(self.buffers()):
            if backend.is_floating(t.dtype) and t.dtype != dtype:
                t.data = t.data.astype(dtype)
                if t.grad is not None:
                    t.grad = Tensor(t.grad.data.astype(dtype))
        return self

    def double(self):
        return self.to(backend.float64)

    def float(self):
        return self.to(backend.float32)

    def half(self):
        return self.to(backend.float16)

    def cpu(self):
        return self

    # --- printing -------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses, e.g. ``in_features=784, out_features=10``."""
        return ""

    def __repr__(self):
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        children = self._members()[1]
        if len(lines) == 1 and not children:
            return f"{type(self).__name__}({lines[0]})"
        for name, child in children:
            lines.append(f"({name}): " + repr(child).replace("\n", "\n  "))
        if not lines:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _as_buffer(name, value):
    if value is None or isinstance(value, Tensor) and not isinstance(value, Parameter):
        return value
    if isinstance(value, Parameter):
        raise TypeError(
            f"cannot assign a Parameter to buffer {name!r}; delete the buffer first "
            f"(del module.{name}) if it should become a parameter"
        )
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return Tensor(xp.asarray(value))
    raise TypeError(
        f"cannot assign {type(value).__name__} as buffer {name!r}; expected a Tensor or None"
    )


def _copy_into(target, array):
    """Write ``array`` into ``target``'s own memory, in its dtype."""
    array = array.astype(target.dtype, copy=False)
    flags = getattr(target.data, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        target.data = array.copy()  # e.g. a read-only view; replace, keeping the Tensor object
    else:
        target.data[...] = array
