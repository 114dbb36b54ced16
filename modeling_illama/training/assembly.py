"""What every task builder shares: the `TrainingRun` it returns, the process state, the data-set path lookup, the
recipe copy a run trains with (run-time fields resolved), the epoch -> step warm-up, the step log and the final save.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback, set_seed

from .recipes import Recipe, run_on_cpu
from .soft_mask import cutoff_in_steps

logger = logging.getLogger(__name__)
step_logger = logging.getLogger("modeling_illama.training.steps")  # JSON line per log step; the CLI sends it to a file


@dataclass
class TrainingRun:
    """What a task builder returns: the ready Trainer (its `args` are the run's resolved copy of the recipe), the
    callbacks the run steers, the loaded data and the optimizer steps per epoch (None when unknown)."""

    trainer: Trainer
    soft_mask: Any  # SoftMaskCallback of an iLLaMA classification run, else None
    train_data: Any
    eval_data: Any | None
    steps_per_epoch: int | None
    image_processor: Any
    ema: Any | None = None  # ModelEmaCallback when the recipe keeps an EMA
    extras: dict[str, Any] = field(default_factory=dict)


class StepLogCallback(TrainerCallback):
    """Every Trainer log entry as one JSON line on `modeling_illama.training.steps` (the CLI routes it to
    train.log only; the console already shows Trainer's own line)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            step_logger.info("step %d: %s", state.global_step, json.dumps(logs, default=float))


def distributed_state():
    from accelerate import PartialState

    return PartialState(cpu=run_on_cpu())


def resolve_dataset(name: str) -> str:
    """A data set as given (Hub id or existing path), or a relative path inside this repository (the bundled
    `data/cifar10-mini` of a source checkout when run from elsewhere)."""
    if os.path.exists(name) or os.path.isabs(name):
        return name
    bundled = Path(__file__).resolve().parents[2] / name
    return str(bundled) if bundled.exists() else name


def start_run(recipe: Recipe, needs_model: bool = True):
    """The checks every task makes before loading anything, then the process state with the recipe's seed set."""
    if needs_model and not recipe.model:
        raise ValueError("no model: pass --model PRESET|DIR or set `model:` in the recipe")
    if not recipe.dataset:
        raise ValueError("no data set: pass --dataset (Hub id, folder or parquet) or set `dataset:` in the recipe")
    state = distributed_state()
    set_seed(recipe.seed)
    return state


def run_arguments(recipe: Recipe, num_processes: int, evaluates: bool) -> Recipe:
    """A copy of `recipe` with the run-time fields set: gradient accumulation (from `global_batch_size`), `max_steps`
    of streamed data, and `eval_strategy: no` without evaluation data. `recipe` itself is not changed."""
    changes: dict[str, Any] = recipe.step_counts(num_processes)
    if not evaluates:
        changes["eval_strategy"] = "no"
    return dataclasses.replace(recipe, **changes)


def warmup_in_steps(args: Recipe, steps_per_epoch: int | None) -> int:
    """`warmup_epochs` in optimizer steps (the recipe's `warmup_steps` when it gives none)."""
    if args.warmup_epochs is None:
        return args.warmup_steps
    if steps_per_epoch is None and args.warmup_epochs:
        raise ValueError("warmup in epochs needs a known epoch length: set warmup_steps=N (or train_examples=N)")
    return cutoff_in_steps(args.warmup_epochs, steps_per_epoch or 0)


def save_final_model(run: TrainingRun, output_dir: str | Path) -> None:
    """Hub-ready folder: weights (safetensors), config with id2label and the deployed r, preprocessor, remote code.

    With `model_ema_save` the EMA weights become the saved model (the raw weights stay in the checkpoints)."""
    if run.trainer.args.model_ema_save:
        run.ema.copy_to(run.trainer.model)
        logger.info("saving the EMA weights as the model (model_ema_save)")
    if run.trainer.args.qat:
        from .qat import finish_qat

        finish_qat(run.trainer.model)
    run.trainer.save_model(str(output_dir))


__all__ = [
    "StepLogCallback",
    "TrainingRun",
    "distributed_state",
    "resolve_dataset",
    "run_arguments",
    "save_final_model",
    "start_run",
    "warmup_in_steps",
]
