"""Tensor's operators and methods, bound here so that autograd/ never imports ops/."""

from layerwise import backend
from layerwise.autograd import recording
from layerwise.autograd.tensor import Tensor
from layerwise.ops import activation as act
from layerwise.ops import elementwise as ew
from layerwise.ops import matmul as mm
from layerwise.ops import movement as mv
from layerwise.ops import reduce as rd
from layerwise.ops._convert import as_tensor_like


class Compare:
    """A comparison or logical op (``params["op"]`` names it). Not a Function: it has no
    gradient and records no graph. It reports itself to ``recording.observer`` so that an
    export records a mask computed from the input (``ids == pad``) as the comparison it is."""


def _compare(op, name):
    def compare(self, other):
        out = Tensor(op(self.data, other.data if isinstance(other, Tensor) else other))
        if recording.observer is not None:
            recording.observer(Compare, (self, as_tensor_like(other, self)), {"op": name}, out)
        return out
    return compare


def _invert(self):
    out = Tensor(~self.data)
    if recording.observer is not None:
        recording.observer(Compare, (self,), {"op": "not"}, out)
    return out


def _swap(fn):
    return lambda self, other: fn(as_tensor_like(other, self), self)


def _type(self, dtype=None):
    return str(self.dtype) if dtype is None else ew.cast(self, dtype)


def _size_arg(args):
    return args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


_METHODS = {
    "__add__": ew.add, "__radd__": _swap(ew.add),
    "__sub__": ew.sub, "__rsub__": _swap(ew.sub),
    "__mul__": ew.mul, "__rmul__": _swap(ew.mul),
    "__truediv__": ew.div, "__rtruediv__": _swap(ew.div),
    "__pow__": ew.pow, "__rpow__": _swap(ew.pow),
    "__matmul__": mm.matmul, "__rmatmul__": _swap(mm.matmul),
    "__neg__": ew.neg, "__abs__": ew.abs, "__getitem__": mv.getitem,
    "__lt__": _compare(lambda a, b: a < b, "lt"), "__le__": _compare(lambda a, b: a <= b, "le"),
    "__gt__": _compare(lambda a, b: a > b, "gt"), "__ge__": _compare(lambda a, b: a >= b, "ge"),
    "__eq__": _compare(lambda a, b: a == b, "eq"), "__ne__": _compare(lambda a, b: a != b, "ne"),
    "__invert__": _invert,
    "__and__": _compare(lambda a, b: a & b, "and"), "__or__": _compare(lambda a, b: a | b, "or"),
    "eq": _compare(lambda a, b: a == b, "eq"), "ne": _compare(lambda a, b: a != b, "ne"),
    "lt": _compare(lambda a, b: a < b, "lt"), "gt": _compare(lambda a, b: a > b, "gt"),
    "le": _compare(lambda a, b: a <= b, "le"), "ge": _compare(lambda a, b: a >= b, "ge"),
    "add": ew.add, "sub": ew.sub, "mul": ew.mul, "div": ew.div, "pow": ew.pow, "matmul": mm.matmul,
    "neg": ew.neg, "exp": ew.exp, "log": ew.log, "sqrt": ew.sqrt, "rsqrt": ew.rsqrt, "abs": ew.abs,
    "clamp": ew.clamp, "clip": ew.clamp, "maximum": ew.maximum, "minimum": ew.minimum,
    "masked_fill": ew.masked_fill, "tril": ew.tril, "triu": ew.triu,
    "relu": act.relu, "sigmoid": act.sigmoid, "tanh": act.tanh,
    "sum": rd.sum, "mean": rd.mean, "max": rd.max, "min": rd.min, "amax": rd.amax, "amin": rd.amin,
    "argmax": rd.argmax, "argmin": rd.argmin, "prod": rd.prod, "var": rd.var, "std": rd.std,
    "softmax": rd.softmax, "log_softmax": rd.log_softmax, "logsumexp": rd.logsumexp,
    "all": rd.all, "any": rd.any,
    "reshape": mv.reshape, "view": mv.view, "flatten": mv.flatten, "permute": mv.permute,
    "transpose": mv.transpose, "unsqueeze": mv.unsqueeze, "squeeze": mv.squeeze,
    "expand": mv.expand, "split": mv.split, "chunk": mv.chunk, "gather": mv.gather,
    "type": _type,
    "float": lambda self: ew.cast(self, backend.float32),
    "double": lambda self: ew.cast(self, backend.float64),
    "half": lambda self: ew.cast(self, backend.float16),
    "long": lambda self: ew.cast(self, backend.int64),
    "int": lambda self: ew.cast(self, backend.int32),
    "bool": lambda self: ew.cast(self, backend.bool_),
    "expand_as": lambda self, other: mv.expand(self, other.shape),
    "view_as": lambda self, other: mv.reshape(self, other.shape),
    "reshape_as": lambda self, other: mv.reshape(self, other.shape),
    "contiguous": lambda self: self,
    "clone": lambda self: ew.add(self, 0.0) if self.requires_grad else Tensor(self.data.copy()),
    "T": property(lambda self: mv.permute(self, tuple(reversed(range(self.ndim))))),
    "mT": property(lambda self: mv.transpose(self, -2, -1)),
}


def bind():
    for name, fn in _METHODS.items():
        setattr(Tensor, name, fn)
