"""Making models smaller: Module -> Module conversions, never flags on layers.

Pruning (magnitude, gradual, structured units/channels, GPT attention heads), sparse storage
and inference, distillation, and post-training int8 quantization (static and dynamic).
"""

from layerwise.compress.distill import distill, distillation_loss
from layerwise.compress.prune import (
    KeepPruned, Pruned, gradual_prune, magnitude_masks, magnitude_prune, sparsity,
    sparsity_schedule,
)
from layerwise.compress.quantize import (
    QuantConv2d, QuantLinear, QuantLSTM, dequantize, quantize_dynamic, quantize_per_channel,
    load_quantized, quantize_static, save_quantized,
)
from layerwise.compress.heads import PrunedCausalSelfAttention, head_mask_model, prune_heads
from layerwise.compress.pipeline import compress_run, format_comparison
from layerwise.compress.runs import count_nonzero, count_params, latency_ms, load_run, predict
from layerwise.compress.sparse import (
    SparseLinear, load_sparse_weights, save_sparse, to_sparse,
)
from layerwise.compress.structured import prune_units, unit_mask_model

__all__ = [
    "distill", "distillation_loss", "KeepPruned", "Pruned", "gradual_prune", "magnitude_masks",
    "magnitude_prune", "sparsity", "sparsity_schedule", "QuantConv2d", "QuantLinear",
    "QuantLSTM", "dequantize", "quantize_dynamic", "quantize_per_channel", "quantize_static",
    "save_quantized", "load_quantized", "compress_run", "format_comparison", "count_nonzero",
    "count_params", "latency_ms", "load_run", "predict", "SparseLinear", "load_sparse_weights",
    "save_sparse", "to_sparse", "prune_units", "unit_mask_model", "PrunedCausalSelfAttention",
    "head_mask_model", "prune_heads",
]
