"""The ONNX graph under construction, and which ONNX value stands for each layerwise Tensor.

``Graph`` hands out fresh names, appends nodes, keeps initializers, and writes sizes as int64
tensors: a static size is a constant, a ``Dim`` a product of the inputs' runtime sizes
(``Shape`` of the input that carries the symbol, times the coefficient).

``Graph.value`` finds the ONNX value of a Tensor an op reads, in this order: the output of an
earlier op; a graph input; a parameter or buffer of the model (an initializer under its module
name); otherwise a constant that forward made (a mask, zeros for an initial state, positions),
which becomes an initializer if it is the same in every trace, and otherwise must be one of
the shapes a constant can take that follows the dynamic axes:
    filled with one value   -> ConstantOfShape of its (dynamic) shape
    0, 1, ..., n - 1        -> Range(0, n)
    a single number n       -> n from the input's shape, cast
Anything else changes with the input in a way only its data explains (a mask computed from
the input's values outside layerwise's ops), and is refused rather than frozen.
"""

import onnx
from onnx import helper, numpy_helper

from layerwise.backend import xp
from layerwise.onnx.shapes import Dim
from layerwise.onnx.trace import ExportError

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
# opset 18 moved the axes of ReduceMean, ReduceMax, ... from an attribute to an input
REDUCE_AXES_AS_INPUT = 18


def elem_type(dtype):
    return helper.np_dtype_to_tensor_dtype(xp.dtype(dtype))


class Value:
    """An ONNX value: its name, dtype, symbolic shape and the shape it had in each trace."""

    __slots__ = ("dtype", "name", "shape", "shapes")

    def __init__(self, name, dtype, shape, shapes):
        self.name, self.dtype, self.shape, self.shapes = name, xp.dtype(dtype), shape, shapes

    @property
    def rank(self):
        return len(self.shapes[0])


