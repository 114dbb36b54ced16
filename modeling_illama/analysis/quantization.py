"""8-bit quantization of a saved classifier through torchao (post-training).

Schemes (every `nn.Linear`: attention, SwiGLU and the head; the patch-embedding convolution stays float):
- "int8-weight-only": int8 weights, symmetric per output channel; activations stay float.
- "int8-dynamic": int8 weights (symmetric, per output channel) and int8 activations quantized on the fly
  (asymmetric, per token), with integer matrix products where the backend has them.
Post-training quantization goes through transformers' `TorchAoConfig`, so the quantized folder saves (safetensors)
and reloads with `from_pretrained` like any other. Quantization-aware training with the same numerics
(`prepare_qat` / `finish_qat`, re-exported here) lives with the training code in `training/qat.py`.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..training.qat import QUANTIZATION_SCHEMES, check_scheme, fake_quantize_configs, finish_qat, prepare_qat
from ..utils.figures import pyplot, save_figure

logger = logging.getLogger(__name__)


def torchao_config(scheme: str):
    """The torchao post-training config of a scheme."""
    check_scheme(scheme)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, MappingType

    if scheme == "int8-weight-only":
        return Int8WeightOnlyConfig()
    return Int8DynamicActivationInt8WeightConfig(act_mapping_type=MappingType.ASYMMETRIC)


def load_quantized(folder: str | os.PathLike, scheme: str, **kwargs):
    """Load a saved float classifier folder (at its deployed soft-mask rate) with its linear layers quantized by
    `scheme` (post-training). Weights missing from the checkpoint are refused as in `modeling_illama.loading`."""
    from transformers import TorchAoConfig

    from ..loading import load_classifier

    quantization_config = TorchAoConfig(quant_type=torchao_config(scheme))
    return load_classifier(str(folder), quantization_config=quantization_config, **kwargs).eval()


def quantized_linear_count(model: nn.Module) -> int:
    """How many linear layers hold a quantized (torchao tensor-subclass) weight."""
    return sum(
        isinstance(module, nn.Linear) and type(module.weight).__name__ not in ("Parameter", "Tensor")
        for module in model.modules()
    )


def folder_size(folder: str | os.PathLike, suffixes=(".safetensors", ".bin", ".pt")) -> int:
    """Bytes of the weight files in a saved model folder."""
    files = [p for p in Path(folder).iterdir() if p.suffix in suffixes]
    if not files:
        raise FileNotFoundError(f"no weight file ({', '.join(suffixes)}) in {folder}")
    return sum(p.stat().st_size for p in files)


@torch.no_grad()
def interleaved_latency(models: dict[str, nn.Module], pixel_values: torch.Tensor, repeats: int = 10) -> dict:
    """Median seconds per forward of each model, measured interleaved (A, B, A, B, ...) after one warm-up each."""
    for model in models.values():
        model(pixel_values=pixel_values)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(pixel_values=pixel_values)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def draw_quantization(report: dict, path: str | os.PathLike) -> str:
    """Three bar pairs, float32 vs int8: top-1 accuracy, weight-file size, CPU latency (from `report`)."""
    plt = pyplot()

    panels = [
        ("top-1 accuracy (%)", {k: 100 * v for k, v in report["top1"].items()}, "{:.2f}"),
        ("weights (MB)", {k: v / 1e6 for k, v in report["weights_bytes"].items()}, "{:.2f}"),
        (
            f"CPU latency, batch {report['latency_batch_size']} (ms)",
            {k: 1e3 * v for k, v in report["latency_seconds"].items()},
            "{:.1f}",
        ),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for axis, (title, values, fmt) in zip(axes, panels):
        bars = axis.bar(list(values), list(values.values()), color=["tab:blue", "tab:orange"])
        axis.bar_label(bars, [fmt.format(v) for v in values.values()])
        axis.set_title(title)
        axis.margins(y=0.15)
    figure.suptitle(
        f"{report['scheme']} (torchao) vs float32: {os.path.basename(os.path.normpath(report['model']))}, "
        f"{report['num_images']} images"
    )
    return save_figure(figure, path, dpi=110)


__all__ = [
    "QUANTIZATION_SCHEMES",
    "draw_quantization",
    "fake_quantize_configs",
    "finish_qat",
    "folder_size",
    "interleaved_latency",
    "load_quantized",
    "prepare_qat",
    "quantized_linear_count",
    "torchao_config",
]
