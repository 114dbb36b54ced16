"""The one table mapping the authors' state-dict keys to ours; used in both directions.

Tensors are stored exactly as the authors store them (fused qkv rows, interleaved rotary pairing), so
conversion is a pure renaming: no tensor is permuted, reshaped or cast (see docs/DESIGN.md).
"""

from __future__ import annotations

import re

import torch

from ..configuration_illama import to_pair
from .safe_load import CheckpointError

# (authors' key, our key); "{i}" stands for the block index.
KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("cls_token", "illama.embeddings.cls_token"),
    ("pos_embed", "illama.embeddings.position_embeddings"),
    ("patch_embed.proj.weight", "illama.embeddings.patch_embeddings.projection.weight"),
    ("patch_embed.proj.bias", "illama.embeddings.patch_embeddings.projection.bias"),
    ("blocks.{i}.norm1.weight", "illama.layers.{i}.input_layernorm.weight"),
    ("blocks.{i}.attn.qkv.weight", "illama.layers.{i}.self_attn.qkv_proj.weight"),
    ("blocks.{i}.attn.qkv.bias", "illama.layers.{i}.self_attn.qkv_proj.bias"),
    ("blocks.{i}.attn.proj.weight", "illama.layers.{i}.self_attn.o_proj.weight"),
    ("blocks.{i}.attn.proj.bias", "illama.layers.{i}.self_attn.o_proj.bias"),
    ("blocks.{i}.norm2.weight", "illama.layers.{i}.post_attention_layernorm.weight"),
    ("blocks.{i}.mlp.fc1.weight", "illama.layers.{i}.mlp.gate_proj.weight"),
    ("blocks.{i}.mlp.fc3.weight", "illama.layers.{i}.mlp.up_proj.weight"),
    ("blocks.{i}.mlp.fc2.weight", "illama.layers.{i}.mlp.down_proj.weight"),
    ("norm.weight", "illama.norm.weight"),
    ("head.weight", "classifier.weight"),
    ("head.bias", "classifier.bias"),
)


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


_FORWARD = [(_pattern(official), hf) for official, hf in KEY_TABLE]
_BACKWARD = [(_pattern(hf), official) for official, hf in KEY_TABLE]


def _rename(key: str, rules) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.replace("{i}", match.group("i")) if "i" in pattern.groupindex else template
    return None


def official_to_hf_key(key: str) -> str | None:
    """Our name for an authors' key, or None if the key is not part of the authors' layout."""
    return _rename(key, _FORWARD)


def hf_to_official_key(key: str) -> str | None:
    """The authors' name for one of our keys, or None if it has no counterpart."""
    return _rename(key, _BACKWARD)


def _rename_all(state_dict: dict[str, torch.Tensor], rename, layout: str) -> dict[str, torch.Tensor]:
    renamed, unknown = {}, []
    for key, tensor in state_dict.items():
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = tensor
    if unknown:
        raise CheckpointError(f"unexpected keys with no counterpart in the {layout} layout: {sorted(unknown)}")
    return renamed


def official_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an authors' state dict to ours (same tensor objects, nothing copied)."""
    return _rename_all(state_dict, official_to_hf_key, "authors'")


def hf_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename one of our ILlamaForImageClassification state dicts to the authors' layout."""
    return _rename_all(state_dict, hf_to_official_key, "authors' (iLLaMA reference code)")


def official_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every key and shape the authors' model of this config holds (7 + 9 * depth keys, 8 + 9 * depth with bias)."""
    dim, hidden, patch = config.hidden_size, config.intermediate_size, config.patch_size
    patch_h, patch_w = to_pair(patch)
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, config.num_patches + 1, dim),
        "patch_embed.proj.weight": (dim, config.num_channels, patch_h, patch_w),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(config.num_hidden_layers):
        block = f"blocks.{i}."
        shapes[block + "norm1.weight"] = (dim,)
        shapes[block + "attn.qkv.weight"] = (3 * dim, dim)
        if config.qkv_bias:
            shapes[block + "attn.qkv.bias"] = (3 * dim,)
        shapes[block + "attn.proj.weight"] = (dim, dim)
        if config.qkv_bias:
            shapes[block + "attn.proj.bias"] = (dim,)
        shapes[block + "norm2.weight"] = (dim,)
        shapes[block + "mlp.fc1.weight"] = (hidden, dim)
        shapes[block + "mlp.fc2.weight"] = (dim, hidden)
        shapes[block + "mlp.fc3.weight"] = (hidden, dim)
    shapes["norm.weight"] = (dim,)
    shapes["head.weight"] = (config.num_labels, dim)
    shapes["head.bias"] = (config.num_labels,)
    return shapes


def check_official_state_dict(state_dict: dict[str, torch.Tensor], config) -> None:
    """Raise a CheckpointError naming every missing, unexpected and mis-shaped key for this config."""
    expected = official_shapes(config)
    missing = [key for key in expected if key not in state_dict]
    unexpected = sorted(key for key in state_dict if key not in expected)
    misshaped = [
        f"{key}: found {tuple(state_dict[key].shape)}, expected {expected[key]}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if misshaped:
        problems.append("mis-shaped keys: " + "; ".join(misshaped))
    if problems:
        raise CheckpointError(
            "the state dict does not match the iLLaMA layout of the chosen configuration "
            f"(hidden_size={config.hidden_size}, depth={config.num_hidden_layers}, "
            f"intermediate_size={config.intermediate_size}, image_size={config.image_size}, "
            f"patch_size={config.patch_size}, num_labels={config.num_labels}):\n  " + "\n  ".join(problems)
        )
