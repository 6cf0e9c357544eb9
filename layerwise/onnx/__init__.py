"""ONNX export of any model, by tracing the ops that ran.

    import layerwise as lw
    lw.onnx.export(model, example_input, "model.onnx")
    # onnxruntime.InferenceSession("model.onnx").run(None, {"input": x})[0] == model(x)

The model runs once on the example in eval mode without a graph, and every op it runs
(``Function.apply`` reports each one) becomes one or a few ONNX nodes (opset 17 by default):
custom modules, residual adds, Python loops, LSTM / GRU layers, adaptive pooling and attention
export alike, because what is recorded is the arithmetic, not the module types. Parameters
and buffers become initializers under their module names; constants made inside forward
(a causal mask, zeros for an initial state) become initializers too.

The first axis of every input is dynamic ("batch"): the model runs once more with it one
longer, and every size that scales with it (a reshape to (B, T, nh, hs), a slice of B*T*H
values) is written from the input's runtime shape. ``dynamic_axes={"input": {1: "sequence"}}``
makes more axes dynamic the same way (torch.onnx.export's spelling). A forward whose ops change
with the size, or a constant that changes with it in a way its shape does not explain (one
made from the input's values outside layerwise's ops), is refused in one line naming why.

An op with no ONNX form raises one line naming the op and the module it ran in, e.g.
``cannot export: op 'CrossEntropy' (in the model itself, a Net) has no ONNX form``;
``supported_ops()`` lists the ops that export and ``register_op`` adds one.
"""

import os

from layerwise.errors import LayerwiseError
from layerwise.onnx import table
from layerwise.onnx.trace import ExportError

DEFAULT_OPSET = 17


class MissingOnnx(LayerwiseError, ModuleNotFoundError):
    """The ``onnx`` package is not installed."""


def _builder():
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError:
        raise MissingOnnx("ONNX export needs the 'onnx' package: `uv sync --group dev` (or "
                          "`pip install onnx`)") from None
    from layerwise.onnx import build

    return build


def to_onnx(model, example_input, *, input_names=None, output_names=None, dynamic_batch=True,
            dynamic_axes=None, opset=DEFAULT_OPSET, module=None):
    """The ``onnx.ModelProto`` of ``model`` (an nn.Module, or a function of Tensors) applied to
    inputs like ``example_input`` (a Tensor or array, or a tuple of them). Inputs are named
    ``input`` (``input_0``, ... for several) and outputs ``output`` (``output_0``, ...) unless
    ``input_names`` / ``output_names`` say otherwise; a model returning a tuple has one output
    per Tensor in it (None entries are left out). For a function that calls a model,
    ``module=model`` names the initializers after its parameters and puts it in eval mode."""
    return _builder().build(model, example_input, module, input_names, output_names,
                            dynamic_batch, dynamic_axes, opset)


def export(model, example_input, path, *, input_names=None, output_names=None,
           dynamic_batch=True, dynamic_axes=None, opset=DEFAULT_OPSET, module=None,
           overwrite=False):
    """Write ``model`` as an ONNX file at ``path`` (see ``to_onnx``) and return the ModelProto.
    An existing file is replaced only with ``overwrite=True``."""
    from layerwise.serialization import write_bytes_atomic

    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    proto = to_onnx(model, example_input, input_names=input_names, output_names=output_names,
                    dynamic_batch=dynamic_batch, dynamic_axes=dynamic_axes, opset=opset,
                    module=module)
    write_bytes_atomic(path, proto.SerializeToString())
    return proto


def supported_ops():
    """The names of the layerwise ops that export, sorted."""
    _builder()
    return table.supported_ops()


def register_op(function_class, emit):
    """Teach the exporter a layerwise op (a ``Function`` subclass): ``emit(g, op) -> name``
    appends its nodes with ``g.op(op_type, input_names, **attributes)`` and returns the name
    of the output; see layerwise/onnx/table.py for what ``op`` holds."""
    from layerwise.autograd.function import Function

    if not (isinstance(function_class, type) and issubclass(function_class, Function)):
        raise TypeError(f"register_op needs a Function subclass, got {function_class!r}")
    if not callable(emit):
        raise TypeError(f"register_op needs a function emit(g, op), got {type(emit).__name__}")
    _builder()  # the built-in emitters first, so that this one is not overwritten later
    table.EMITTERS[function_class] = emit


__all__ = ["ExportError", "MissingOnnx", "export", "register_op", "supported_ops", "to_onnx"]
