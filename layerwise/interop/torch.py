"""PyTorch state dicts as safetensors, both ways.

layerwise modules use PyTorch's parameter names and layouts (Linear (out, in), Conv2d
(out, in/groups, kH, kW), BatchNorm's running_mean / running_var / num_batches_tracked), so a
state dict moves between the two unchanged; only the container differs. PyTorch's own
``torch.save`` pickles, which layerwise never reads, so the exchange format is safetensors:

    # PyTorch -> layerwise
    from safetensors.torch import save_file
    save_file(torch_model.state_dict(), "model.safetensors")   # (clone tied tensors first)
    load_torch_safetensors(lw_model, "model.safetensors")

    # layerwise -> PyTorch
    save_for_torch(lw_model, "model.safetensors")
    torch_model.load_state_dict(safetensors.torch.load_file("model.safetensors"))

safetensors refuses tensors that share memory, which is how PyTorch (and layerwise) hold tied
weights such as GPT's lm_head / wte; ``save_for_torch`` writes every key with its own copy,
so ``load_state_dict(strict=True)`` in PyTorch finds all the keys it expects.
"""

import os

from layerwise import serialization
from layerwise.nn.module import Module


def torch_state_dict(model):
    """name -> array copies, one per state_dict key (tied tensors duplicated), C-ordered."""
    if not isinstance(model, Module):
        raise TypeError(f"expected a layerwise nn.Module, got {type(model).__name__}")
    return {k: v.data.copy(order="C") for k, v in model.state_dict().items()}


def save_for_torch(model, path):
    """Write ``model``'s state dict as safetensors that ``safetensors.torch.load_file`` reads
    and ``torch_module.load_state_dict`` accepts (same keys, shapes and dtypes)."""
    serialization.save(torch_state_dict(model), path)
    return os.fspath(path)


def load_torch_safetensors(model, path, strict=True):
    """Load a PyTorch state dict saved with ``safetensors.torch.save_file`` into the matching
    layerwise ``model``, in place; returns (missing_keys, unexpected_keys) as PyTorch does."""
    try:
        state = serialization.load(path)
    except ValueError as err:
        if "bf16" in str(err).lower() or "bfloat16" in str(err).lower():
            raise ValueError(f"{path} holds bfloat16 tensors, which NumPy cannot represent; "
                             f"save them as float32 in PyTorch first (t.float())") from None
        raise
    return model.load_state_dict(state, strict=strict)
