"""Tensor: an array, whether it needs a gradient, its gradient, and the op that made it.

Arithmetic, reductions and the other ops are attached as methods by ``layerwise.ops``;
this file holds only what the graph itself needs.
"""

import weakref

from layerwise import backend
from layerwise.backend import xp


class GraphRef:
    """What the graph keeps of a non-leaf tensor that fed an op: the node that made it, never
    its data. Holding the input tensors themselves kept every intermediate result alive until
    backward, whether or not any backward needed it (the GPT step's memory: 120 -> 96 MB).
    One per tensor (``Tensor._graph_ref``), so gradients from all its consumers meet at it.
    """

    __slots__ = ("_ctx", "requires_grad", "_tensor")

    def __init__(self, tensor):
        self._ctx, self.requires_grad = tensor._ctx, tensor.requires_grad
        self._tensor = weakref.ref(tensor)  # for retain_grad(), while the tensor lives

    def tensor(self):
        """The tensor, or None once nothing else holds it."""
        return self._tensor()


class Tensor:
    __slots__ = ("data", "requires_grad", "grad", "_ctx", "_retains_grad", "_ref", "__weakref__",
                 "__dict__")
    __array_priority__ = 1000  # so numpy_array * tensor calls Tensor.__rmul__
    # {key: hook} once register_post_accumulate_grad_hook is called (in the instance dict):
    # a class default keeps every other tensor one slot smaller.
    _post_accumulate_grad_hooks = None

    def __init__(self, data, requires_grad=False):
        # Internal constructor: ``data`` is already an xp array. Users call lw.tensor().
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx = None
        self._retains_grad = False
        self._ref = None

    def _graph_ref(self):
        """How the graph refers to this tensor: a leaf as itself (its .grad is filled in),
        a computed tensor through its GraphRef (so its data can be freed)."""
        if self._ctx is None:
            return self
        if self._ref is None:
            self._ref = GraphRef(self)
        return self._ref

    # --- what it is ---------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        return "cpu"

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    # --- leaving the graph --------------------------------------------------------------
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError(
                "can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()"
            )
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data, requires_grad=False)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not backend.is_floating(self.dtype):
            raise RuntimeError(f"only floating-point tensors can require grad, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        self._retains_grad = True
        return self

    # --- the graph ----------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        from layerwise.autograd.engine import backward

        backward(self, gradient, retain_graph=retain_graph)

    def register_post_accumulate_grad_hook(self, hook):
        """Run ``hook(tensor)`` each time a backward pass has added into this leaf's ``.grad``
        (PyTorch's name); returns a handle whose ``remove()`` takes the hook off again."""
        if not self.is_leaf or not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook needs a leaf tensor that "
                               f"requires grad (a parameter); got a tensor with "
                               f"is_leaf={self.is_leaf}, requires_grad={self.requires_grad}")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        if self._post_accumulate_grad_hooks is None:
            from layerwise.autograd import engine

            engine.hooks_registered = True  # from now on backward looks for hooked leaves
            self._post_accumulate_grad_hooks = {}
        hooks = self._post_accumulate_grad_hooks
        key = max(hooks, default=-1) + 1
        hooks[key] = hook
        return _HookHandle(hooks, key)

    # --- conversion ---------------------------------------------------------------------
    def to(self, dtype_or_device=None, dtype=None):
        """``t.to(lw.float64)`` or ``t.to("cpu")``; only the CPU exists in this backend."""
        target = dtype if dtype is not None else dtype_or_device
        if target is None or (isinstance(target, str) and target == "cpu"):
            return self
        if isinstance(target, str) and target.startswith("cuda"):
            raise RuntimeError("this build of layerwise has no GPU backend; use the CPU")
        return self.type(target)

    def cpu(self):
        return self

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self.data)

    def __hash__(self):
        return id(self)

    def __repr__(self):
        body = xp.array2string(self.data, separator=", ", prefix="tensor(")
        extras = []
        if self.dtype != backend.default_float() and self.dtype != backend.int64:
            extras.append(f"dtype={self.dtype}")
        if self._ctx is not None:
            extras.append(f"grad_fn={type(self._ctx).__name__}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}" + "".join(", " + e for e in extras) + ")"


class _HookHandle:
    def __init__(self, hooks, key):
        self.hooks, self.key = hooks, key

    def remove(self):
        self.hooks.pop(self.key, None)


def _describe(value):
    """A short, one-line picture of a value that should have been a Tensor."""
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{name} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = " ".join(repr(value).split())  # one line, however the value prints
    return f"{name} {text[:60] + '...' if len(text) > 60 else text}"


def not_a_tensor_error(value, who, what="input"):
    """The TypeError for a NumPy array, list or number passed where a Tensor is needed.

    PyTorch refuses these too; without the check they fail deep inside an op (a list has no
    ``.ndim``, an array no ``.requires_grad``) or slip through as float64 data."""
    return TypeError(
        f"{who} {what} must be a Tensor, got {_describe(value)}; wrap it with lw.tensor(...)"
    )


def check_tensor(value, who, what="input"):
    if not isinstance(value, Tensor):
        raise not_a_tensor_error(value, who, what)
    return value
