"""Sizes that follow the inputs' dynamic axes, read off traces at different input sizes.

The model runs on the example (trace 0), then twice per dynamic axis with that axis grown by
one and by two (traces 2k + 1 and 2k + 2 for symbol k). A size or integer parameter that is
the same in every trace is a constant; one that changes is written as ``coef * product of
symbols`` (a ``Dim``) when, for each symbol, it either stays or scales exactly as the symbol
did in both of its traces. ``T * B * H`` (an LSTM's packed output) and ``3 * B`` fit; ``B + 1``
and ``B // 2`` do not (two grown traces tell a floor division from a product), and the op
that needs such a size says so. ``merge`` pairs every other parameter of an op across the
traces: arrays and tensors are kept per trace, so a constant made inside forward can be
checked for whether it follows the input or is the same array every time.
"""

import math

from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp


class Dim:
    """``coef`` times the runtime sizes of the symbols numbered in ``symbols``."""

    __slots__ = ("coef", "symbols")

    def __init__(self, coef, symbols):
        self.coef, self.symbols = coef, tuple(symbols)

    def __eq__(self, other):
        return isinstance(other, Dim) and (self.coef, self.symbols) == (other.coef, other.symbols)

    def __hash__(self):
        return hash((self.coef, self.symbols))

    def __repr__(self):
        return "*".join([str(self.coef)] * (self.coef != 1) + [f"s{k}" for k in self.symbols])


class Varying:
    """An integer parameter that differed between the traces: its value in each."""

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = tuple(values)

    def __repr__(self):
        return f"Varying{self.values}"


class ArrayParam:
    """An array parameter of an op (a mask, an index), one per trace."""

    __slots__ = ("arrays",)

    def __init__(self, arrays):
        self.arrays = tuple(arrays)


class TensorParam:
    """A Tensor passed as a parameter rather than an input (BatchNorm's running stats)."""

    __slots__ = ("tensors",)

    def __init__(self, tensors):
        self.tensors = tuple(tensors)


class Sizes:
    """Each symbol's size in the example and in the traces that grew it."""

    GROWTHS = (1, 2)  # each dynamic axis is traced this much longer than the example

    def __init__(self, base):
        self.base = tuple(base)

    def traces(self):
        """How many traces the sizes are read from: the example's and the grown ones."""
        return 1 + len(self.GROWTHS) * len(self.base)

    def fit(self, values):
        """An int, a Dim, or None for per-trace ``values`` (in the order of ``traces``)."""
        v0 = values[0]
        if all(v == v0 for v in values):
            return v0
        symbols, scale = [], 1
        for k, base in enumerate(self.base):
            grown = values[1 + len(self.GROWTHS) * k:][:len(self.GROWTHS)]
            if all(v == v0 for v in grown):
                continue
            if any(v0 * (base + step) != v * base for v, step in zip(grown, self.GROWTHS)):
                return None
            symbols.append(k)
            scale *= base
        if v0 % scale:
            return None
        return Dim(v0 // scale, symbols)

    def shape(self, shapes):
        """The symbolic shape (ints, Dims, None where nothing fits) of per-trace shapes."""
        if any(len(s) != len(shapes[0]) for s in shapes):
            return None
        return tuple(self.fit(sizes) for sizes in zip(*shapes))


class Mismatch(Exception):
    """Two traces gave an op parameters that differ in a way no Dim describes."""


def merge(values):
    """One op parameter from its per-trace ``values``: equal values stay as they are, ints that
    differ become Varying, arrays ArrayParam, Tensors TensorParam; raises Mismatch."""
    first = values[0]
    if isinstance(first, Tensor):
        return TensorParam(values)
    if isinstance(first, xp.ndarray):
        return ArrayParam(values)
    if isinstance(first, (tuple, list)):
        if any(not isinstance(v, type(first)) or len(v) != len(first) for v in values):
            raise Mismatch(values)
        return type(first)(merge(parts) for parts in zip(*values))
    if isinstance(first, slice):
        return slice(*(merge([getattr(v, part) for v in values])
                       for part in ("start", "stop", "step")))
    if isinstance(first, dict):
        return {key: merge([v[key] for v in values]) for key in first}
    if _is_int(first):
        if all(type(v) is type(first) and v == first for v in values):
            return first
        if all(_is_int(v) for v in values):
            return Varying(int(v) for v in values)
        raise Mismatch(values)
    if all(type(v) is type(first) and _same_value(v, first) for v in values):
        return first
    raise Mismatch(values)


class ValueDependent(Exception):
    """An int parameter differs between the example and its values reversed."""


def settle(value, n):
    """A merged parameter with the traces past the first ``n`` (the reversed-values trace)
    checked against the example and dropped: an int there must not depend on the values."""
    if isinstance(value, Varying):
        if any(v != value.values[0] for v in value.values[n:]):
            raise ValueDependent(value.values)
        values = value.values[:n]
        return values[0] if all(v == values[0] for v in values) else Varying(values)
    if isinstance(value, (tuple, list)):
        return type(value)(settle(v, n) for v in value)
    if isinstance(value, slice):
        return slice(settle(value.start, n), settle(value.stop, n), settle(value.step, n))
    if isinstance(value, dict):
        return {key: settle(v, n) for key, v in value.items()}
    return value


def _is_int(value):
    return isinstance(value, (int, xp.integer)) and not isinstance(value, (bool, xp.bool_))


def _same_value(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b) if not isinstance(a, xp.generic) else bool(xp.array_equal(a, b))
