"""Reusing LLaMA language-model weights in vision models: weight selection and frozen LLaMA layers as encoder
layers (docs/DESIGN.md, "Weight selection" and "Frozen LLaMA layers")."""

from .frozen import attach_frozen_llm, frozen_llm_config, vit_to_frozen_llm_model, vit_with_frozen_llm
from .meta_checkpoint import MetaLlamaCheckpoint, is_meta_checkpoint
from .safetensors_index import SafetensorsCheckpoint
from .weight_selection import (
    WeightSelectionReport,
    init_model_from_llama,
    select_weights_from_llama,
    selection_indices,
)

__all__ = [
    "MetaLlamaCheckpoint",
    "SafetensorsCheckpoint",
    "WeightSelectionReport",
    "attach_frozen_llm",
    "frozen_llm_config",
    "init_model_from_llama",
    "select_weights_from_llama",
    "is_meta_checkpoint",
    "selection_indices",
    "vit_to_frozen_llm_model",
    "vit_with_frozen_llm",
]
