"""Tiny reference models shared by tests: one geometry (D = 64, 2 layers, 2 heads, 32 px images, patch 8) for
an iLLaMA and a Transformers ViT."""

import torch
from transformers import ViTConfig, ViTForImageClassification

from modeling_illama import ILlamaConfig

TINY_GEOMETRY = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
TINY_ILLAMA = {**TINY_GEOMETRY, "intermediate_size": 96, "num_labels": 5}


def tiny_illama_config(**overrides) -> ILlamaConfig:
    """An ILlamaConfig of TINY_ILLAMA's fields with `overrides` applied."""
    return ILlamaConfig(**{**TINY_ILLAMA, **overrides})


def tiny_vit_classifier(num_labels: int = 3, seed: int = 0, **overrides) -> ViTForImageClassification:
    """A Transformers ViT of TINY_GEOMETRY (MLP 128, `overrides` applied), random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    config = ViTConfig(**{**TINY_GEOMETRY, "intermediate_size": 128, "num_labels": num_labels, **overrides})
    return ViTForImageClassification(config).eval()
