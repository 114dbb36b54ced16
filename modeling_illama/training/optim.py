"""Optimizer parameter groups through timm: no weight decay on 1-D parameters and on what the model's
`no_weight_decay()` names (position table, class token); optional layer-wise learning-rate decay from the
model's `group_matcher()` (BEiT / timm convention).

The learning-rate schedule is Transformers' own `cosine_with_min_lr` with linear warm-up. The authors' per-step
table (`numpy.linspace(0, lr, W)` warm-up, then the same half cosine to `min_lr`) reaches the peak one step
earlier: during warm-up their rate is lr * s / (W - 1) against lr * s / W here, at most lr / W apart (at step
W - 1), and identical from step W on. `tests/test_training_schedules.py` measures this on the paper's recipes.
"""

from __future__ import annotations

from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay
from torch import nn


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
