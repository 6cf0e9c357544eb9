"""From a model and an example input to an ONNX ModelProto: trace, line up, emit.

    traces = trace_all(...)     # the example, then one run per dynamic axis grown by one
    for each op, in order:      # the traces agree on which ops ran
        inputs  -> Values       # earlier outputs, graph inputs, parameters, constants
        params  -> merged       # ints that changed with an axis become Varying
        emitter(g, op) -> name  # table.py: one or a few ONNX nodes
    outputs -> Identity nodes named as the caller asked

The emitters live in emit_*.py; importing them fills the table.
"""

from onnx import helper

from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp
from layerwise.nn.module import Module
from layerwise.onnx import emit_layers, emit_math, emit_rnn, emit_shape  # noqa: F401 (the table)
from layerwise.onnx.graph import Graph, Value, elem_type, make_model
from layerwise.onnx.shapes import Dim, Mismatch, Sizes, ValueDependent, merge, settle
from layerwise.onnx.table import Op, emitter_of
from layerwise.onnx.trace import ExportError, eval_mode, trace_all, where

MIN_OPSET = 17  # LayerNormalization, and Shape's start/end
MAX_OPSET = 21  # the last opset of ONNX IR version 9, which the file is written as


def build(fn, example_input, module=None, input_names=None, output_names=None,
          dynamic_batch=True, dynamic_axes=None, opset=MIN_OPSET):
    """The ModelProto of ``fn`` (a Module or function of Tensors) on inputs like the example;
    ``module`` names the parameters (``fn`` itself when it is a Module)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not \
            MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be an int from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    if module is None and isinstance(fn, Module):
        module = fn
    if not callable(fn):
        raise TypeError(f"export needs a model (an nn.Module or a function of Tensors), got "
                        f"{type(fn).__name__}")
    inputs = _as_tensors(example_input)
    input_names = _names(input_names, len(inputs), "input", "input_names")
    symbols = _symbols(inputs, input_names, dynamic_batch, dynamic_axes)
    module_names = {id(m): name for name, m in module.named_modules()} if module else {}
    sizes = Sizes([inputs[occ[0][0]].shape[occ[0][1]] for _, occ in symbols])
    with eval_mode(module):
        traces = trace_all(fn, inputs, symbols, Sizes.GROWTHS, module_names)
    base = traces[0]
    if not base.outputs:
        raise ExportError("cannot export: the model returned no Tensor")
    output_names = _names(output_names, len(base.outputs), "output", "output_names")
    clash = set(input_names) & set(output_names)
    if clash:
        raise ExportError(f"input_names and output_names share {sorted(clash)}; give each "
                          "value its own name")
    params = _parameter_names(module)
    g = Graph(opset, sizes, [(input_names[occ[0][0]], occ[0][1]) for _, occ in symbols],
              reserved=set(params.values()) | set(input_names) | set(output_names))
    g.param_names = params
    graph_inputs = []
    for i, name in enumerate(input_names):
        shapes = [tuple(trace.inputs[i].shape) for trace in traces[:sizes.traces()]]
        value = Value(name, inputs[i].dtype, sizes.shape(shapes), shapes)
        g.values[id(inputs[i])] = value
        g.arrays[id(inputs[i].data)] = value
        graph_inputs.append(helper.make_tensor_value_info(
            name, elem_type(value.dtype), _dims(value.shape, symbols)))
    for index in range(len(base.calls)):
        _emit(g, [trace.calls[index] for trace in traces], module_names)
    outputs = []
    for o, name in enumerate(output_names):
        value = g.value([trace.outputs[o] for trace in traces], f"output {name!r}")
        g.nodes.append(helper.make_node("Identity", [value.name], [name]))
        outputs.append((name, helper.make_tensor_value_info(
            name, elem_type(value.dtype), _dims(value.shape, symbols))))
    label = type(module).__name__ if module is not None else getattr(fn, "__name__", "model")
    return make_model(g, graph_inputs, outputs, opset, f"layerwise_{label}")


def _emit(g, calls, module_names):
    """Write one op (given as it ran in each trace) into ``g``."""
    call = calls[0]
    kind = call.op
    at = where(call.module, module_names)
    emit = emitter_of(kind)
    if emit is None:
        raise ExportError(f"cannot export: op '{kind.__name__}' ({at}) has no ONNX form; "
                          f"lw.onnx.supported_ops() lists the ops that export, and "
                          f"lw.onnx.register_op adds one")
    what = f"op '{kind.__name__}' ({at})"
    inputs = [g.value([c.inputs[p] for c in calls], what) for p in range(len(call.inputs))]
    params, n = {}, g.sizes.traces()
    for key in call.params:
        values = [c.params[key] for c in calls]
        try:
            params[key] = settle(merge(values), n)
        except ValueDependent:
            raise ExportError(f"cannot export: {what} has {key}={_short(values[0])}, computed "
                              "from the input's values (it differs when they are reversed), "
                              "so a graph would freeze it; compute it with ops") from None
        except Mismatch:
            raise ExportError(f"cannot export: {what} has {key}={_short(values[0])} on the "
                              f"example but {_short(_other(values))} on a longer or reversed "
                              "copy of it, which no size formula explains; export with "
                              "dynamic_batch=False (and no dynamic_axes), or compute it with "
                              "ops") from None
    shapes = [tuple(c.out.shape) for c in calls[:n]]
    out = Value(None, call.out.dtype, g.sizes.shape(shapes), shapes)
    out.name = emit(g, Op(kind, inputs, params, out, at, g))
    g.values[id(call.out)] = out
    g.arrays[id(call.out.data)] = out  # reached again through .detach() or Tensor(out.data)


def _other(values):
    """The first of ``values`` that is not the first (by repr: they may be arrays)."""
    return next((v for v in values[1:] if repr(v) != repr(values[0])), values[-1])


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_tensors(example):
    items = example if isinstance(example, (tuple, list)) else (example,)
    if not items:
        raise ExportError("cannot export: example_input is empty; give a Tensor or array "
                          "shaped like the model's input, or a tuple of them")
    tensors = []
    for item in items:
        if isinstance(item, Tensor):
            tensors.append(Tensor(item.data))  # no graph, and an identity of its own
        elif isinstance(item, xp.ndarray):
            tensors.append(Tensor(item))
        else:
            raise ExportError(f"cannot export: example_input holds a {type(item).__name__}; "
                              "give Tensors or arrays (a tuple of them for several inputs)")
    return tensors


def _names(names, count, stem, option):
    if names is None:
        return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]
    names = list(names) if isinstance(names, (tuple, list)) else None
    if names is None or len(names) != count or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != count:
        raise ExportError(f"{option} must be a list of {count} distinct non-empty strings (one "
                          f"per {stem}), got {names!r}")
    return names


def _symbols(inputs, names, dynamic_batch, dynamic_axes):
    """[(symbol name, [(input index, axis), ...]), ...] in order of first appearance."""
    wanted = {}
    if dynamic_batch:
        for i in range(len(inputs)):
            wanted.setdefault(i, {})[0] = "batch"
    if dynamic_axes is not None:
        if not isinstance(dynamic_axes, dict):
            raise ExportError(f"dynamic_axes must be a dict {{input name: {{axis: name}}}}, got "
                              f"{type(dynamic_axes).__name__}")
        for key, axes in dynamic_axes.items():
            if key not in names:
                raise ExportError(f"dynamic_axes names input {key!r}; the inputs are {names}")
            if not isinstance(axes, dict):
                axes = {a: f"{key}_axis{a}" for a in axes}
            wanted.setdefault(names.index(key), {}).update(axes)
    symbols = {}
    for i, axes in sorted(wanted.items()):
        for axis, symbol in sorted(axes.items()):
            rank = inputs[i].ndim
            if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
                raise ExportError(f"input {names[i]!r} of shape {tuple(inputs[i].shape)} has no "
                                  f"axis {axis!r} to make dynamic")
            symbols.setdefault(symbol, []).append((i, axis % rank))
    for symbol, occurrences in symbols.items():
        found = {inputs[i].shape[axis] for i, axis in occurrences}
        if len(found) > 1:
            raise ExportError(f"the {symbol!r} axes of the inputs have different sizes "
                              f"{sorted(found)}; give inputs of one {symbol} size, or export "
                              "with dynamic_batch=False")
        if found == {0}:
            raise ExportError(f"the example's {symbol!r} axis is empty; give at least one")
    return list(symbols.items())


def _parameter_names(module):
    """id(Tensor) and id(its array) -> name, for every parameter and buffer of ``module``."""
    names = {}
    if module is None:
        return names
    for name, tensor in list(module.named_buffers()) + list(module.named_parameters()):
        names.setdefault(id(tensor), name)
        names.setdefault(id(tensor.data), name)
    return names


def _dims(shape, symbols):
    """A value's shape for the model's signature: ints, symbol names, None where unnamed."""
    if shape is None:
        return None
    out = []
    for s in shape:
        if isinstance(s, Dim):
            out.append(symbols[s.symbols[0]][0] if s.coef == 1 and len(s.symbols) == 1
                       else None)
        else:
            out.append(s)
    return out
