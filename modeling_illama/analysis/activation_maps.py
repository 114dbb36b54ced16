""" "Information filtering" activation maps (Pang et al., arXiv 2310.12973; docs/DESIGN.md, frozen LLaMA layers).

For one image and chosen layers, the patch tokens x_1..x_P (B, P, D) of each layer give two per-token maps:

    magnitude  ||x_i - mean_j x_j||_2
    frequency  ||phase(FFT_channels(x_i)) - mean_j phase(FFT_channels(x_j))||_2

each min-max normalised to [0, 1] and laid out on the (H / patch) x (W / patch) grid, then drawn over the image.
Layers are block numbers (the output of block i) or submodule names of the base model, e.g. "frozen_llm" (the
output of the frozen-LLM chain) or "frozen_llm.layers.0" (the LLaMA layer itself, in the LLM's width).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..configuration_illama import to_pair
from ..utils.figures import pyplot, save_figure


def min_max(values: torch.Tensor) -> torch.Tensor:
    """Scale each row of (B, P) to [0, 1] (a constant row becomes 0)."""
    low = values.amin(dim=-1, keepdim=True)
    span = values.amax(dim=-1, keepdim=True) - low
    return (values - low) / torch.where(span > 0, span, torch.ones_like(span))


def magnitude_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, P, D) -> (B, P): L2 norm of each token minus the mean token, min-max normalised."""
    tokens = tokens.float()
    return min_max((tokens - tokens.mean(dim=1, keepdim=True)).norm(dim=-1))


def frequency_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, P, D) -> (B, P): L2 norm of each token's FFT phase (along channels) minus the mean phase, min-max
    normalised."""
    phase = torch.angle(torch.fft.fft(tokens.float(), dim=-1))
    return min_max((phase - phase.mean(dim=1, keepdim=True)).norm(dim=-1))


def patch_grid(config) -> tuple[int, int]:
    (height, width), (patch_h, patch_w) = to_pair(config.image_size), to_pair(config.patch_size)
    return height // patch_h, width // patch_w


def patch_tokens(hidden_states: torch.Tensor, num_patches: int, class_token_last: bool) -> torch.Tensor:
    """Drop the class token: iLLaMA appends it at the END, ViT puts it FIRST (also handles distillation tokens)."""
    extra = hidden_states.shape[1] - num_patches
    if extra < 0:
        raise ValueError(f"{hidden_states.shape[1]} tokens cannot hold {num_patches} patches")
    return hidden_states[:, :num_patches] if class_token_last else hidden_states[:, extra:]


def _layer_module(base: nn.Module, layer: int | str) -> nn.Module:
    if isinstance(layer, int) or (isinstance(layer, str) and layer.lstrip("-").isdigit()):
        blocks = getattr(base, "layers", None)
        if blocks is None:
            raise ValueError(f"{type(base).__name__} has no `layers` list; name the submodule instead")
        index = int(layer)
        if not -len(blocks) <= index < len(blocks):
            raise ValueError(f"block {index} out of range: the model has {len(blocks)} blocks")
        return blocks[index]
    try:
        return base.get_submodule(layer)
    except AttributeError as error:
        raise ValueError(f"the model has no submodule {layer!r} (relative to {type(base).__name__})") from error


@torch.no_grad()
def collect_layer_outputs(model: nn.Module, pixel_values: torch.Tensor, layers: list[int | str]) -> dict:
    """{layer: its output (B, N, D)} for one forward pass, captured by forward hooks."""
    base = getattr(model, "base_model", model)
    outputs, handles = {}, []
    for layer in layers:

        def hook(module, inputs, output, key=layer):
            outputs[key] = output[0] if isinstance(output, tuple) else output

        handles.append(_layer_module(base, layer).register_forward_hook(hook))
    try:
        model.eval()
        model(pixel_values=pixel_values, output_hidden_states=True)  # also keeps every token in the last block
    finally:
        for handle in handles:
            handle.remove()
    return {layer: outputs[layer] for layer in layers}


def activation_maps(model: nn.Module, pixel_values: torch.Tensor, layers: list[int | str]) -> dict:
    """{layer: {"magnitude": (B, h, w), "frequency": (B, h, w)}} in [0, 1]."""
    grid = patch_grid(model.config)
    class_token_last = getattr(model.config, "model_type", "") == "illama"
    maps = {}
    for layer, hidden in collect_layer_outputs(model, pixel_values, layers).items():
        tokens = patch_tokens(hidden, grid[0] * grid[1], class_token_last)
        maps[layer] = {
            "magnitude": magnitude_map(tokens).view(-1, *grid),
            "frequency": frequency_map(tokens).view(-1, *grid),
        }
    return maps


def denormalize(pixel_values: torch.Tensor, image_mean, image_std) -> torch.Tensor:
    """(3, H, W) normalised -> (H, W, 3) in [0, 1] for display."""
    mean = torch.tensor(image_mean).view(-1, 1, 1)
    std = torch.tensor(image_std).view(-1, 1, 1)
    return (pixel_values.cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0)


def draw_activation_maps(image: torch.Tensor, maps: dict, path: str | os.PathLike, alpha: float = 0.6) -> str:
    """One row per layer: the image, then the magnitude and frequency maps over it (nearest upsampling, so
    each patch is one cell). `image` is (H, W, 3) in [0, 1]; `maps` is one image's {layer: {kind: (h, w)}}."""
    plt = pyplot()

    height, width = image.shape[:2]
    figure, axes = plt.subplots(len(maps), 3, figsize=(9, 3 * len(maps)), squeeze=False)
    for row, (layer, kinds) in enumerate(maps.items()):
        axes[row, 0].imshow(image.numpy())
        axes[row, 0].set_title("image" if row == 0 else "")
        axes[row, 0].set_ylabel(f"block {layer}" if isinstance(layer, int) or str(layer).isdigit() else str(layer))
        for column, kind in enumerate(("magnitude", "frequency"), start=1):
            overlay = nn.functional.interpolate(kinds[kind][None, None].float(), size=(height, width), mode="nearest")
            axes[row, column].imshow(image.numpy())
            shown = axes[row, column].imshow(overlay[0, 0].numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            axes[row, column].set_title(kind)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6)
    return save_figure(figure, path, dpi=100)
