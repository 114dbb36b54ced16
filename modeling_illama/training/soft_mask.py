"""The soft-mask schedule (docs/DESIGN.md, training recipes) and the callback applying it at every optimizer step."""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .recipes import check_soft_mask_schedule

logger = logging.getLogger(__name__)


def soft_mask_rate(step: int, schedule: str, cutoff_steps: int) -> float:
    """Rate r for optimizer step `step` (0-based).

    "constant": 1 for steps [0, cutoff), then 0. "linear": 1 -> 0 evenly over [0, cutoff) (the first step
    is 1 and step cutoff - 1 is 0, as numpy.linspace(1, 0, cutoff)), then 0. "none": 0 throughout.
    """
    check_soft_mask_schedule(schedule)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if schedule == "none" or step >= cutoff_steps:
        return 0.0
    if schedule == "constant" or cutoff_steps == 1:
        return 1.0
    return 1.0 - step / (cutoff_steps - 1)


def cutoff_in_steps(cutoff_epochs: float, steps_per_epoch: int) -> int:
    """Epochs -> optimizer steps, as the authors' per-step schedule of length epochs * steps_per_epoch."""
    return int(math.floor(cutoff_epochs * steps_per_epoch + 1e-9))


class SoftMaskCallback(TrainerCallback, ExportableState):
    """Sets the model's soft-mask rate from the schedule before every optimizer step.

    The rate depends only on `state.global_step` (the count of finished optimizer steps), so every
    micro-batch of one accumulated step and every process see the same r, and a resumed run continues
    exactly. The schedule and the current rate are stored in each checkpoint's trainer_state.json.
    The rate is the model's runtime state (`model.set_soft_mask_rate`); the config, and so every saved
    config.json, keeps the deployed rate. At the end of training the model is put back at that rate.
    """

    def __init__(self, schedule: str = "none", cutoff_steps: int = 0):
        check_soft_mask_schedule(schedule)
        self.schedule = schedule
        self.cutoff_steps = int(cutoff_steps)
        self.rate = soft_mask_rate(0, schedule, self.cutoff_steps)
        self.step = 0

    def _apply(self, model, step: int) -> None:
        self.step = step
        self.rate = soft_mask_rate(step, self.schedule, self.cutoff_steps)
        if model is not None:
            model.set_soft_mask_rate(self.rate)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model, state.global_step)
        logger.info(
            "soft mask: schedule=%s cutoff=%d steps, r=%.4f at step %d",
            self.schedule,
            self.cutoff_steps,
            self.rate,
            state.global_step,
        )

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            model.reset_soft_mask_rate()
            self.rate = model.soft_mask_rate

    def state(self) -> dict:
        return {
            "args": {"schedule": self.schedule, "cutoff_steps": self.cutoff_steps},
            "attributes": {"rate": self.rate, "step": self.step},
        }
