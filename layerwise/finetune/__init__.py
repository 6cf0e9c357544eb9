"""Fine-tuning: choose what trains (freeze by name, new heads, parameter groups with their own
learning rates), LoRA adapters, and the label-efficiency experiment that shows why
pre-training helps when labels are few.

    from layerwise.finetune import freeze, replace_head, param_groups, apply_lora
"""

from layerwise.finetune.freeze import (
    discriminative_lr,
    freeze,
    match_parameters,
    param_groups,
    replace_head,
    trainable_parameters,
    unfreeze,
)
from layerwise.finetune.lora import (
    LoRALinear,
    apply_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)

__all__ = [
    "LoRALinear",
    "apply_lora",
    "discriminative_lr",
    "freeze",
    "lora_layers",
    "lora_state_dict",
    "match_parameters",
    "merge_lora",
    "param_groups",
    "replace_head",
    "trainable_parameters",
    "unfreeze",
    "unmerge_lora",
]
