"""Reusing LLaMA language-model weights in vision models: weight selection and frozen LLaMA layers as encoder
layers (docs/DESIGN.md, "Weight selection" and "Frozen LLaMA layers")."""

from .frozen import attach_frozen_llm, frozen_llm_config, vit_with_frozen_llm
from .safetensors_index import SafetensorsCheckpoint
from .weight_selection import (
    WeightSelectionReport,
    init_model_from_llama,
    select_weights_from_llama,
    selection_indices,
)

__all__ = [
    "SafetensorsCheckpoint",
    "WeightSelectionReport",
    "attach_frozen_llm",
    "frozen_llm_config",
    "init_model_from_llama",
    "select_weights_from_llama",
    "selection_indices",
    "vit_with_frozen_llm",
]
