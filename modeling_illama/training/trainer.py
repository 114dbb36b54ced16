"""`ILlamaTrainer`: Transformers' Trainer with the paper's loss, timm parameter groups, the soft-mask schedule and EMA
(the run around it is assembled by `classification.build_image_classification`)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

import datasets
from torch.utils.data import DataLoader
from transformers import Trainer

from .ema import ModelEmaCallback
from .models import is_model_dir
from .optim import create_epoch_cosine_scheduler, optimizer_param_groups
from .soft_mask import SoftMaskCallback
from .transforms import ClassificationLoss, create_mixup

logger = logging.getLogger(__name__)


class ILlamaTrainer(Trainer):
    """Trainer with the paper's loss (mixup/cutmix soft targets), timm parameter groups (no decay on 1-D params,
    position table and class token; optional layer-wise lr decay), the soft-mask schedule and optional EMA.

    The optimizer class comes from `args.optim` and the schedule from `args.lr_scheduler_type` (Transformers'
    own). Evaluation runs the deployed model (soft-mask rate 0), with the EMA weights if `model_ema_eval`.
    """

    def __init__(self, *args, num_labels: int, soft_mask: SoftMaskCallback, ema: ModelEmaCallback | None, **kwargs):
        uses_soft_mask = hasattr(kwargs.get("model"), "set_soft_mask_rate")  # not the ViT family
        callbacks = [soft_mask] if uses_soft_mask else []
        callbacks += ([ema] if ema is not None else []) + list(kwargs.pop("callbacks", None) or [])
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self.soft_mask = soft_mask
        self.ema = ema
        self.mixup_fn = create_mixup(self.args, num_labels)
        self.loss_fn = ClassificationLoss(self.args.label_smoothing)
        self.model_accepts_loss_kwargs = False  # the loss is a mean; Trainer divides by accumulation steps
        self.undecodable_images = 0
        self.steps_per_epoch: int | None = None  # set by the builder; needed by lr_schedule_unit=epoch

    # optimisation
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            groups = optimizer_param_groups(
                model,
                self.args.weight_decay,
                self.args.layer_decay,
                optimizer_kwargs.get("lr", self.args.learning_rate),
            )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """`lr_schedule_unit: epoch`: DeiT's per-epoch timm cosine (`optim.deit_epoch_lr`); else Transformers'."""
        if self.lr_scheduler is None and self.args.lr_schedule_unit == "epoch":
            if not self.steps_per_epoch:
                raise ValueError("lr_schedule_unit=epoch needs a known epoch length (set train_examples=N)")
            args = self.args
            self.lr_scheduler = create_epoch_cosine_scheduler(
                optimizer or self.optimizer,
                args.learning_rate,
                (args.lr_scheduler_kwargs or {}).get("min_lr", 0.0),
                args.warmup_lr,
                round(args.warmup_epochs or 0),
                math.ceil(args.num_train_epochs),
                self.steps_per_epoch,
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    # data
    def _get_train_sampler(self, train_dataset=None):
        """timm's RepeatAugSampler when the recipe asks for repeated augmentation (DeiT): every image is drawn
        `repeated_augmentation` times per epoch, the copies going to different processes; an epoch keeps about
        len(dataset) samples in all."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.repeated_augmentation > 1 and not isinstance(dataset, datasets.IterableDataset):
            from timm.data.distributed_sampler import RepeatAugSampler

            return RepeatAugSampler(
                dataset,
                num_replicas=self.args.world_size,
                rank=self.args.process_index,
                shuffle=True,
                num_repeats=self.args.repeated_augmentation,
            )
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        if self.args.repeated_augmentation > 1 and not isinstance(dataset, datasets.IterableDataset):
            loader = super().get_train_dataloader()
            # the sampler is already rank-aware: make accelerate's batch-sharding wrapper a passthrough (as
            # Trainer does for its own rank-aware samplers)
            shard = getattr(loader, "batch_sampler", None)
            if shard is not None and hasattr(shard, "num_processes"):
                shard.num_processes, shard.process_index = 1, 0
            return loader
        if not isinstance(dataset, datasets.IterableDataset) or self.args.world_size == 1:
            return super().get_train_dataloader()
        # Streaming data is already split across processes (split_dataset_by_node): keep accelerate from
        # sharding it a second time, but let it move batches to the device.
        from accelerate.data_loader import prepare_data_loader

        loader = DataLoader(
            dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return prepare_data_loader(
            loader,
            device=self.args.device,
            num_processes=1,
            process_index=0,
            put_on_device=True,
            dispatch_batches=False,
        )

    def optimizer_steps_per_epoch(self) -> int | None:
        """Optimizer steps in one pass over the training data, with Trainer's own rounding; None if unknown."""
        ga = self.args.gradient_accumulation_steps
        if isinstance(self.train_dataset, datasets.IterableDataset):
            if not self.args.train_examples:
                return None
            return max(self.args.train_examples // (self.args.train_batch_size * self.args.world_size * ga), 1)
        batches = len(self.get_train_dataloader())
        return max(batches // ga + int(batches % ga > 0), 1)

    # loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = int(inputs.pop("num_undecodable", 0) or 0)
        if skipped:
            self.undecodable_images += skipped
            logger.warning("%d undecodable image(s) skipped so far", self.undecodable_images)
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if pixel_values.shape[0] == 0:  # every image of the batch was undecodable
            zero = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            return (zero, None) if return_outputs else zero
        if not model.training:
            outputs = model(pixel_values=pixel_values, labels=labels)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        if self.mixup_fn is not None:
            if pixel_values.shape[0] % 2:  # timm's batch mixup pairs images with a flipped batch
                pixel_values, labels = pixel_values[:-1], labels[:-1]
            pixel_values, labels = self.mixup_fn(pixel_values, labels)
        outputs = model(pixel_values=pixel_values)
        loss = self.loss_fn(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    # evaluation: deployed rate, optionally the EMA weights
    @contextlib.contextmanager
    def deployed_soft_mask(self):
        """The deployed rate (config.soft_mask_rate) inside, the scheduled one restored after."""
        model = self.model
        if not hasattr(model, "reset_soft_mask_rate"):  # a model family without soft mask
            yield
            return
        rate = model.soft_mask_rate
        model.reset_soft_mask_rate()
        try:
            yield
        finally:
            model.set_soft_mask_rate(rate)

    def evaluate(self, *args, **kwargs):
        weights = self.ema.weights_in(self.model) if self.args.model_ema_eval else contextlib.nullcontext()
        with self.deployed_soft_mask(), weights:
            return super().evaluate(*args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.ema is not None:
            self.ema.resume_from = resume_from_checkpoint

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and hasattr(self.model, "soft_mask_rate"):
            logs["soft_mask_rate"] = self.model.soft_mask_rate
        if "loss" in logs:
            if self.undecodable_images:
                logs["undecodable_images"] = self.undecodable_images
        super().log(logs, start_time)

    # Hub
    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """README.md with Hub metadata (library, pipeline, license, data, base model, model-index) and the recipe.

        Trainer calls this from `push_to_hub`; `illama-train` also calls it after the final evaluation."""
        if not self.is_world_process_zero():
            return
        from .model_card import render_training_card

        args = self.args
        metrics: dict[str, float] = {}
        for entry in self.state.log_history:  # latest value of every metric
            metrics.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
        curves = (
            "training_curves.png" if os.path.isfile(os.path.join(args.output_dir, "training_curves.png")) else None
        )
        text = render_training_card(
            model_name or (args.hub_model_id or Path(args.output_dir).name).split("/")[-1],
            args.recipe_dict(),
            metrics,
            self.state.log_history,
            model=args.model,
            dataset=args.dataset,
            eval_split=args.eval_split if self.eval_dataset is not None else None,
            curves=curves,
            from_scratch=not is_model_dir(args.model),
        )
        with open(os.path.join(args.output_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(text)


__all__ = ["ILlamaTrainer"]
