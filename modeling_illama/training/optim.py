"""AdamW parameter groups and the per-step warmup + cosine learning-rate schedule of the paper."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

# Parameters that are never decayed besides 1-D tensors (biases, norm weights).
NO_DECAY_NAMES = ("position_embeddings", "cls_token")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or any(part in name for part in NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and 1-D params + position embeddings + cls token without decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if no_weight_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def create_adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def warmup_cosine_lr(step: int, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at optimizer step `step` (0-based), as the authors' per-step table:

    warmup: numpy.linspace(0, base_lr, warmup_steps)[step];
    then min_lr + (base_lr - min_lr) * (1 + cos(pi * i / (total_steps - warmup_steps))) / 2, i = step - warmup_steps.
    """
    if step < warmup_steps:
        return base_lr if warmup_steps == 1 else base_lr * step / (warmup_steps - 1)
    decay_steps = max(1, total_steps - warmup_steps)
    i = min(step - warmup_steps, decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * i / decay_steps))


def _lr_factor(step: int, base_lr: float, **kwargs) -> float:
    return warmup_cosine_lr(step, base_lr, **kwargs) / base_lr


def create_warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> LambdaLR:
    """A LambdaLR stepping once per optimizer step (Trainer does this) through `warmup_cosine_lr`."""
    if base_lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {base_lr}")
    factor = partial(_lr_factor, base_lr=base_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)
    return LambdaLR(optimizer, factor)
