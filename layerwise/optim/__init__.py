"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's names and layouts."""

from layerwise.optim.optimizer import Optimizer
from layerwise.optim.sgd import SGD
from layerwise.optim.adam import Adam, AdamW
from layerwise.optim import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
