"""Exponential moving average of the weights (timm's `ModelEmaV3`) as a Trainer callback."""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from safetensors.torch import load_file, save_file
from timm.utils.model_ema import ModelEmaV3
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

EMA_WEIGHTS_NAME = "model_ema.safetensors"


class ModelEmaCallback(TrainerCallback):
    """Updates an EMA copy of the model after every optimizer step and stores it in each checkpoint.

    `step` is Trainer's count of finished optimizer steps, so timm's decay warm-up and `update_after_step`
    follow optimizer steps, not micro-batches. The EMA lives on the model's device, in the model's dtype.
    With `load_best_model_at_end` the EMA of the best checkpoint is restored at the end of training.
    """

    def __init__(self, decay: float = 0.9999, use_warmup: bool = False):
        self.decay = decay
        self.use_warmup = use_warmup
        self.ema: ModelEmaV3 | None = None
        self.resume_from: str | None = None  # checkpoint folder to restore the EMA from (set by the trainer)

    def attach(self, model: torch.nn.Module) -> None:
        self.ema = ModelEmaV3(model, decay=self.decay, use_warmup=self.use_warmup)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.ema is None:  # here, not earlier: the model is on its training device now
            self.attach(model)
        if self.resume_from:
            self.load(self.resume_from)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        # Trainer has just loaded the best checkpoint's raw weights: take that checkpoint's EMA too, so that
        # evaluation (model_ema_eval) and the saved model (model_ema_save) are the best epoch's EMA
        if args.load_best_model_at_end and state.best_model_checkpoint:
            self.load(state.best_model_checkpoint)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self.save(folder)

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        weights = {k: v.contiguous() for k, v in self.ema.module.state_dict().items()}
        save_file(weights, os.path.join(folder, EMA_WEIGHTS_NAME))

    def load(self, folder: str) -> None:
        path = os.path.join(folder, EMA_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model_ema is on but checkpoint {folder} holds no {EMA_WEIGHTS_NAME}")
        self.ema.module.load_state_dict(load_file(path, device=str(next(self.ema.module.parameters()).device)))
        logger.info("EMA weights restored from %s", path)

    @contextlib.contextmanager
    def weights_in(self, model: torch.nn.Module):
        """Temporarily put the EMA weights into `model` (evaluation with the EMA weights)."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.ema.module.state_dict())
        try:
            yield model
        finally:
            model.load_state_dict(live)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Make the EMA weights the model's own (save the EMA as the final model)."""
        model.load_state_dict(self.ema.module.state_dict())
