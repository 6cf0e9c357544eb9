"""Containers: Sequential, ModuleList, ModuleDict.

Each keeps its entries in ``_modules`` and tells the walk their names ("0", "1", ... or the
dict keys) through ``_attributes``, so their parameters are named as in PyTorch.
"""

from collections import OrderedDict

from layerwise.nn.module import Module


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
        for module in self._modules.values():
            x = module(x)
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