class Graph:
    def __init__(self, opset, sizes, symbol_axes, reserved=()):
        self.opset, self.sizes = opset, sizes
        self.symbol_axes = symbol_axes  # symbol k -> (graph input name, axis)
        self.nodes, self.initializers = [], []
        self._taken, self._count = set(reserved), 0
        self._symbol_names, self._consts = {}, {}
        self.values = {}  # id(Tensor) -> Value: graph inputs and op outputs
        self.param_names = {}  # id(Tensor or its array) -> the parameter's or buffer's name
        self._params = {}  # name -> Value, once made an initializer
        self.arrays = {}  # id(the array of a graph input or op output) -> its Value

    # --- names, nodes, initializers --------------------------------------------------------
    def fresh(self, hint):
        while True:
            self._count += 1
            name = f"{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def op(self, op_type, inputs, hint=None, **attrs):
        """Append a node with one output; returns the output's name."""
        return self.ops(op_type, inputs, 1, hint, **attrs)[0]

    def ops(self, op_type, inputs, n_out, hint=None, **attrs):
        outs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def initializer(self, array, name):
        array = xp.asarray(array)  # C order, kept 0-d (ascontiguousarray would make it 1-d)
        self.initializers.append(numpy_helper.from_array(
            array if array.flags.c_contiguous else array.copy(order="C"), name))
        return name

    def const(self, array, hint="const"):
        """A constant array as an initializer (one per distinct array object)."""
        array = xp.asarray(array)
        key = id(array)
        found = self._consts.get(key)
        if found is not None and found[0] is array:
            return found[1]
        name = self.initializer(array, self.fresh(hint))
        self._consts[key] = (array, name)  # the array is kept, so its id stays its own
        return name

    def scalar(self, value, dtype):
        return self.const(xp.asarray(value, dtype=dtype), "scalar")

    # --- sizes ----------------------------------------------------------------------------
    def symbol(self, k):
        """The runtime size of symbol k as an int64 tensor of shape (1,)."""
        name = self._symbol_names.get(k)
        if name is None:
            source, axis = self.symbol_axes[k]
            name = self.op("Shape", [source], "size", start=axis, end=axis + 1)
            self._symbol_names[k] = name
        return name

    def dim(self, dim):
        """An int or Dim as an int64 tensor of shape (1,)."""
        if not isinstance(dim, Dim):
            return self.const(xp.array([dim], dtype=xp.int64), "size")
        out = None
        for k in dim.symbols:
            out = self.symbol(k) if out is None else self.op("Mul", [out, self.symbol(k)])
        if dim.coef != 1:
            out = self.op("Mul", [out, self.const(xp.array([dim.coef], dtype=xp.int64))])
        return out

    def ints(self, sizes):
        """A 1-D int64 tensor of ints and Dims: a constant when every entry is an int."""
        sizes = list(sizes)
        if all(not isinstance(s, Dim) for s in sizes):
            return self.const(xp.array(sizes, dtype=xp.int64), "sizes")
        pieces, run = [], []
        for s in sizes:
            if isinstance(s, Dim):
                if run:
                    pieces.append(self.const(xp.array(run, dtype=xp.int64), "sizes"))
                    run = []
                pieces.append(self.dim(s))
            else:
                run.append(s)
        if run:
            pieces.append(self.const(xp.array(run, dtype=xp.int64), "sizes"))
        return self.op("Concat", pieces, "sizes", axis=0)

    def target_shape(self, shape):
        """A shape for Reshape: the one dynamic entry as -1 (Reshape infers it), or several
        computed from the inputs' sizes."""
        dynamic = [i for i, s in enumerate(shape) if isinstance(s, Dim)]
        if len(dynamic) == 1:
            shape = list(shape)
            shape[dynamic[0]] = -1
        return self.ints(shape)

    def reduce(self, op_type, x, axes, keepdims):
        """ReduceMean / ReduceMax / ... over ``axes``, the axes where this opset wants them."""
        axes = [int(a) for a in axes]
        if self.opset >= REDUCE_AXES_AS_INPUT or op_type == "ReduceSum":
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=axes, keepdims=int(keepdims))

    def cast(self, value, dtype):
        """The name of ``value`` (a Value) as ``dtype``."""
        if value.dtype == xp.dtype(dtype):
            return value.name
        return self.op("Cast", [value.name], to=elem_type(dtype))

    # --- what each Tensor is in the graph ---------------------------------------------------
    def value(self, tensors, what):
        """The Value of the Tensor an op reads, given that Tensor in every trace."""
        first = tensors[0]
        found = self.values.get(id(first)) or self.arrays.get(id(first.data))
        if found is not None:
            return found
        name = self.param_names.get(id(first)) or self.param_names.get(id(first.data))
        if name is not None:
            return self._param(name, first.data)
        return self.array([t.data for t in tensors], what)

    def array(self, arrays, what):
        """The Value of an array an op reads as a parameter (a mask, indices), per trace."""
        first = arrays[0]
        found = self.arrays.get(id(first))
        if found is not None:
            return found
        name = self.param_names.get(id(first))
        if name is not None:
            return self._param(name, first)
        return self._constant(arrays, what)

    def _param(self, name, array):
        found = self._params.get(name)
        if found is None:
            found = Value(self.initializer(array, name), array.dtype, tuple(array.shape),
                          [tuple(array.shape)] * self.sizes.traces())
            self._params[name] = found
        return found

    def _constant(self, arrays, what):
        arrays, checks = arrays[:self.sizes.traces()], arrays[self.sizes.traces():]
        first = arrays[0]
        if any(not _same(a, first) for a in checks):
            raise ExportError(f"cannot export: {what} reads a constant of shape "
                              f"{tuple(first.shape)} that forward computed from the input's "
                              "values outside layerwise's ops (through .data, numpy, argmax, "
                              "...), so a graph would freeze it; compute it with ops, or pass "
                              "it to the model as an input")
        shapes = [tuple(a.shape) for a in arrays]
        if all(_same(a, first) for a in arrays[1:]):
            return Value(self.const(first), first.dtype, shapes[0], shapes)
        shape = self.sizes.shape(shapes)
        if shape is not None and all(s is not None for s in shape):
            if all(a.size and _uniform(a, first.flat[0]) for a in arrays):
                fill = numpy_helper.from_array(xp.asarray([first.flat[0]], dtype=first.dtype))
                name = self.op("ConstantOfShape", [self.ints(shape)], value=fill)
                return Value(name, first.dtype, shape, shapes)
            if first.ndim == 1 and all(_is_arange(a) for a in arrays):
                count = self.op("Squeeze", [self.dim(shape[0]), self.ints([0])])
                start, step = (self.const(xp.array(v, dtype=xp.int64)) for v in (0, 1))
                name = self.op("Range", [start, count, step])
                return Value(self.cast(Value(name, xp.int64, shape, shapes), first.dtype),
                             first.dtype, shape, shapes)
        if all(a.size == 1 for a in arrays):
            number = self.sizes.fit([_as_int(a) for a in arrays])
            if isinstance(number, Dim):
                size = Value(self.op("Reshape", [self.dim(number), self.ints(first.shape)]),
                             xp.int64, shapes[0], shapes)
                return Value(self.cast(size, first.dtype), first.dtype, shapes[0], shapes)
        raise ExportError(f"cannot export with dynamic axes: {what} reads a constant of shape "
                          f"{shapes[0]} made inside forward that changes with the input's size "
                          "in a way no ONNX size formula here follows; compute it with ops, or "
                          "export with dynamic_batch=False (and no dynamic_axes)")


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        xp.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _uniform(a, value):
    if a.dtype.kind in "fc" and xp.isnan(value):
        return bool(xp.isnan(a).all())
    return bool((a == value).all())


def _is_arange(a):
    return a.dtype.kind in "iuf" and bool((a == xp.arange(a.shape[0])).all())


def _as_int(a):
    value = a.reshape(-1)[0]
    try:
        return int(value) if value == int(value) else None
    except (ValueError, OverflowError):  # nan, inf
        return None


def make_model(graph, inputs, outputs, opset, name):
    """The ModelProto of ``graph`` with only the nodes and initializers the outputs need."""
    needed = {out for out, _ in outputs}
    nodes = []
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
    nodes.reverse()
    initializers = [t for t in graph.initializers if t.name in needed]
    proto = helper.make_model(
        helper.make_graph(nodes, name, inputs, [info for _, info in outputs],
                          initializer=initializers),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="layerwise")
    proto.ir_version = min(proto.ir_version, 9)  # runnable by onnxruntime releases of 2024 on
    onnx.checker.check_model(proto)
    return proto

