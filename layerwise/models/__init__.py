"""Ready-made models: MLP, CNNs, recurrent and transformer language models."""

from layerwise.models.vision import MLP, BasicBlock, LeNet, ResNet
from layerwise.models.gpt import GPT, GPTConfig, KVCache
from layerwise.models.lstm_lm import LSTMLanguageModel
from layerwise.models.detection import (
    CenterNet, centernet_loss, centernet_targets, decode_detections,
)
from layerwise.models.segmentation import UNet, dice_loss
from layerwise.models.bert import (
    BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, mask_tokens, mean_pool,
    nearest,
)

__all__ = [
    "MLP", "LeNet", "BasicBlock", "ResNet", "GPT", "GPTConfig", "KVCache", "LSTMLanguageModel",
    "BertConfig", "BertModel", "BertForMaskedLM", "BertForSequenceClassification",
    "mask_tokens", "mean_pool", "nearest",
    "CenterNet", "centernet_targets", "centernet_loss", "decode_detections",
    "UNet", "dice_loss",
]
