"""Choosing what a fine-tune trains: freeze by name, replace a head, parameter groups.

Names are the dotted parameter names of ``model.named_parameters()`` ("features.0.weight"),
matched with shell-style globs (fnmatch: ``*`` also crosses dots), so ``"features.*"`` is the
whole feature extractor and ``"*.bias"`` every bias.

    freeze(model, "features.*")                     # train only what is left
    replace_head(model, "fc", num_classes=5)        # a new Linear with the same input width
    opt = AdamW(param_groups(model, [{"params": "fc.*", "lr": 1e-2}], lr=1e-3), lr=1e-3)
    opt = AdamW(discriminative_lr(model, ["conv1.*", "conv2.*", "fc.*"], lr=1e-3), lr=1e-3)
"""

from fnmatch import fnmatchcase

from layerwise.nn.linear import Linear
from layerwise.nn.module import Module


def _as_patterns(patterns):
    if isinstance(patterns, str):
        return [patterns]
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"patterns must be a glob string or a non-empty list of them, "
                        f"got {patterns!r}")
    return patterns


def match_parameters(model, patterns):
    """[(name, Parameter)] whose name matches any of ``patterns``; raises if one matches nothing
    (a typo would otherwise silently freeze nothing)."""
    patterns = _as_patterns(patterns)
    named = list(model.named_parameters())
    # a tied Parameter answers to every name it has ("lm_head.weight" and "transformer.wte.weight")
    aliases = {}
    for name, t in model.state_dict(keep_vars=True).items():
        aliases.setdefault(id(t), []).append(name)
    out, used = [], set()
    for name, p in named:
        hits = [pat for pat in patterns
                if any(fnmatchcase(n, pat) for n in aliases.get(id(p), [name]))]
        if hits:
            out.append((name, p))
            used.update(hits)
    unused = [pat for pat in patterns if pat not in used]
    if unused:
        sample = ", ".join(n for n, _ in named[:6])
        raise ValueError(f"pattern(s) {unused} match no parameter of {type(model).__name__}; "
                         f"its names look like: {sample}, ...")
    return out


def freeze(model, patterns="*"):
    """Stop gradients for the parameters matching ``patterns``; returns their names."""
    names = []
    for name, p in match_parameters(model, patterns):
        p.requires_grad = False
        p.grad = None
        names.append(name)
    return names


def unfreeze(model, patterns="*"):
    """Train the parameters matching ``patterns`` again; returns their names."""
    names = []
    for name, p in match_parameters(model, patterns):
        p.requires_grad = True
        names.append(name)
    return names


def trainable_parameters(model):
    """The parameters that require grad, in model order: what to hand the optimizer."""
    return [p for p in model.parameters() if p.requires_grad]


def _parent(model, path):
    if not isinstance(path, str) or not path:
        raise ValueError(f"head path must be a dotted module name such as 'fc', got {path!r}")
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    return parent, leaf


def replace_head(model, path, new_head=None, num_classes=None):
    """Put ``new_head`` (or a fresh Linear with ``num_classes`` outputs and the old head's input
    width) at the dotted ``path``; returns the old head. Works inside Sequential ("layers.5")."""
    if (new_head is None) == (num_classes is None):
        raise ValueError("replace_head needs exactly one of new_head= or num_classes=")
    parent, leaf = _parent(model, path)
    container = getattr(parent, "_modules", None)
    if container is not None and leaf in container:
        old = container[leaf]
    elif isinstance(getattr(parent, leaf, None), Module):
        old = getattr(parent, leaf)
    else:
        heads = [n for n, m in model.named_modules() if isinstance(m, Linear)]
        raise ValueError(f"{type(model).__name__} has no module at {path!r}; its Linear layers "
                         f"are {heads}")
    if new_head is None:
        if not isinstance(old, Linear):
            raise TypeError(f"num_classes= builds a Linear from the old head's in_features, but "
                            f"{path!r} is a {type(old).__name__}; pass new_head= instead")
        new_head = Linear(old.in_features, num_classes, bias=old.bias is not None,
                          dtype=old.weight.dtype)
    if not isinstance(new_head, Module):
        raise TypeError(f"new_head must be an nn.Module, got {type(new_head).__name__}")
    if container is not None and leaf in container:
        container[leaf] = new_head
    else:
        setattr(parent, leaf, new_head)
    if hasattr(model, "num_classes") and num_classes is not None:
        model.num_classes = num_classes
    return old


def param_groups(model, groups, **defaults):
    """Optimizer parameter groups from name patterns.

    ``groups`` is a list of dicts like ``{"params": "fc.*", "lr": 1e-2, "weight_decay": 0.0}``
    (``params`` a glob or list of globs). Each trainable parameter goes to the first group that
    matches it; the rest form a last group with ``defaults`` (if any remain). Frozen parameters
    are left out, so the optimizer never holds state for them.
    """
    if not isinstance(groups, (list, tuple)):
        raise TypeError(f"groups must be a list of dicts with a 'params' pattern, got "
                        f"{type(groups).__name__}")
    taken, out = set(), []
    for i, spec in enumerate(groups):
        if not isinstance(spec, dict) or "params" not in spec:
            raise ValueError(f"group {i} must be a dict with a 'params' pattern, got {spec!r}")
        chosen = [p for _, p in match_parameters(model, spec["params"])
                  if p.requires_grad and id(p) not in taken]
        taken.update(id(p) for p in chosen)
        if chosen:
            out.append({**spec, "params": chosen})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    if rest:
        out.append({**defaults, "params": rest})
    if not out:
        raise ValueError(f"{type(model).__name__} has no trainable parameters: everything is "
                         f"frozen; unfreeze(model, pattern) some first")
    return out


def discriminative_lr(model, layers, lr, decay=2.6, **options):
    """Discriminative learning rates (Howard & Ruder 2018, ULMFiT): the last entry of ``layers``
    (globs, input side first) trains at ``lr``, each earlier one at the next one's lr / decay,
    since early features are general and need less change. Returns parameter groups; trainable
    parameters matched by no entry get ``lr`` too."""
    if not layers:
        raise ValueError("discriminative_lr needs at least one layer pattern")
    if decay <= 0:
        raise ValueError(f"decay must be > 0 (2.6 in ULMFiT), got {decay}")
    n = len(layers)
    specs = [{"params": pat, "lr": lr / decay ** (n - 1 - i), **options}
             for i, pat in enumerate(layers)]
    return param_groups(model, specs, lr=lr, **options)
