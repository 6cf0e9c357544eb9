"""Image classifiers: MLP, LeNet, and a small ResNet with torchvision's attribute names.

All take (N, C, H, W) float images and return (N, num_classes) logits. Parameter names follow
the PyTorch / torchvision conventions (``conv1``, ``bn1``, ``layer1.0.downsample.0``, ``fc``),
so a state dict saved from the equivalent torch model loads unchanged.
"""

from layerwise.nn import functional as F
from layerwise.nn.activation import ReLU
from layerwise.nn.batchnorm import BatchNorm2d
from layerwise.nn.container import Sequential
from layerwise.nn.conv import Conv2d
from layerwise.nn.dropout import Dropout, Flatten
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.pooling import AdaptiveAvgPool2d, MaxPool2d


class MLP(Module):
    """Flatten, then Linear-ReLU(-Dropout) per hidden width, then a Linear head.

    ``MLP(784, hidden=(256, 128), num_classes=10)`` has keys ``layers.1.weight`` (784 -> 256),
    ``layers.3.weight`` (256 -> 128) and ``layers.5.weight`` (128 -> 10); with dropout > 0 each
    hidden block gains a Dropout, shifting the indices as in the equivalent nn.Sequential.
    """

    def __init__(self, in_features, hidden=(128,), num_classes=10, dropout=0.0):
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        blocks, width = [Flatten()], in_features
        for h in hidden:
            blocks += [Linear(width, h), ReLU()] + ([Dropout(dropout)] if dropout > 0 else [])
            width = h
        blocks.append(Linear(width, num_classes))
        self.layers = Sequential(*blocks)

    def forward(self, x):
        return self.layers(x)  # (N, ...) -> (N, in_features) -> (N, num_classes)


class LeNet(Module):
    """LeNet-5 (LeCun et al. 1998) for 1x28x28 digits, with ReLU and max pooling as is usual
    today: conv 5x5 (pad 2) -> 6x28x28 -> pool -> 6x14x14 -> conv 5x5 -> 16x10x10 -> pool ->
    16x5x5 -> 120 -> 84 -> num_classes."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv1 = Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = Conv2d(6, 16, kernel_size=5)
        self.pool = MaxPool2d(2)
        self.fc1 = Linear(16 * 5 * 5, 120)
        self.fc2 = Linear(120, 84)
        self.fc3 = Linear(84, num_classes)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (28, 28):
            raise ValueError(f"LeNet expects 28x28 images (N, C, 28, 28), got shape "
                             f"{tuple(x.shape)}")
        x = self.pool(F.relu(self.conv1(x)))  # (N, 6, 14, 14)
        x = self.pool(F.relu(self.conv2(x)))  # (N, 16, 5, 5)
        x = x.flatten(1)  # (N, 400)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(Module):
    """The ResNet basic block (He et al. 2016): conv3x3-bn-relu-conv3x3-bn, plus the input
    (or, when the shape changes, a 1x1 conv-bn projection of it), then relu."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = Sequential(Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                         BatchNorm2d(planes))
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(Module):
    """A small ResNet for small images: a 3x3 stem (no max pool), then one stage of
    BasicBlocks per entry of ``channels`` (stages after the first halve H and W), global
    average pooling and a Linear head. Names as torchvision's: conv1, bn1, layer1.., avgpool,
    fc. ``ResNet((2, 2, 2), (16, 32, 64), in_channels=3)`` is ResNet-14 for CIFAR-sized input.
    """

    def __init__(self, num_blocks=(1, 1, 1), channels=(16, 32, 64), in_channels=1,
                 num_classes=10):
        super().__init__()
        if len(num_blocks) != len(channels) or not num_blocks:
            raise ValueError(f"ResNet needs one block count per stage: num_blocks={num_blocks} "
                             f"and channels={channels} differ in length")
        self.conv1 = Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2d(channels[0])
        self.relu = ReLU()
        in_planes = channels[0]
        for i, (blocks, planes) in enumerate(zip(num_blocks, channels)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_planes, planes, stride)]
            stage += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", Sequential(*stage))
            in_planes = planes
        self.num_stages = len(channels)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))  # (N, C0, H, W)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)  # each stage after the first halves H, W
        x = self.avgpool(x).flatten(1)  # (N, C_last)
        return self.fc(x)
