"""The table from layerwise op class to the function that writes it as ONNX nodes.

An emitter is ``emit(g, op) -> name``: ``g`` the Graph (graph.py), ``op`` one recorded call
with ``op.inputs`` (the Values of its input Tensors), ``op.params`` (its parameters as the
traces agree on them: ints, ``Varying`` ints, ``ArrayParam`` arrays, see shapes.py) and
``op.out`` (the Value its output will be: dtype, symbolic shape); it returns the name of the
ONNX value that holds the op's output. A fast path finds its reference's emitter (the table is
searched along the class's MRO).
"""

from layerwise.onnx.shapes import ArrayParam, TensorParam
from layerwise.onnx.trace import ExportError

EMITTERS = {}


def emits(*classes):
    """Decorator: the function emits ops of ``classes``."""
    def register(fn):
        for cls in classes:
            EMITTERS[cls] = fn
        return fn
    return register


def emitter_of(cls):
    for c in cls.__mro__:
        if c in EMITTERS:
            return EMITTERS[c]
    return None


def supported_ops():
    """The names of the layerwise ops that export, sorted."""
    return sorted(cls.__name__ for cls in EMITTERS)


class Op:
    """One recorded call, as an emitter sees it."""

    __slots__ = ("graph", "inputs", "kind", "out", "params", "where")

    def __init__(self, kind, inputs, params, out, where, graph):
        self.kind, self.inputs, self.params, self.out = kind, inputs, params, out
        self.where, self.graph = where, graph

    @property
    def name(self):
        return self.kind.__name__

    def refuse(self, reason):
        raise ExportError(f"cannot export: op '{self.name}' ({self.where}) {reason}")

    def array(self, param):
        """The Value of an array or Tensor parameter."""
        if isinstance(param, TensorParam):
            return self.graph.value(param.tensors, f"op '{self.name}' ({self.where})")
        if isinstance(param, ArrayParam):
            return self.graph.array(param.arrays, f"op '{self.name}' ({self.where})")
        raise TypeError(f"{self.name}: expected an array parameter, got {type(param).__name__}")

    def static(self, value, what):
        """``value`` as a plain int; refuses one that changes with a dynamic axis."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.refuse(f"has a {what} that changes with a dynamic axis; export with "
                    "dynamic_batch=False")
