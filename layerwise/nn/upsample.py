"""Upsample: resize (N, C, L) or (N, C, H, W) by a size or a scale factor, nearest or
(bi)linear, as ``torch.nn.Upsample``. The work is layerwise.ops.pool.interpolate."""

from layerwise.nn.module import Module
from layerwise.ops.pool import INTERPOLATE_MODES, interpolate


class Upsample(Module):
    """``Upsample(scale_factor=2, mode="nearest")`` or ``Upsample(size=(32, 32),
    mode="bilinear", align_corners=False)``; exactly one of size and scale_factor."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError(
                f"Upsample needs exactly one of size and scale_factor, got "
                f"size={size!r}, scale_factor={scale_factor!r}"
            )
        if mode not in INTERPOLATE_MODES:
            raise ValueError(f"Upsample mode must be one of {sorted(INTERPOLATE_MODES)}, got "
                             f"{mode!r}")
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        return interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Bilinear with align_corners=True, as PyTorch's (deprecated) class of this name."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
