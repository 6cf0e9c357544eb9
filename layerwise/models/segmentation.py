"""Semantic segmentation: U-Net (Ronneberger et al. 2015) and the soft Dice loss.

``UNet`` maps (B, C, H, W) images to (B, num_classes, H, W) per-pixel logits: an encoder of
double 3x3 conv blocks, each level halving H and W by max pooling and doubling the width, a
decoder that upsamples, concatenates the encoder's map of the same level (the skip) and
applies another double conv, and a 1x1 conv to class logits. Module names follow the common
PyTorch port (milesial/Pytorch-UNet): ``inc``, ``downs.i.maxpool_conv``, ``ups.i.up``,
``ups.i.conv``, ``outc``; the paper's unpadded convolutions become padded ones so the output
has the input's size, and each conv is followed by BatchNorm.
"""

from layerwise.ops import cat
from layerwise.nn import functional as F
from layerwise.nn.activation import ReLU
from layerwise.nn.batchnorm import BatchNorm2d
from layerwise.nn.container import ModuleList, Sequential
from layerwise.nn.conv import Conv2d, ConvTranspose2d
from layerwise.nn.module import Module
from layerwise.nn.pooling import MaxPool2d
from layerwise.nn.upsample import Upsample


class DoubleConv(Module):
    """(conv 3x3 pad 1, BatchNorm, ReLU) twice; H and W unchanged. The convs have no bias:
    the BatchNorm after each would subtract it again."""

    def __init__(self, in_channels, out_channels, mid_channels=None):
        super().__init__()
        mid = out_channels if mid_channels is None else mid_channels
        self.double_conv = Sequential(
            Conv2d(in_channels, mid, 3, padding=1, bias=False), BatchNorm2d(mid), ReLU(),
            Conv2d(mid, out_channels, 3, padding=1, bias=False), BatchNorm2d(out_channels), ReLU(),
        )

    def forward(self, x):
        return self.double_conv(x)  # (B, in, H, W) -> (B, out, H, W)


class Down(Module):
    """Max pool 2x2, then DoubleConv: one encoder level."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.maxpool_conv = Sequential(MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x):
        return self.maxpool_conv(x)  # (B, in, H, W) -> (B, out, H // 2, W // 2)


class Up(Module):
    """Upsample 2x to half the channels, concatenate the skip, DoubleConv: one decoder level.

    ``bilinear=False``: a learned 2x2 stride-2 transposed conv (the paper's up-convolution).
    ``bilinear=True``: fixed bilinear upsampling, then a 1x1 conv to halve the channels.
    """

    def __init__(self, in_channels, out_channels, bilinear=False):
        super().__init__()
        half = in_channels // 2
        if bilinear:
            self.up = Sequential(
                Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                Conv2d(in_channels, half, 1),
            )
        else:
            self.up = ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        self.conv = DoubleConv(half + out_channels, out_channels)

    def forward(self, x, skip):
        x = self.up(x)  # (B, in, h, w) -> (B, in / 2, 2h, 2w)
        # an odd H or W at the level above was floored by the pool, so 2h may be one short of
        # the skip's size: pad the upsampled map (left/top first), as the reference ports do
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        if dy or dx:
            x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        x = cat([skip, x], dim=1)  # (B, out + in / 2, H, W)
        return self.conv(x)  # (B, out, H, W)


class UNet(Module):
    """U-Net with ``len(widths) - 1`` poolings; ``UNet(1, 11)`` has 482,619 parameters at the
    default widths (16, 32, 64, 128) and takes any H, W >= 2 ** (len(widths) - 1)."""

    def __init__(self, in_channels=1, num_classes=11, widths=(16, 32, 64, 128), bilinear=False):
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 2 or not all(isinstance(w, int) and w >= 2 for w in widths):
            raise ValueError(f"UNet widths must be at least two ints >= 2 (one per level), got "
                             f"{widths!r}")
        self.in_channels, self.num_classes, self.widths = in_channels, num_classes, widths
        self.bilinear = bilinear
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = ModuleList([Down(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.ups = ModuleList([Up(b, a, bilinear) for a, b in zip(widths[-2::-1], widths[:0:-1])])
        self.outc = Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects images (B, {self.in_channels}, H, W), got shape "
                             f"{tuple(x.shape)}")
        smallest = 2 ** len(self.downs)
        if min(x.shape[2:]) < smallest:
            raise ValueError(f"UNet with {len(self.downs)} poolings needs H and W >= "
                             f"{smallest}, got shape {tuple(x.shape)}")
        skips = [self.inc(x)]  # (B, w0, H, W)
        for down in self.downs:
            skips.append(down(skips[-1]))  # level i: (B, w_i, H / 2^i, W / 2^i)
        x = skips.pop()  # the bottleneck (B, w_last, H / 2^depth, W / 2^depth)
        for up in self.ups:
            x = up(x, skips.pop())  # back up one level: (B, w_i, H / 2^i, W / 2^i)
        return self.outc(x)  # (B, w0, H, W) -> (B, num_classes, H, W)


def dice_loss(logits, masks, eps=1.0):
    """1 - the soft multi-class Dice coefficient (Milletari et al. 2016), mean over classes.

    ``logits`` (B, C, H, W); ``masks`` (B, H, W) integer classes in [0, C). With p the
    softmax probabilities and t the one-hot masks, summed over the batch and pixels per class:
    dice_c = (2 sum p t + eps) / (sum p + sum t + eps). ``eps`` keeps a class absent from the
    batch and never predicted at dice 1 rather than 0 / 0.
    """
    if logits.ndim != 4:
        raise ValueError(f"dice_loss expects logits (B, C, H, W), got shape {tuple(logits.shape)}")
    b, c, h, w = logits.shape
    if tuple(masks.shape) != (b, h, w):
        raise ValueError(f"dice_loss expects masks of shape {(b, h, w)} for logits of shape "
                         f"{tuple(logits.shape)}, got {tuple(masks.shape)}")
    probs = F.softmax(logits, dim=1)  # (B, C, H, W)
    target = F.one_hot(masks, c).to(logits.dtype).permute(0, 3, 1, 2)  # (B, H, W) -> (B, C, H, W)
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dim=dims)  # (C,)
    cardinality = probs.sum(dim=dims) + target.sum(dim=dims)  # (C,)
    dice = (2 * intersection + eps) / (cardinality + eps)
    return 1 - dice.mean()
