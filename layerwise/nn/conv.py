"""Convolution layers: Conv2d, Conv1d and ConvTranspose2d, with PyTorch's arguments, attributes
and layouts.

The weight is (out_channels, in_channels // groups, *kernel_size), ConvTranspose2d's
(in_channels, out_channels // groups, *kernel_size), and the bias (out_channels,), so a PyTorch
state dict loads unchanged. Initialisation is PyTorch's: weight ~ kaiming_uniform(a=sqrt(5)),
i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias ~ the same uniform, with fan_in =
weight.shape[1] * prod(kernel_size): in_channels // groups for a convolution, and, as PyTorch
computes it from the layout, out_channels // groups for a transposed one.
"""

import math

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import check_tensor
from layerwise.nn import init
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.ops.conv import conv1d, conv2d, conv_transpose2d, transposed_size


def _ntuple(value, n, name, layer, minimum):
    """``value`` (an int, or a tuple of ``n`` ints, each >= ``minimum``) as an n-tuple."""
    out = (value,) * n if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(out, (tuple, list))
        or len(out) != n
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in out)
    ):
        raise ValueError(f"{layer} {name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in out):
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{layer} {name} must be {what} (>= {minimum}), got {value!r}")
    return tuple(out)


class _ConvNd(Module):
    """What Conv1d, Conv2d and ConvTranspose2d share: argument checks, parameters, init, repr."""

    _dims = 2
    _transposed = False  # weight (in, out // groups, *kernel) rather than (out, in // groups, ...)

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        dtype=None,
    ):
        super().__init__()
        layer, n = type(self).__name__, self._dims
        for name, v in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{layer} {name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{layer} in_channels ({in_channels}) and out_channels "
                f"({out_channels}) must both be divisible by groups ({groups})"
            )
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"{layer} supports padding_mode='zeros' only, got {padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _ntuple(kernel_size, n, "kernel_size", layer, 1)
        self.stride = _ntuple(stride, n, "stride", layer, 1)
        self.dilation = _ntuple(dilation, n, "dilation", layer, 1)
        if isinstance(padding, str) and not self._transposed:
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"{layer} padding must be an int, a tuple, 'same' or 'valid', got {padding!r}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{layer} padding='same' needs stride 1, got stride={self.stride}")
            self.padding = padding
        else:
            self.padding = _ntuple(padding, n, "padding", layer, 0)
        self.groups, self.padding_mode = groups, padding_mode
        dtype = backend.to_dtype(dtype or backend.default_float())
        if self._transposed:
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(xp.empty(shape, dtype=dtype))
        self.bias = Parameter(xp.empty((out_channels,), dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def _check_input(self, x):
        layer, n = type(self).__name__, self._dims
        check_tensor(x, layer)
        spatial = "(H, W)" if n == 2 else "(L)"
        if x.ndim not in (n + 1, n + 2):
            raise ValueError(
                f"{layer} expected {n + 2}-D input (N, C, {spatial[1:-1]}) or "
                f"unbatched {n + 1}-D input, got shape {tuple(x.shape)}"
            )
        if x.shape[-n - 1] != self.in_channels:
            raise ValueError(
                f"{layer} expected input with {self.in_channels} channels, got "
                f"shape {tuple(x.shape)}"
            )
        if x.dtype != self.weight.dtype:
            raise TypeError(
                f"{layer} got input of dtype {x.dtype} but its weight is "
                f"{self.weight.dtype}; convert the input (e.g. x.float()) or the "
                f"model (model.to(dtype))"
            )

    def extra_repr(self):
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * self._dims:
            text += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._dims:
            text += f", dilation={self.dilation}"
        if self._transposed and any(self.output_padding):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W): ``Conv2d(3, 16, kernel_size=3, padding=1)``."""

    _dims = 2

    def forward(self, x):
        self._check_input(x)
        return conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L): ``Conv1d(16, 32, kernel_size=5, padding=2)``."""

    _dims = 1

    def forward(self, x):
        self._check_input(x)
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return conv1d(
            x, self.weight, self.bias, self.stride[0], padding, self.dilation[0], self.groups
        )


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution over (N, C, H, W), the adjoint of Conv2d: a learned upsampling,
    ``ConvTranspose2d(64, 32, kernel_size=2, stride=2)`` doubles H and W.

    ``forward(x, output_size=None)``: a stride above 1 maps several input sizes to one output
    size, so ``output_size`` (H, W), with or without the leading dims, picks which of the
    ``stride`` possible output sizes to produce, in place of ``output_padding``.
    """

    _dims = 2
    _transposed = True

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
        dtype=None,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, dtype)
        self.output_padding = _ntuple(output_padding, 2, "output_padding", "ConvTranspose2d", 0)

    def _output_padding(self, x, output_size):
        """The output_padding that gives ``output_size``, checked against the sizes possible."""
        size = tuple(output_size)
        if len(size) == x.ndim:  # the leading (N, C) or (C,) given too
            size = size[-2:]
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                     for v in size):
            raise ValueError(f"ConvTranspose2d output_size must be (H, W) or the full output "
                             f"shape, got {output_size!r} for input of shape {tuple(x.shape)}")
        smallest = tuple(transposed_size(n, k, s, p, 0, d) for n, k, s, p, d in zip(
            x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation))
        largest = tuple(m + s - 1 for m, s in zip(smallest, self.stride))
        if any(not lo <= v <= hi for v, lo, hi in zip(size, smallest, largest)):
            raise ValueError(f"ConvTranspose2d requested an output size of {size}, but valid "
                             f"sizes range from {smallest} to {largest} (for an input of "
                             f"{tuple(x.shape[-2:])})")
        return tuple(v - m for v, m in zip(size, smallest))

    def forward(self, x, output_size=None):
        self._check_input(x)
        output_padding = (self.output_padding if output_size is None
                          else self._output_padding(x, output_size))
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)
