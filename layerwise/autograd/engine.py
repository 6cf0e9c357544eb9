"""Reverse-mode differentiation: walk the recorded graph from one output back to the leaves.

The walk is iterative (an explicit stack, not recursion), so a chain of 10,000 ops is no
problem. Gradients meet in a dict keyed by node; a leaf that requires grad accumulates into
``.grad``. Each node's saved arrays are dropped as soon as its backward has run, unless the
caller asks to keep the graph.

Two hook points let other code act on gradients as they appear, with PyTorch's names: a leaf's
``register_post_accumulate_grad_hook(hook)`` (tensor.py) runs ``hook(tensor)`` right after
backward has added into that leaf's ``.grad``, and ``queue_callback(fn)``, called from such a
hook, runs ``fn()`` once the backward pass under way has finished. Data-parallel training
(layerwise.nn.parallel) starts each bucket's allreduce from the first and waits for them all
in the second.
"""

import contextlib
import threading

from layerwise.backend import xp
from layerwise.autograd import anomaly, recording


def topological_order(root):
    """Graph entries (leaf Tensors and GraphRefs, tensor.py) reachable from ``root`` through
    recorded ops, each after all it depends on."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        entry, children_done = stack.pop()
        if children_done:
            order.append(entry)
            continue
        if id(entry) in visited:
            continue
        visited.add(id(entry))
        stack.append((entry, True))
        ctx = entry._ctx
        if ctx is not None and ctx.parents is not None:  # None: freed by an earlier backward
            for parent in ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def backward(root, grad=None, retain_graph=False):
    """Accumulate d(root)/d(leaf) into every leaf's ``.grad``."""
    from layerwise.autograd.tensor import Tensor

    if not root.requires_grad:
        raise RuntimeError(
            "backward() called on a tensor that does not require grad; "
            "did you compute it under no_grad() or from tensors without requires_grad=True?"
        )
    gradient_given = grad is not None
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(
                f"backward() without a gradient argument needs a scalar output, got shape "
                f"{tuple(root.shape)}; pass grad= of the same shape, or reduce with .sum() first"
            )
        grad = xp.ones_like(root.data)
    else:
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=root.data.dtype)
        if grad.shape != root.data.shape:
            raise RuntimeError(
                f"gradient of shape {grad.shape} does not match output of shape {root.data.shape}"
            )

    if recording.active is not None and not recording.active.paused:
        recording.active.backward(root, gradient_given, retain_graph)  # lw.compile's capture
    with backward_pass():
        _walk(root._graph_ref(), grad, retain_graph)


def _walk(root, grad, retain_graph):
    """The backward loop over the graph from ``root`` with gradient ``grad``."""
    grads = {id(root): grad}
    handed_out = set()  # ids of arrays already stored as some leaf's .grad in this pass
    order = topological_order(root)
    uses = _hooked_leaf_uses(order) if hooks_registered else None
    for entry in reversed(order):
        g = grads.pop(id(entry), None)
        ctx = entry._ctx
        if ctx is None:  # a leaf Tensor
            if g is not None:
                _accumulate_leaf(entry, g, handed_out)
            continue
        if g is None:
            continue
        tensor = entry.tensor()  # None once the caller has dropped it
        if tensor is not None and tensor._retains_grad:
            _accumulate_leaf(tensor, g, handed_out)
        if ctx.parents is None:
            raise RuntimeError(
                "trying to backward through the graph a second time; its saved values were "
                "freed. Pass retain_graph=True to the first backward() if you need this."
            )
        input_grads = run_backward(ctx, g, retain_graph)
        route_grads(grads, [id(parent) for parent in ctx.parents], ctx.needs_input_grad,
                    input_grads)
        if uses:
            _accumulate_finished_leaves(ctx.parents, uses, grads, handed_out)
        if not retain_graph:
            _free(ctx)


# Whether any leaf has ever had a post-accumulate-grad hook: until then backward skips the
# pass that finds them.
hooks_registered = False


