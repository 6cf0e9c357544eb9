"""ONNX export under its interop names; the exporter itself is ``layerwise.onnx``.

    export_onnx(model, "mlp.onnx", example_input=lw.randn(1, 1, 28, 28))
    # onnxruntime.InferenceSession("mlp.onnx").run(None, {"input": x})[0]

``layerwise.onnx`` traces the ops a model runs, so any model of supported ops exports (not
only the module types a converter was written for); the batch axis is dynamic.
"""

from layerwise import onnx as lw_onnx

OPSET = lw_onnx.DEFAULT_OPSET


def to_onnx(model, example_input, input_name="input", output_name="output", opset=OPSET):
    """The onnx.ModelProto for ``model`` applied to inputs shaped like ``example_input``."""
    return lw_onnx.to_onnx(model, example_input, input_names=[input_name],
                           output_names=[output_name], opset=opset)


def export_onnx(model, path, example_input, input_name="input", output_name="output",
                opset=OPSET, overwrite=False):
    """Write ``model`` as an ONNX file at ``path``; returns the ModelProto."""
    return lw_onnx.export(model, example_input, path, input_names=[input_name],
                          output_names=[output_name], opset=opset, overwrite=overwrite)
