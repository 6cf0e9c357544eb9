"""Ops that move or select elements as ONNX nodes (layerwise/ops/movement.py, embedding).

Shapes come from the op's output as the traces fit it (a Dim where it follows a dynamic
axis), never from the numbers the example happened to have, so a Reshape to (B, T, nh, hs)
keeps B and T dynamic. Slice bounds and picked indices that changed between the traces are
written either from the end of the axis (``out[:, T - 1]`` is ``out[:, -1]``) or as a Dim.
"""

from layerwise.backend import xp
from layerwise.onnx.graph import INT64_MAX, INT64_MIN
from layerwise.onnx.shapes import ArrayParam, Dim, Varying
from layerwise.onnx.table import emits
from layerwise.ops import movement as mv
from layerwise.ops.embedding import EmbeddingFunction


def _output_shape(op):
    shape = op.out.shape
    if shape is None or any(s is None for s in shape):
        op.refuse(f"makes shapes {op.out.shapes[:3]} as the dynamic axes grow, which no size "
                  "formula here follows; export with dynamic_batch=False (and no dynamic_axes)")
    return shape


@emits(mv.Reshape)
def reshape(g, op):
    return g.op("Reshape", [op.inputs[0].name, g.target_shape(_output_shape(op))])


@emits(mv.Permute)
def permute(g, op):
    return g.op("Transpose", [op.inputs[0].name], perm=[int(a) for a in op.params["axes"]])


@emits(mv.Expand)
def expand(g, op):
    return g.op("Expand", [op.inputs[0].name, g.ints(_output_shape(op))])


@emits(mv.Cat)
def cat(g, op):
    names = [g.cast(v, op.out.dtype) for v in op.inputs]
    return g.op("Concat", names, axis=int(op.params["axis"]))


@emits(mv.Pad)
def pad(g, op):
    x = op.inputs[0]
    widths = [(op.static(a, "pad width"), op.static(b, "pad width"))
              for a, b in op.params["widths"]]
    pads = [a for a, _ in widths] + [b for _, b in widths]  # ONNX: all begins, then all ends
    return g.op("Pad", [x.name, g.ints(pads), g.scalar(op.params["value"], x.dtype)],
                mode="constant")


@emits(mv.Gather)
def gather(g, op):
    index = op.array(op.params["index"])
    return g.op("GatherElements", [op.inputs[0].name, index.name], axis=int(op.params["axis"]))


@emits(EmbeddingFunction)
def embedding(g, op):
    return g.op("Gather", [op.inputs[0].name, op.array(op.params["indices"]).name], axis=0)


# --- x[index] -------------------------------------------------------------------------------


@emits(mv.GetItem)
def getitem(g, op):
    """Basic indexing (ints, slices, None, ...) and one index array or 1-D boolean mask: a
    Slice for the slices, Gather per int or index array, Compress for a mask, Unsqueeze for
    the new axes."""
    x = op.inputs[0]
    index = op.params["index"]
    items = _expanded(op, index if isinstance(index, tuple) else (index,), x.rank)
    slices, picks, arrays, masks, new_axes = [], [], [], [], []
    in_axis = out_axis = 0
    for item in items:
        if item is None:
            new_axes.append(out_axis)
            out_axis += 1
        elif isinstance(item, slice):
            if item != slice(None):
                slices.append((in_axis, item))
            in_axis, out_axis = in_axis + 1, out_axis + 1
        elif isinstance(item, ArrayParam):
            array = item.arrays[0]
            if array.dtype == bool:
                if array.ndim != 1:
                    op.refuse(f"indexes with a {array.ndim}-D boolean mask; ONNX export takes "
                              "a 1-D mask on one axis")
                masks.append((in_axis, item))
                out_axis += 1
            else:
                arrays.append((in_axis, item))
                out_axis += array.ndim
            in_axis += 1
        else:
            picks.append((in_axis, item))
            in_axis += 1
    if len(arrays) + len(masks) > 1 or (arrays and new_axes):
        op.refuse("indexes with several index arrays (or an index array and None); index one "
                  "axis at a time")
    if arrays and picks:
        axes = sorted([a for a, _ in picks] + [arrays[0][0]])
        if axes != list(range(axes[0], axes[0] + len(axes))):  # numpy moves these dims first
            op.refuse("mixes an index array with ints on axes that are not side by side")
    name = x.name
    if slices:
        name = _slice(g, op, name, x, slices)
    for axis, mask in masks:
        name = g.op("Compress", [name, op.array(mask).name], axis=axis)
    for axis, item in sorted(picks + arrays, key=lambda p: p[0], reverse=True):
        if isinstance(item, ArrayParam):
            where = op.array(item).name
        else:  # a scalar index removes the axis
            bound = _bound(op, x, axis, item, "index")
            where = (g.const(xp.array(bound, dtype=xp.int64)) if isinstance(bound, int)
                     else g.op("Squeeze", [g.dim(bound), g.ints([0])]))
        name = g.op("Gather", [name, where], axis=axis)
    if new_axes:
        name = g.op("Unsqueeze", [name, g.ints(new_axes)])
    return name


def _expanded(op, items, rank):
    """The index with its Ellipsis written out as full slices."""
    def axes_taken(item):
        if item is None or item is Ellipsis:
            return 0
        if isinstance(item, ArrayParam) and item.arrays[0].dtype == bool:
            return item.arrays[0].ndim
        return 1

    taken = sum(axes_taken(i) for i in items)
    out = []
    for item in items:
        if item is Ellipsis:
            out.extend([slice(None)] * (rank - taken))
        elif isinstance(item, (int, slice, Varying, ArrayParam)) or item is None:
            out.append(item)
        elif isinstance(item, xp.integer):
            out.append(int(item))
        else:
            op.refuse(f"indexes with a {type(item).__name__}, which ONNX export does not take")
    return out


def _slice(g, op, name, x, slices):
    starts, ends, axes, steps = [], [], [], []
    for axis, s in slices:
        step = 1 if s.step is None else op.static(s.step, "slice step")
        low, high = (0, INT64_MAX) if step > 0 else (INT64_MAX, INT64_MIN)
        starts.append(low if s.start is None else _bound(op, x, axis, s.start, "slice start"))
        ends.append(high if s.stop is None else _bound(op, x, axis, s.stop, "slice end"))
        axes.append(axis)
        steps.append(step)
    return g.op("Slice", [name, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])


def _bound(op, x, axis, value, what):
    """An index along ``axis`` of x: an int, or for one that changed with a dynamic axis the
    same distance from the end in every trace (written negative) or a Dim."""
    if not isinstance(value, Varying):
        return value
    from_end = {v - shape[axis] for v, shape in zip(value.values, x.shapes)}
    if len(from_end) == 1 and from_end.pop() < 0:
        return value.values[0] - x.shapes[0][axis]
    fitted = op.graph.sizes.fit(value.values)
    if not isinstance(fitted, Dim):
        op.refuse(f"has a {what} that changes with a dynamic axis in a way ONNX export cannot "
                  f"follow ({value.values}); export with dynamic_batch=False")
    return fitted
