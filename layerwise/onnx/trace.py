"""Run a model and record every op that runs, with the module it ran in.

Every op goes through ``Function.apply``, which tells ``recording.observer`` the class that ran
(a fast path or its reference), the input Tensors, the parameters and the output Tensor. The
module an op ran in comes from the global module hooks: a pre-hook pushes the module, a
forward hook pops it. The model runs in eval mode (Dropout the identity, BatchNorm on its
running statistics) and without a graph; each module's training flag is put back afterwards.

For dynamic axes the model runs again with each dynamic axis longer (rows of the example
repeated), and once more on the example's values reversed; the records are lined up op by op.
They must hold the same ops in the same order: a forward that branches on a dynamic size, or
on the input's values, cannot be written as one graph.
"""

import threading

from layerwise.autograd import recording
from layerwise.autograd.grad_mode import no_grad
from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp
from layerwise.errors import LayerwiseError
from layerwise.nn.module import (
    Module,
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from layerwise.ops.fast.path import FastPath


class ExportError(LayerwiseError, ValueError):
    """A model, input or option that cannot be exported; the message is one line."""


class Call:
    """One op that ran: its reference class, inputs, parameters, output and module."""

    __slots__ = ("inputs", "module", "op", "out", "params")

    def __init__(self, op, inputs, params, out, module):
        self.op, self.inputs, self.params, self.out, self.module = op, inputs, params, out, module


class Trace:
    """The calls of one run, its input Tensors and its output Tensors (flattened)."""

    def __init__(self, calls, inputs, outputs):
        self.calls, self.inputs, self.outputs = calls, inputs, outputs


def reference_of(cls):
    """The reference Function of the class that ran (a fast path derives from it)."""
    return cls.reference() if issubclass(cls, FastPath) else cls


def record(fn, inputs):
    """Run ``fn(*inputs)`` once without a graph; returns its Trace."""
    if recording.observer is not None:
        raise RuntimeError("an ONNX export is already tracing in this process; export one "
                           "model at a time")
    calls, stack, me = [], [], threading.get_ident()

    def observe(cls, tensors, params, out):
        if threading.get_ident() == me:  # a server thread's ops are not this model's
            calls.append(Call(reference_of(cls), tensors, params, out,
                              stack[-1] if stack else None))

    def enter(module, args):
        if threading.get_ident() == me:
            stack.append(module)

    def leave(module, args, output):
        if threading.get_ident() == me and stack:
            stack.pop()

    pre, post = register_module_forward_pre_hook(enter), register_module_forward_hook(leave)
    recording.observer = observe
    try:
        with no_grad():
            result = fn(*inputs)
    finally:
        recording.observer = None
        pre.remove()
        post.remove()
    return Trace(calls, inputs, _flatten(result))


def _flatten(result):
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [t for part in result for t in _flatten(part)]
    if result is None:
        return []
    raise ExportError(f"cannot export: the model returned a {type(result).__name__}; export "
                      "needs a Tensor, or a tuple or list of Tensors (None entries are left out)")


class eval_mode:
    """Every module of ``model`` in eval mode inside the block, each flag restored after."""

    def __init__(self, model):
        self.modules = [m for _, m in model.named_modules()] if isinstance(model, Module) else []

    def __enter__(self):
        self.flags = [m.training for m in self.modules]
        for m in self.modules:
            m.training = False

    def __exit__(self, *exc):
        for m, flag in zip(self.modules, self.flags):
            m.training = flag


def grown(inputs, occurrences, by):
    """The inputs with each (input, axis) in ``occurrences`` longer by ``by``: the example's
    first rows along that axis repeated at the end, so token ids stay valid ids."""
    out = list(inputs)
    for i, axis in occurrences:
        data = out[i].data
        n = data.shape[axis]
        out[i] = Tensor(xp.take(data, xp.arange(n + by) % n, axis=axis))
    return out


def reversed_values(inputs):
    """The inputs with their values in reverse order along every axis: the same shapes and
    the same kind of values (valid ids stay valid ids), but other data."""
    return [Tensor(xp.ascontiguousarray(t.data[(slice(None, None, -1),) * t.ndim]))
            for t in inputs]


def trace_all(fn, inputs, symbols, growths, names):
    """The traces of the example, of the example with each symbol's axes grown by each of
    ``growths``, and of the example's values reversed (last), lined up op by op.

    ``symbols``: [(name, [(input index, axis), ...]), ...]."""
    base = record(fn, inputs)
    traces = [base]
    for name, occurrences in symbols:
        i, axis = occurrences[0]
        size = inputs[i].shape[axis]
        for by in growths:
            change = f"{name} {size} and {size + by}"
            try:
                trace = record(fn, grown(inputs, occurrences, by))
            except Exception as err:  # noqa: BLE001 (whatever the model raises, said in one line)
                raise ExportError(f"cannot export with a dynamic {name!r} axis: the model fails "
                                  f"when it grows from {size} to {size + by} ({_reason(err)}); "
                                  f"{_fix(name)}") from None
            _line_up(base, trace, change, _fix(name), names)
            traces.append(trace)
    fix = ("a value that decides which ops run cannot be exported; pass the decision as an "
           "argument (a fixed model), or compute it with ops")
    try:
        trace = record(fn, reversed_values(inputs))
    except Exception as err:  # noqa: BLE001 (whatever the model raises, said in one line)
        raise ExportError(f"cannot export: the model fails on the example's values reversed "
                          f"({_reason(err)}), which export runs to find what depends on "
                          "the values; give an example whose reversal is valid input") from None
    _line_up(base, trace, "the example's values and the same reversed", fix, names)
    traces.append(trace)
    return traces


def _reason(err):
    return (str(err).splitlines() or [type(err).__name__])[0]


def _fix(symbol):
    if symbol == "batch":
        return "export with dynamic_batch=False for a fixed batch size"
    return f"leave {symbol!r} out of dynamic_axes"


def _line_up(base, other, change, fix, names):
    """Raise unless ``other`` ran the same ops as ``base`` in the same order; ``change``
    says what differs between the two runs."""
    if len(other.outputs) != len(base.outputs):
        raise ExportError(f"cannot export: the model returns {len(base.outputs)} and "
                          f"{len(other.outputs)} tensors for {change}; {fix}")
    for index, (a, b) in enumerate(zip(base.calls, other.calls)):
        if a.op is not b.op or len(a.inputs) != len(b.inputs) or set(a.params) != set(b.params):
            raise ExportError(f"cannot export: op {index} is {a.op.__name__} "
                              f"({where(a.module, names)}) for one and {b.op.__name__} for the "
                              f"other of {change}, so the forward branches on them; {fix}")
    if len(base.calls) != len(other.calls):
        raise ExportError(f"cannot export: the model runs {len(base.calls)} and "
                          f"{len(other.calls)} ops for {change}, so the forward branches on "
                          f"them; {fix}")


def where(module, names):
    """'in features.3, a MyBlock' for an op's module; ``names``: id(module) -> its name."""
    if module is None:
        return "outside any module"
    kind = type(module).__name__
    name = names.get(id(module))
    if name is None:
        return f"in a {kind}"
    return f"in the model itself, a {kind}" if name == "" else f"in {name}, a {kind}"