def _hooked_leaf_uses(order):
    """{id(leaf): the number of recorded ops that take it} for the leaves with post-accumulate-
    grad hooks. Such a leaf gets its gradient (and its hooks run) as soon as the last of those
    ops has run its backward, not where the topological order places the leaf itself: that
    can be after every other node (the first layer's weight before the output layer's), and a
    data-parallel bucket could then start no allreduce before backward ends."""
    uses = {}
    for entry in order:
        ctx = entry._ctx
        if ctx is None or ctx.parents is None:
            continue
        for parent in ctx.parents:
            if parent._ctx is None and parent._post_accumulate_grad_hooks:
                uses[id(parent)] = uses.get(id(parent), 0) + 1
    return uses


def _accumulate_finished_leaves(parents, uses, grads, handed_out):
    """Accumulate each hooked leaf among ``parents`` whose last consumer has just run; its
    own turn in the order then finds no gradient left to add."""
    for parent in parents:
        key = id(parent)
        if key in uses:
            uses[key] -= 1
            if uses[key] == 0:
                g = grads.pop(key, None)
                if g is not None:
                    _accumulate_leaf(parent, g, handed_out)


def run_backward(ctx, g, retain_graph):
    """One node's backward: the gradients of its inputs, as a tuple (None where not needed)."""
    ctx.retains_graph = retain_graph
    input_grads = ctx.backward(g)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if anomaly._enabled:
        for pg in input_grads:
            anomaly.check_finite(pg, type(ctx).__name__, "backward")
    return input_grads


def route_grads(grads, keys, needs_input_grad, input_grads):
    """Add each needed input gradient into ``grads`` under its input's key, in input order
    (the order of the sums is part of the result's bits; lw.compile's replay relies on it)."""
    for key, needs, pg in zip(keys, needs_input_grad, input_grads):
        if not needs or pg is None:
            continue
        previous = grads.get(key)
        grads[key] = pg if previous is None else previous + pg


class _Pass(threading.local):
    """The callbacks queued for the end of this thread's backward pass under way (None
    outside one)."""

    callbacks = None


_pass = _Pass()


@contextlib.contextmanager
def backward_pass():
    """One backward pass: runs what ``queue_callback`` queued once the body has finished
    (not when it raised). A backward started from a hook is a pass of its own."""
    outer, _pass.callbacks = _pass.callbacks, []
    try:
        yield
        queued = _pass.callbacks
    finally:
        _pass.callbacks = outer
    for callback in queued:  # after restoring: a callback may run a backward of its own
        callback()


def queue_callback(callback):
    """Run ``callback()`` when the backward pass under way finishes (PyTorch's
    ``Variable._execution_engine.queue_callback``): for hooks that act once per backward."""
    if _pass.callbacks is None:
        raise RuntimeError("queue_callback() is for hooks that run during backward(); no "
                           "backward pass is under way")
    _pass.callbacks.append(callback)


class _Sink(threading.local):
    """Where this thread's backward passes put leaf gradients instead of ``.grad``: None, or a
    dict id(tensor) -> (tensor, gradient) while layerwise.parallel runs half a batch here, so
    that two threads never add into the same ``.grad`` at once."""

    grads = None


sink = _Sink()


def _accumulate_leaf(tensor, g, handed_out):
    """Store or add ``g`` into ``tensor.grad`` (or into this thread's sink).

    A backward may hand out a read-only broadcast view, a view of another array, or the very
    array it gave another input (Add passes ``g`` to both). ``.grad`` must own its memory,
    because optimizers and gradient clipping write into it in place, so those are copied.
    """
    from layerwise.autograd.tensor import Tensor

    if sink.grads is not None:
        _, previous = sink.grads.get(id(tensor), (None, None))
        sink.grads[id(tensor)] = (tensor, g if previous is None else previous + g)
        return
    if tensor.grad is not None:
        tensor.grad = Tensor(tensor.grad.data + g.astype(tensor.data.dtype, copy=False))
    else:
        if g.dtype != tensor.data.dtype:
            g = g.astype(tensor.data.dtype)
        elif not g.flags.writeable or g.base is not None or id(g) in handed_out:
            g = g.copy()
        handed_out.add(id(g))
        tensor.grad = Tensor(g)
    hooks = tensor._post_accumulate_grad_hooks
    if hooks:
        for hook in list(hooks.values()):
            hook(tensor)


def _free(ctx):
    """Drop what backward saved, keep the parents list as a marker that this node is spent."""
    ctx.__dict__.clear()
    ctx.parents = None
