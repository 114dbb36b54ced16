"""Infer an iLLaMA configuration from the tensor shapes of an authors' state dict."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..configuration_illama import to_pair
from ..labels import class_names, default_id2label, label_fields
from .keys import check_official_state_dict
from .safe_load import CheckpointError

HEAD_DIM = 64  # every released size uses 64-dimensional heads
_REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", "head.weight")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Architecture:
    """What the tensor shapes alone say about a checkpoint."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    patch_size: int | tuple[int, int]
    num_channels: int
    num_positions: int  # patches + 1 (class token)
    num_labels: int
    qkv_bias: bool

    @property
    def num_patches(self) -> int:
        return self.num_positions - 1


def read_architecture(state_dict: dict[str, torch.Tensor]) -> Architecture:
    """Read sizes off the shapes (works on meta tensors: nothing is computed)."""
    missing = [key for key in _REQUIRED if key not in state_dict]
    if missing:
        raise CheckpointError(
            f"cannot infer the model size: missing keys {missing} (found {len(state_dict)} keys, e.g. "
            f"{sorted(state_dict)[:8]}). Is this an iLLaMA checkpoint in the authors' layout?"
        )
    blocks = sorted({int(match.group(1)) for key in state_dict if (match := _BLOCK.match(key))})
    if blocks != list(range(len(blocks))):
        absent = sorted(set(range(blocks[-1] + 1)) - set(blocks))
        raise CheckpointError(
            f"block indices are not contiguous: blocks {absent} are missing (found up to {blocks[-1]})."
        )
    patch_weight = state_dict["patch_embed.proj.weight"]
    if patch_weight.dim() != 4:
        raise CheckpointError(f"patch_embed.proj.weight must be 4-D (D, C, p, p), found {tuple(patch_weight.shape)}")
    patch_h, patch_w = patch_weight.shape[2:]
    pos_embed = state_dict["pos_embed"]
    if pos_embed.dim() != 3:
        raise CheckpointError(f"pos_embed must be 3-D (1, N, D), found {tuple(pos_embed.shape)}")
    return Architecture(
        hidden_size=int(state_dict["cls_token"].shape[-1]),
        num_hidden_layers=len(blocks),
        intermediate_size=int(state_dict["blocks.0.mlp.fc1.weight"].shape[0]),
        patch_size=int(patch_h) if patch_h == patch_w else (int(patch_h), int(patch_w)),
        num_channels=int(patch_weight.shape[1]),
        num_positions=int(pos_embed.shape[1]),
        num_labels=int(state_dict["head.weight"].shape[0]),
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
    )


def infer_image_size(arch: Architecture, image_size=None) -> int | tuple[int, int]:
    """The resolution implied by pos_embed (a square grid), or check a given one against it."""
    patch_h, patch_w = (arch.patch_size,) * 2 if isinstance(arch.patch_size, int) else arch.patch_size
    if image_size is None:
        side = math.isqrt(arch.num_patches)
        if side * side != arch.num_patches or patch_h != patch_w:
            raise CheckpointError(
                f"pos_embed has {arch.num_positions} rows = {arch.num_patches} patches + class token, which is not a "
                "square grid of square patches: pass the image size explicitly (--image-size HEIGHT WIDTH)."
            )
        return side * patch_h
    height, width = to_pair(image_size)
    if height % patch_h or width % patch_w or (height // patch_h) * (width // patch_w) != arch.num_patches:
        raise CheckpointError(
            f"image size {height}x{width} with {patch_h}x{patch_w} patches gives "
            f"{(height // patch_h) * (width // patch_w)} patches, but pos_embed holds {arch.num_patches} "
            f"(+1 class token). Omit the image size to infer it, or interpolate pos_embed first."
        )
    return height if height == width else (height, width)


def _matching_preset(config) -> str | None:
    from ..presets import list_presets, load_preset

    fields = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "patch_size",
        "image_size",
        "num_channels",
        "qkv_bias",
    )
    for name in list_presets():
        preset = load_preset(name)
        if all(getattr(preset, field) == getattr(config, field) for field in fields):
            return name
    return None


def detect_config(
    state_dict: dict[str, torch.Tensor], model: str | None = None, image_size=None, num_heads: int | None = None
):
    """Return `(config, preset_name)` for an authors' state dict; `preset_name` is None for a custom size.

    `model` (a preset name), `image_size` and `num_heads` override what the shapes suggest; the result is
    always checked against every key and shape of the state dict (mismatches are reported by name).
    """
    from ..configuration_illama import ILlamaConfig
    from ..presets import load_preset

    arch = read_architecture(state_dict)
    resolution = infer_image_size(arch, image_size)
    labels = label_fields(class_names(default_id2label(arch.num_labels)))
    if model is not None:
        overrides = {"image_size": resolution, **labels}
        if num_heads is not None:
            overrides["num_attention_heads"] = num_heads
        config = load_preset(model, **overrides)
    else:
        if num_heads is None:
            if arch.hidden_size % HEAD_DIM:
                raise CheckpointError(
                    f"hidden size {arch.hidden_size} is not a multiple of the usual head dim {HEAD_DIM}: "
                    "pass the number of heads explicitly (--num-heads)."
                )
            num_heads = arch.hidden_size // HEAD_DIM
        config = ILlamaConfig(
            image_size=resolution,
            patch_size=arch.patch_size,
            num_channels=arch.num_channels,
            hidden_size=arch.hidden_size,
            num_hidden_layers=arch.num_hidden_layers,
            num_attention_heads=num_heads,
            intermediate_size=arch.intermediate_size,
            qkv_bias=arch.qkv_bias,
            **labels,
        )
        model = _matching_preset(config)
        if model is not None:
            config = load_preset(model, **labels)
    check_official_state_dict(state_dict, config)
    return config, model


def count_parameters(state_dict: dict[str, torch.Tensor]) -> int:
    """Exact parameter count (sum of numel over the state dict)."""
    return sum(tensor.numel() for tensor in state_dict.values())
