"""Training that cannot learn does not end as a success, and damaged files are found before they are used.

- `TrainingGuard` (a TrainerCallback) stops a run with `TrainingCannotLearnError` when it has 0 optimizer steps,
  when its first epoch held no decodable image, or when the loss, the gradient norm or the weights become
  non-finite: the check runs after each optimizer step, before Trainer saves a checkpoint, so the newest
  checkpoint holds the last finite weights and no NaN model is saved as the result.
- `check_finite_logits` refuses metrics computed on NaN / inf logits (they would be a meaningless accuracy).
- `checkpoint_files_problem` (over `utils.file_checks`) says why a weights or state file is
  truncated or damaged (read from its header, not loaded), so that resuming skips such a checkpoint.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch
from transformers import TrainerCallback

from ..utils.file_checks import first_damaged_file

logger = logging.getLogger(__name__)

# Trainer's state files in a checkpoint folder (torch.save zip archives)
STATE_FILE_PATTERNS = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_*.pth")


class TrainingCannotLearnError(RuntimeError):
    """The run would end with an untrained, undefined (NaN) or unfed model."""


def _last_checkpoint(output_dir: str) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(output_dir) if output_dir and os.path.isdir(output_dir) else None
    return f"the newest checkpoint, {found}, holds the last finite weights" if found else "no checkpoint was saved"


def parameters_finite(model: torch.nn.Module) -> bool:
    """True when every parameter is finite (one reduction and one device sync)."""
    sums = [p.detach().sum(dtype=torch.float32) for p in model.parameters() if p.numel()]
    return not sums or bool(torch.isfinite(torch.stack(sums).sum()))


class TrainingGuard(TrainerCallback):
    """Stops a run that cannot learn (see the module docstring). `trainer` (optional) gives the count of
    undecodable images (`ILlamaTrainer.undecodable_images`)."""

    def __init__(self, trainer=None):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps < 1:
            raise TrainingCannotLearnError(
                f"the run has {state.max_steps} optimizer steps (num_train_epochs={args.num_train_epochs}, "
                f"max_steps={args.max_steps}): nothing would be trained; give num_train_epochs > 0 or max_steps > 0 "
                "and a training split with at least one batch"
            )

    def _stop(self, args, state, what: str):
        raise TrainingCannotLearnError(
            f"{what} at optimizer step {state.global_step} (epoch {state.epoch or 0:.2f}): training stopped and the "
            f"model was not saved; {_last_checkpoint(args.output_dir)}. Lower learning_rate (now "
            f"{args.learning_rate:g}), set max_grad_norm (now {args.max_grad_norm}) or check the data"
        )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and not parameters_finite(model):
            self._stop(args, state, "the weights became non-finite (nan or inf)")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._stop(args, state, f"the training {key} is {value}")

    def on_epoch_end(self, args, state, control, **kwargs):
        undecodable = getattr(self.trainer, "undecodable_images", 0)
        if not undecodable or int(state.epoch or 0) > 1:
            return
        seen = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
        if undecodable >= seen:  # both counted per process
            raise TrainingCannotLearnError(
                f"no image of the first epoch could be decoded ({undecodable} undecodable): the model would "
                "learn nothing; check the image column (--image-column) and the files (see the warnings above)"
            )


def check_finite_logits(logits) -> None:
    """Refuse metrics of logits holding NaN or inf (a diverged or broken model): a ValueError saying how many."""
    values = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    bad = int(values.size - np.isfinite(values).sum())
    if bad:
        rows = int((~np.isfinite(values)).reshape(len(values), -1).any(axis=1).sum()) if values.ndim else 1
        raise ValueError(
            f"the model's logits hold {bad} non-finite value(s) (nan or inf) in {rows} of {len(values)} image(s): "
            "no metric is meaningful; the weights are damaged or training diverged"
        )


# --------------------------------------------------------------------------------------------- damaged files


def checkpoint_files_problem(folder: str | os.PathLike) -> str | None:
    """The problem of the first damaged weights or state file of a checkpoint folder, or None."""
    damaged = first_damaged_file(folder, STATE_FILE_PATTERNS)
    return damaged[1] if damaged else None


__all__ = [
    "TrainingCannotLearnError",
    "TrainingGuard",
    "check_finite_logits",
    "checkpoint_files_problem",
    "parameters_finite",
]
