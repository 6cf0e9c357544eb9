"""Elementwise arithmetic and math, with broadcasting.

Binary ops reduce their gradients back to each input's shape (``unbroadcast``), so
``(B, C) + (C,)`` gives the bias a gradient of shape ``(C,)``.
"""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.engine import unbroadcast
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor
from layerwise.ops._convert import as_tensor_like


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = None
        if self.needs_input_grad[1]:
            gb = unbroadcast(-g * self.a / (self.b * self.b), self.b.shape)
        return ga, gb


class PowScalar(Function):
    """x ** p for a constant p: the common case, one saved array."""

    def forward(self, x, exponent):
        self.x, self.exponent = x, exponent
        return x**exponent

    def backward(self, g):
        p = self.exponent
        if p == 0:  # x**0 is constant: gradient 0 everywhere, not 0 * 0**-1 = nan at x = 0
            return xp.zeros_like(g)
        # 0 ** (p - 1) for p < 1 is inf, as in PyTorch: no warning for it
        with xp.errstate(divide="ignore", invalid="ignore"):
            return g * p * self.x ** (p - 1)


class Rsqrt(Function):
    """1 / sqrt(x) as a square root and a division, two SIMD passes (x ** -0.5 is a libm pow
    call per value: 1 M float32 values, 1.55 -> 0.51 ms); d/dx = -out^3 / 2."""

    def forward(self, x):
        self.out = xp.sqrt(x, out=xp.empty_like(x))  # an array even when x is 0-d
        xp.divide(1, self.out, out=self.out)
        return self.out

    def backward(self, g):
        return -0.5 * g * self.out * self.out * self.out


