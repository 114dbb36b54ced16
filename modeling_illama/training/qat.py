"""Quantization-aware training (paper, Table 7: 8-bit iLLaMA-T/S) through torchao's fake quantizers.

`prepare_qat` swaps every `nn.Linear` (attention, SwiGLU and the head; the patch-embedding convolution stays float)
for a fake-quantized linear with the numerics of a scheme, `finish_qat` swaps them back; the saved float model is
then quantized with the same scheme after training (`analysis/quantization.py`, post-training).
- "int8-weight-only": int8 weights, symmetric per output channel; activations stay float.
- "int8-dynamic": int8 weights (symmetric, per output channel) and int8 activations quantized on the fly
  (asymmetric, per token).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

QUANTIZATION_SCHEMES = ("int8-weight-only", "int8-dynamic")


def check_scheme(scheme: str) -> None:
    if scheme not in QUANTIZATION_SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {QUANTIZATION_SCHEMES}")


def fake_quantize_configs(scheme: str) -> dict:
    """torchao fake-quantization configs with the numerics of the post-training scheme `scheme`."""
    check_scheme(scheme)
    from torchao.quantization.qat import IntxFakeQuantizeConfig

    configs = {"weight_config": IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)}
    if scheme == "int8-dynamic":
        configs["activation_config"] = IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False)
    return configs


def prepare_qat(model: nn.Module, scheme: str = "int8-dynamic") -> nn.Module:
    """Swap every `nn.Linear` for torchao's fake-quantized linear (in place).

    Forward passes then see the weights (and, for "int8-dynamic", the activations) rounded to int8 as the deployed
    model will; gradients pass straight through the rounding. Call `finish_qat` before saving."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(step="prepare", **fake_quantize_configs(scheme)))
    logger.info(
        "quantization-aware training (%s): %d linear layers fake-quantized",
        scheme,
        sum(type(m).__name__ == "FakeQuantizedLinear" for m in model.modules()),
    )
    return model


def finish_qat(model: nn.Module) -> nn.Module:
    """Swap the fake-quantized linears back to plain `nn.Linear` (same trained weights), in place."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(step="convert"))
    return model


__all__ = ["QUANTIZATION_SCHEMES", "check_scheme", "fake_quantize_configs", "finish_qat", "prepare_qat"]
