"""ONNX export of an image classifier (logits) with `torch.onnx.export`, checked against PyTorch with onnxruntime.

The graph takes `pixel_values` (batch, 3, H, W) at the model's resolution, with a dynamic batch dimension, and
returns `logits` (batch, num_labels). iLLaMA is exported through its eager attention path (the exact post-softmax
arithmetic, no fused CPU kernel) and at its deployed soft-mask rate r = 0.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from ..utils.figures import pyplot, save_figure

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18


class ClassifierLogits(nn.Module):
    """`pixel_values -> logits` (a plain tensor output), the signature the exported graph has."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _image_size(config) -> tuple[int, int]:
    size = config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET, batch_size: int = 2) -> str:
    """Write `model`'s classifier graph to `path` (ONNX, dynamic batch) at its current soft-mask rate (a loaded
    model's is the deployed one). Switches the model to eager attention."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    model.eval()
    height, width = _image_size(model.config)
    example = torch.randn(batch_size, model.config.num_channels, height, width)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    torch.onnx.export(
        ClassifierLogits(model).eval(),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=1024)}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    import onnx

    onnx.checker.check_model(str(path))
    logger.info("exported %s (%dx%d, opset %d) to %s", type(model).__name__, height, width, opset, path)
    return str(path)


def onnx_logits(path: str | os.PathLike, pixel_values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run the exported graph with onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = np.ascontiguousarray(np.asarray(pixel_values, dtype=np.float32))
    return session.run(["logits"], {"pixel_values": inputs})[0]


@torch.no_grad()
def compare_with_pytorch(model: nn.Module, path: str | os.PathLike, batch_sizes=(1, 3), seed: int = 0) -> dict:
    """Max |logits_onnx - logits_torch| on random inputs of each batch size (the dynamic dimension)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = _image_size(model.config)
    differences = {}
    for batch_size in batch_sizes:
        pixel_values = torch.randn(batch_size, model.config.num_channels, height, width, generator=generator)
        expected = model(pixel_values=pixel_values).logits.float().numpy()
        got = onnx_logits(path, pixel_values.numpy())
        if got.shape != expected.shape:
            raise ValueError(f"ONNX logits have shape {got.shape}, PyTorch {expected.shape}")
        differences[batch_size] = float(np.abs(got - expected).max())
    return {"image_size": [height, width], "max_abs_difference": differences}


@torch.no_grad()
def draw_onnx_agreement(model: nn.Module, path: str | os.PathLike, png: str | os.PathLike, seed: int = 1) -> str:
    """ONNX Runtime logits against PyTorch logits (4 random images), and the histogram of their differences."""
    plt = pyplot()

    height, width = _image_size(model.config)
    pixel_values = torch.randn(
        4, model.config.num_channels, height, width, generator=torch.Generator().manual_seed(seed)
    )
    expected = model(pixel_values=pixel_values).logits.float().numpy().ravel()
    got = onnx_logits(path, pixel_values.numpy()).ravel()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    left.plot(expected, got, ".", markersize=3)
    low, high = float(min(expected.min(), got.min())), float(max(expected.max(), got.max()))
    left.plot([low, high], [low, high], "k--", linewidth=0.8)
    left.set_xlabel("PyTorch logit")
    left.set_ylabel("ONNX Runtime logit")
    left.set_title(f"{os.path.basename(str(path))} ({height}x{width})")
    right.hist(got - expected, bins=40, color="tab:gray")
    right.set_xlabel("ONNX - PyTorch")
    right.set_title(f"max |difference| {np.abs(got - expected).max():.2e}")
    return save_figure(figure, png, dpi=110)


__all__ = [
    "DEFAULT_OPSET",
    "ClassifierLogits",
    "compare_with_pytorch",
    "draw_onnx_agreement",
    "export_onnx",
    "onnx_logits",
]
