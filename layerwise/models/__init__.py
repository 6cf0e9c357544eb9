"""Ready-made models: MLP, CNNs, recurrent and transformer language models."""

from layerwise.models.vision import MLP, BasicBlock, LeNet, ResNet

__all__ = ["MLP", "LeNet", "BasicBlock", "ResNet"]
