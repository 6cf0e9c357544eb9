"""Swapping one layer of a model for another, wherever it sits in the tree."""

from layerwise import nn


def set_submodule(model, name, new):
    """Replace the module called ``name`` (a named_modules() name) with ``new``."""
    parent_name, _, key = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)):
        parent[int(key)] = new
    elif isinstance(parent, nn.ModuleDict):
        parent[key] = new
    else:
        setattr(parent, key, new)


def find(model, types):
    """[(name, module)] of every module of one of ``types``, in named_modules() order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, types)]
