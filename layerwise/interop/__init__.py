"""Working with the rest of the ecosystem: Hugging Face checkpoints, PyTorch state dicts, ONNX.

    from layerwise.interop import from_pretrained, export_onnx, save_for_torch
"""

from layerwise.interop.hf import (
    from_pretrained,
    load_bert,
    load_gpt2,
    read_config,
)
from layerwise.interop.hf import (
    load_state_dict as load_hf_state_dict,
)
from layerwise.interop.onnx_export import export_onnx, to_onnx
from layerwise.interop.torch import load_torch_safetensors, save_for_torch

__all__ = [
    "export_onnx",
    "from_pretrained",
    "load_bert",
    "load_gpt2",
    "load_hf_state_dict",
    "load_torch_safetensors",
    "read_config",
    "save_for_torch",
    "to_onnx",
]
