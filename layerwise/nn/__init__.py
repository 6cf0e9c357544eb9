"""Neural-network building blocks: Module and Parameter, layers by family, losses, init,
the functional forms (``layerwise.nn.functional``) and parameter utilities.

    import layerwise.nn as nn
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    loss = nn.CrossEntropyLoss()(model(x), y)
"""

from layerwise.nn.parameter import Parameter
from layerwise.nn.module import (IncompatibleKeys, Module, register_module_forward_hook,
                                  register_module_forward_pre_hook)
from layerwise.nn.container import ModuleDict, ModuleList, Sequential
from layerwise.nn.linear import Identity, Linear
from layerwise.nn.dropout import Dropout, Flatten
from layerwise.nn.activation import (
    GELU,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from layerwise.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
)
from layerwise.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from layerwise.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from layerwise.nn.batchnorm import BatchNorm1d, BatchNorm2d
from layerwise.nn.upsample import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
from layerwise.nn.normalization import LayerNorm, RMSNorm
from layerwise.nn.attention import MultiheadAttention
from layerwise.nn.transformer import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer
from layerwise.nn.embedding import Embedding
from layerwise.nn.rnn import GRU, LSTM, RNN, RNNBase
from layerwise.nn import functional, init, parallel, utils

__all__ = [
    "Parameter",
    "Module",
    "IncompatibleKeys",
    "register_module_forward_hook",
    "register_module_forward_pre_hook",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "Linear",
    "Identity",
    "Dropout",
    "Flatten",
    "ReLU",
    "LeakyReLU",
    "GELU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "functional",
    "init",
    "utils",
    "parallel",
    "Conv1d",
    "Conv2d",
    "ConvTranspose2d",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "MaxPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Upsample",
    "UpsamplingBilinear2d",
    "UpsamplingNearest2d",
    "LayerNorm",
    "RMSNorm",
    "MultiheadAttention",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "Embedding",
    "GRU",
    "LSTM",
    "RNN",
    "RNNBase",
]
