"""Tiny reference models shared by tests."""

import torch
from transformers import ViTConfig, ViTForImageClassification


def tiny_vit_classifier(num_labels: int = 3, seed: int = 0) -> ViTForImageClassification:
    """A 2-block, 64-wide Transformers ViT on 32 px images (patch 8), random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config).eval()