class Pow(Function):
    """a ** b with both differentiable: d/db = a**b * log(a)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a**b
        return self.out

    def backward(self, g):
        ga = None
        if self.needs_input_grad[0]:
            with xp.errstate(divide="ignore", invalid="ignore"):
                ga = g * self.b * self.a ** (self.b - 1)
            ga = xp.where(self.b == 0, 0, ga).astype(ga.dtype, copy=False)  # as PowScalar's
            ga = unbroadcast(ga, self.a.shape)
        gb = None
        if self.needs_input_grad[1]:
            with xp.errstate(divide="ignore", invalid="ignore"):
                log_a = xp.where(self.a > 0, xp.log(xp.where(self.a > 0, self.a, 1)), 0)
            gb = unbroadcast(g * self.out * log_a, self.b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Exp(Function):
    def forward(self, x):
        self.out = xp.exp(x)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, x):
        self.x = x
        return xp.log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.out = xp.sqrt(x)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Abs(Function):
    def forward(self, x):
        if self.needs_input_grad:  # no sign array for no backward (1M values: 0.57 -> 0.12 ms)
            self.sign = xp.sign(x)
        return xp.abs(x)

    def backward(self, g):
        return g * self.sign


class Clamp(Function):
    """Gradient passes where min <= x <= max (inclusive, as in PyTorch)."""

    def forward(self, x, min=None, max=None):
        self.inside = xp.ones(x.shape, dtype=bool)
        if min is not None:
            self.inside &= x >= min
        if max is not None:
            self.inside &= x <= max
        return xp.clip(x, min, max)

    def backward(self, g):
        return g * self.inside


class Maximum(Function):
    """Ties split the gradient evenly between both inputs, as PyTorch does."""

    pick, beats = xp.maximum, xp.greater

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        # two boolean masks, and only for a backward (1M float32 values, no graph: 2.05 -> 0.19 ms)
        if self.needs_input_grad:
            self.a_wins, self.tie = self.beats(a, b), a == b
        return self.pick(a, b)

    def backward(self, g):
        share_a = xp.where(self.tie, g.dtype.type(0.5), self.a_wins.astype(g.dtype))
        ga = g * share_a
        return unbroadcast(ga, self.shapes[0]), unbroadcast(g - ga, self.shapes[1])


class Minimum(Maximum):
    """The smaller of the two; ties split the gradient evenly, as for maximum."""

    pick, beats = xp.minimum, xp.less


class Where(Function):
    def forward(self, a, b, condition):
        self.condition, self.shapes = condition, (a.shape, b.shape)
        return xp.where(condition, a, b)

    def backward(self, g):
        zero = xp.zeros((), dtype=g.dtype)
        needs = self.needs_input_grad  # a constant side (a number) gets no selected copy
        return (
            unbroadcast(xp.where(self.condition, g, zero), self.shapes[0]) if needs[0] else None,
            unbroadcast(xp.where(self.condition, zero, g), self.shapes[1]) if needs[1] else None,
        )


class MaskedFill(Function):
    """``x`` with the number ``value`` where ``mask`` holds: a copy of x written over through
    the mask, and in backward a copy of g zeroed through it, keeping only the mask. Where
    selects between two arrays, and its backward sums a gradient for the constant too:
    (16, 4, 128, 128) scores under a causal mask, 2.5 -> 1.0 ms forward and backward."""

    def forward(self, x, mask, value):
        self.mask, self.shape = mask, x.shape
        shape = xp.broadcast_shapes(x.shape, mask.shape)
        out = x.copy() if shape == x.shape else xp.array(xp.broadcast_to(x, shape))
        xp.copyto(out, value, where=mask)
        return out

    def backward(self, g):
        dx = xp.array(g)  # a copy, and an array even where g is a 0-d NumPy scalar
        xp.copyto(dx, 0, where=self.mask)
        return unbroadcast(dx, self.shape)


class Cast(Function):
    def forward(self, x, dtype):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.in_dtype)


# --- functional forms -------------------------------------------------------------------


def _pair(a, b):
    if not isinstance(a, Tensor):
        a = as_tensor_like(a, b)
    return a, as_tensor_like(b, a)


def _binary(function, name, a, b, **params):
    """``function.apply(a, b)``, with numpy's broadcasting error restated in one line that
    names the op; the shapes are compared only when the op has already failed."""
    try:
        return function.apply(a, b, **params)
    except ValueError:
        shapes = [tuple(t.shape) for t in (a, b)]
        if "condition" in params:  # where(condition, a, b)
            shapes.insert(0, tuple(params["condition"].shape))
        try:
            xp.broadcast_shapes(*shapes)
        except ValueError:
            raise ValueError(f"{name}: shapes {', '.join(map(str, shapes))} do not broadcast "
                             "(counted from the last dim, each size must match or be 1)") from None
        raise


def add(a, b):
    return _binary(Add, "add", *_pair(a, b))


def sub(a, b):
    return _binary(Sub, "sub", *_pair(a, b))


def mul(a, b):
    return _binary(Mul, "mul", *_pair(a, b))


def div(a, b):
    a, b = _pair(a, b)
    if not a.dtype.kind == "f" and not b.dtype.kind == "f":  # true division, as in PyTorch
        from layerwise.backend import default_float

        a, b = cast(a, default_float()), cast(b, default_float())
    return _binary(Div, "div", a, b)


def pow(a, b):
    if isinstance(b, (int, float)) and isinstance(a, Tensor):
        return PowScalar.apply(a, exponent=b)
    return _binary(Pow, "pow", *_pair(a, b))


def neg(x):
    return Neg.apply(x)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def rsqrt(x):
    return Rsqrt.apply(x)


def abs(x):
    return Abs.apply(x)


def clamp(x, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clamp needs at least one of min= and max=")
    return Clamp.apply(x, min=min, max=max)


clip = clamp


def maximum(a, b):
    return _binary(Maximum, "maximum", *_pair(a, b))


def minimum(a, b):
    return _binary(Minimum, "minimum", *_pair(a, b))


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b``; either may be a Python number."""
    cond = condition.data if isinstance(condition, Tensor) else xp.asarray(condition)
    if cond.dtype != bool:
        raise TypeError(f"where() needs a boolean condition, got dtype {cond.dtype}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):  # two numbers, as PyTorch:
        a = Tensor(xp.asarray(a, dtype=backend.default_float()  # floats take the default dtype
                              if isinstance(a, float) or isinstance(b, float) else None))
    a, b = _pair(a, b)
    return _binary(Where, "where", a, b, condition=cond)


def masked_fill(x, mask, value):
    """``x`` with ``value`` wherever ``mask`` is True; ``mask`` broadcasts against ``x``."""
    if not isinstance(value, (bool, int, float)) or not backend.is_floating(x.dtype):
        return where(mask, value, x)  # a tensor value (it may want a gradient), dtypes to promote
    cond = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
    if cond.dtype != bool:
        raise TypeError(f"masked_fill() needs a boolean mask, got dtype {cond.dtype}")
    try:
        xp.broadcast_shapes(tuple(x.shape), cond.shape)
    except ValueError:
        raise ValueError(f"masked_fill: input {tuple(x.shape)} and mask {cond.shape} do not "
                         "broadcast (counted from the last dim, each size must match or be 1)"
                         ) from None
    return MaskedFill.apply(x, mask=cond, value=x.dtype.type(value))


def tril(input, diagonal=0):
    """The lower triangle of the last two dims, the rest zero (``torch.tril``): the entries whose
    column - row <= ``diagonal``. Built from masked_fill, so its gradient is the same triangle."""
    return _triangle(input, diagonal, "tril")


def triu(input, diagonal=0):
    """The upper triangle of the last two dims, the rest zero (``torch.triu``): the entries whose
    column - row >= ``diagonal``."""
    return _triangle(input, diagonal, "triu")


def _triangle(x, diagonal, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}() expected a Tensor, got {type(x).__name__}; wrap it with "
                        f"lw.tensor(...)")
    if x.ndim < 2:
        raise ValueError(f"{name}() needs at least 2 dims (rows, columns), got shape "
                         f"{tuple(x.shape)}")
    if isinstance(diagonal, bool) or not isinstance(diagonal, int):
        raise TypeError(f"{name}() diagonal must be an int, got {diagonal!r}")
    rows, cols = x.shape[-2:]
    below = xp.tri(rows, cols, k=diagonal if name == "tril" else diagonal - 1, dtype=bool)
    keep = below if name == "tril" else ~below  # (rows, cols), broadcast over leading dims
    if x.dtype == bool:
        return Tensor(x.data & keep)
    return masked_fill(x, Tensor(~keep), 0)


def cast(x, dtype):
    from layerwise.backend import to_dtype

    dtype = to_dtype(dtype)
    if x.dtype == dtype:
        return x
    if not dtype.kind == "f":  # integer results carry no gradient
        return Tensor(x.data.astype(dtype))
    return Cast.apply(x, dtype=dtype)
