"""Optimizer parameter groups through timm: no weight decay on 1-D parameters and on what the model's
`no_weight_decay()` names (position table, class token); optional layer-wise learning-rate decay from the
model's `group_matcher()` (BEiT / timm convention).

The learning-rate schedule is Transformers' own `cosine_with_min_lr` with linear warm-up. The authors' per-step
table (`numpy.linspace(0, lr, W)` warm-up, then the same half cosine to `min_lr`) reaches the peak one step
earlier: during warm-up their rate is lr * s / (W - 1) against lr * s / W here, at most lr / W apart (at step
W - 1), and identical from step W on. `tests/test_training_schedules.py` measures this on the paper's recipes.

`lr_schedule_unit: epoch` (the lm4ve-* recipes) replaces it with DeiT's schedule, which Pang et al. train with:
timm's cosine stepped once per epoch (`deit_epoch_lr`).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def optimizer_param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    lr: float | None = None,
    no_weight_decay: list[str] | None = None,
) -> list[dict]:
    """Parameter groups for any torch optimizer. With `layer_decay`, each group's `lr` is `lr * lr_scale`
    (scale 1 for the last layer, norm and head; `layer_decay ** depth_from_top` below), so the schedulers
    that multiply every group's initial lr keep the ratios. Groups are ordered highest scale first, so
    Trainer's logged learning rate is the head's. `no_weight_decay` names the parameters kept out of decay
    when `model` has no `no_weight_decay()` of its own (e.g. a Transformers model wrapping an iLLaMA backbone)."""
    if no_weight_decay is not None:
        no_decay = sorted(no_weight_decay)
    else:
        no_decay = sorted(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else []
    if not layer_decay:
        return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay)
    if lr is None:
        raise ValueError("layer-wise lr decay needs the base learning rate")
    groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return sorted(groups, key=lambda group: -group["lr_scale"])


def deit_epoch_lr(
    epoch: int, base_lr: float, min_lr: float, warmup_lr: float, warmup_epochs: int, total_epochs: int
) -> float:
    """Learning rate used during epoch `epoch` (0-based) by DeiT's training loop (Touvron et al., `main.py`; also
    the LM4VisualEncoding code): timm's `CosineLRScheduler(t_initial=total_epochs, lr_min=min_lr,
    warmup_lr_init=warmup_lr, warmup_t=warmup_epochs)` constructed before training and stepped with
    `step(epoch)` AFTER each epoch. So epoch 0 runs at `warmup_lr` and epoch e >= 1 at the schedule's value
    for e - 1:

        t < warmup_epochs: warmup_lr + t * (base_lr - warmup_lr) / warmup_epochs
        else:              min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total_epochs)) / 2
    """
    if epoch <= 0:
        return warmup_lr if warmup_epochs > 0 else base_lr
    t = epoch - 1
    if t < warmup_epochs:
        return warmup_lr + t * (base_lr - warmup_lr) / warmup_epochs
    t = min(t, total_epochs)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / total_epochs))


def _epoch_lr_factor(step: int, base_lr: float, steps_per_epoch: int, **kwargs) -> float:
    return deit_epoch_lr(step // steps_per_epoch, base_lr, **kwargs) / base_lr


def create_epoch_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    min_lr: float,
    warmup_lr: float,
    warmup_epochs: int,
    total_epochs: int,
    steps_per_epoch: int,
) -> LambdaLR:
    """A LambdaLR stepped once per optimizer step whose value changes only at epoch boundaries (`deit_epoch_lr`)."""
    if base_lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {base_lr}")
    if steps_per_epoch < 1 or total_epochs < 1:
        raise ValueError(
            f"an epoch schedule needs steps_per_epoch >= 1 and total_epochs >= 1, got {steps_per_epoch}, {total_epochs}"
        )
    factor = partial(
        _epoch_lr_factor,
        base_lr=base_lr,
        steps_per_epoch=steps_per_epoch,
        min_lr=min_lr,
        warmup_lr=warmup_lr,
        warmup_epochs=int(warmup_epochs),
        total_epochs=int(total_epochs),
    )
    return LambdaLR(optimizer, factor)
