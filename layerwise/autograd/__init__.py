"""Tensor, Function, the backward engine, grad mode and gradcheck."""

from layerwise.autograd.tensor import Tensor
from layerwise.autograd.function import Function
from layerwise.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from layerwise.autograd.engine import backward, queue_callback, unbroadcast
from layerwise.autograd.gradcheck import gradcheck
from layerwise.autograd.anomaly import detect_anomaly, is_anomaly_enabled

__all__ = [
    "Tensor", "Function", "detect_anomaly", "is_anomaly_enabled", "backward", "queue_callback",
    "unbroadcast", "gradcheck",
    "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
]
