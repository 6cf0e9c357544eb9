"""Containers: Sequential, ModuleList, ModuleDict.

Each keeps its entries in ``_modules`` and tells the walk their names ("0", "1", ... or the
dict keys) through ``_attributes``, so their parameters are named as in PyTorch.
"""

from collections import OrderedDict

from layerwise.nn.activation import ReLU
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.pooling import MaxPool2d


def _check_module(container, key, module):
    if not isinstance(module, Module):
        hint = (
            " (wrap a function in a Module, e.g. nn.ReLU() instead of F.relu)"
            if callable(module)
            else ""
        )
        raise TypeError(
            f"{container} entry {key!r} must be an nn.Module, got {type(module).__name__}{hint}"
        )
    return module


def _check_key(container, key):
    if not isinstance(key, str) or not key or "." in key:
        raise KeyError(f"{container} keys must be non-empty strings without '.', got {key!r}")
    return key


def _plain(module, cls):
    """Whether ``module`` is exactly a ``cls`` whose call nobody watches or replaces.

    Why Sequential asks: a ReLU followed by a max pool runs as the pool, then the ReLU, on a
    quarter of the values (a 2x2 pool). The two orders give the same values and the same
    gradients: a ReLU keeps the order of values (it is non-decreasing), so each window's
    maximum is in the same place before and after it, and the ReLU of that maximum is the
    maximum of the ReLU; where a window holds no positive value both orders give 0 and no
    gradient. CNN workload of bench/ (conv, ReLU, pool twice): the step 1.057x and 1.065x
    (in-process A/B); its ReLU passes, forward and backward, 2.4 ms a step before, 0.9 ms
    after (two runs of different speed). Only exact, unhooked modules are reordered, so that
    a forward hook still sees what it would see, in the order it would see it. The pool and
    the ReLU then run as one node (MaxPool2d.forward_then_relu): the ReLU in the pool's pass,
    and no pass of its own backward (a stopped maximum sends its gradient nowhere). CNN step,
    interleaved A/B against the two nodes: 1.042, 1.071, 1.114x (fastest tenth), paired
    blocks 1.009x, 1.026x (medians).

    And a Linear followed by a ReLU runs as one node (Linear.forward_then_relu): the ReLU in
    place on the product, one node fewer to call and to walk back; at batch 1 with no graph
    the product, bias and ReLU are one compiled loop. The bits are those of the two layers
    called in turn. MLP workload of bench/ at batch 1 (three Linears, two ReLUs; in-process
    interleaved A/B against the layers called in turn): 1.146, 1.123, 1.146x, and paired
    blocks 1.206x, 1.189x (medians); its training step 0.96-1.07x (no change beyond noise).
    """
    return (type(module) is cls and not module.__dict__.get("_forward_hooks")
            and "forward" not in module.__dict__)


def _index(container, idx, n):
    if not isinstance(idx, int):
        raise TypeError(f"{container} indices must be ints or slices, got {type(idx).__name__}")
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for {container} of length {n}")
    return idx % n


class Sequential(Module):
    """Modules applied in order: ``Sequential(Linear(784, 128), ReLU(), Linear(128, 10))``,
    or ``Sequential(OrderedDict(fc1=..., act=...))`` to name the entries."""

    def __init__(self, *modules):
        super().__init__()
        self._modules = OrderedDict()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for key, module in modules[0].items():
                self.add_module(key, module)
        else:
            for module in modules:
                self.append(module)

    def _attributes(self):
        yield from self._modules.items()
        yield from super()._attributes()

    def add_module(self, name, module):
        self._modules[_check_key("Sequential", name)] = _check_module("Sequential", name, module)

    def append(self, module):
        n = len(self._modules)
        while str(n) in self._modules:  # after a deletion "len" may already be taken
            n += 1
        self.add_module(str(n), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def forward(self, x):
        modules = tuple(self._modules.values())
        i = 0
        while i < len(modules):
            module, after = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            if _plain(module, Linear) and _plain(after, ReLU):
                x = module.forward_then_relu(x)  # one node: see _plain
                i += 2
            elif _plain(module, ReLU) and _plain(after, MaxPool2d) and not after.return_indices:
                # the pool first, and as one node with the ReLU: see _plain
                x = after.forward_then_relu(x)
                i += 2
            else:
                x = module(x)
                i += 1
        return x

    def __getitem__(self, idx):
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        return items[_index("Sequential", idx, len(items))][1]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index("Sequential", idx, len(self._modules))]
        self._modules[key] = _check_module("Sequential", key, module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        for key in (
            keys[idx] if isinstance(idx, slice) else [keys[_index("Sequential", idx, len(keys))]]
        ):
            del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getattr__(self, name):
        # Only reached when normal lookup fails: lets ``model.fc1`` find a named entry.
        modules = self.__dict__.get("_modules")
        if modules is not None and name in modules:
            return modules[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class ModuleList(Module):
    """A list of modules whose parameters the parent sees, named "0", "1", ..."""

    def __init__(self, modules=None):
        super().__init__()
        self._modules = []
        if modules is not None:
            self.extend(modules)

    def _attributes(self):
        yield from ((str(i), m) for i, m in enumerate(self._modules))
        yield from super()._attributes()

    def append(self, module):
        self._modules.append(_check_module("ModuleList", len(self._modules), module))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        self._modules.insert(index, _check_module("ModuleList", index, module))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(self._modules[idx])
        return self._modules[_index("ModuleList", idx, len(self._modules))]

    def __setitem__(self, idx, module):
        self._modules[_index("ModuleList", idx, len(self._modules))] = _check_module(
            "ModuleList", idx, module
        )

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            del self._modules[idx]
        else:
            del self._modules[_index("ModuleList", idx, len(self._modules))]

    def __iadd__(self, modules):
        return self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)


class ModuleDict(Module):
    """A dict of modules (string keys, insertion order) whose parameters the parent sees."""

    def __init__(self, modules=None):
        super().__init__()
        self._modules = OrderedDict()
        if modules is not None:
            self.update(modules)

    def _attributes(self):
        yield from self._modules.items()
        yield from super()._attributes()

    def update(self, modules):
        items = modules.items() if isinstance(modules, dict) else modules
        for key, module in items:
            self[key] = module

    def __getitem__(self, key):
        try:
            return self._modules[key]
        except KeyError:
            raise KeyError(
                f"ModuleDict has no key {key!r}; keys are {list(self._modules)}"
            ) from None

    def __setitem__(self, key, module):
        self._modules[_check_key("ModuleDict", key)] = _check_module("ModuleDict", key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def pop(self, key):
        return self._modules.pop(key)

    def __contains__(self, key):
        return key in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def __getattr__(self, name):
        modules = self.__dict__.get("_modules")
        if modules is not None and name in modules:
            return modules[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
