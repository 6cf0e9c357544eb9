"""Pooling layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (no parameters, PyTorch's
arguments). The work is done by layerwise.ops.pool."""

from layerwise.nn.module import Module
from layerwise.ops.pool import (
    adaptive_avg_pool2d, avg_pool2d, max_pool2d, output_pair, pool_arguments,
)


class MaxPool2d(Module):
    """Max over windows: ``MaxPool2d(2)`` halves H and W. stride defaults to kernel_size."""

    def __init__(
        self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False
    ):
        super().__init__()
        pool_arguments(kernel_size, stride, padding, dilation, "MaxPool2d")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(Module):
    """Mean over windows; zero padding counts towards the mean unless count_include_pad=False."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        super().__init__()
        pool_arguments(kernel_size, stride, padding, 1, "AvgPool2d")
        if divisor_override is not None and (
            isinstance(divisor_override, bool)
            or not isinstance(divisor_override, int)
            or divisor_override < 1
        ):
            raise ValueError(
                f"AvgPool2d divisor_override must be a positive int or None, got "
                f"{divisor_override!r}"
            )
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x):
        return avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size whatever the input size:
    ``AdaptiveAvgPool2d((1, 1))`` is global average pooling."""

    def __init__(self, output_size):
        super().__init__()
        output_pair(output_size, (1, 1), "AdaptiveAvgPool2d")  # checked now; None stays None
        self.output_size = output_size

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
