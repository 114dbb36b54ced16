"""Trainer glue: model, data, loss, optimizer, schedules and callbacks for one recipe."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from ..labels import class_names, label_fields
from .data import ImageDataset, collate_images, load_image_dataset, with_transform
from .label_checks import validate_training_labels
from .metrics import classification_metrics
from .optim import create_adamw, create_warmup_cosine_scheduler
from .recipes import Recipe
from .resume import last_checkpoint  # noqa: F401  (the newest complete checkpoint, for the CLI)
from .soft_mask import SoftMaskCallback, cutoff_in_steps
from .transforms import ClassificationLoss, create_mixup, eval_transform, train_transform

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- model


def is_model_dir(model: str) -> bool:
    return os.path.isfile(os.path.join(str(model), "config.json"))


def build_model(model: str, recipe: Recipe, label_names: list[str]):
    """A preset name -> a new model; a saved folder -> that model, head re-initialised if the labels differ.

    A different `recipe.image_size` resizes the position embeddings (docs/DESIGN.md, training recipes).
    `init_from_llama` runs weight selection from a LLaMA checkpoint.
    """
    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.loading import check_loading_info

    labels = label_fields(label_names)
    if is_model_dir(model):
        from transformers import AutoConfig

        saved = AutoConfig.from_pretrained(model)
        saved_names = class_names(saved.id2label)
        kwargs: dict[str, Any] = {"drop_path_rate": recipe.drop_path_rate, "dtype": torch.float32}
        if saved_names != list(label_names):
            logger.info(
                "label set differs from %s (%d -> %d classes): new classification head",
                model,
                len(saved_names),
                len(label_names),
            )
            kwargs.update(labels, ignore_mismatched_sizes=True)
        net, info = ILlamaForImageClassification.from_pretrained(model, output_loading_info=True, **kwargs)
        new_head = ("classifier.",) if "ignore_mismatched_sizes" in kwargs else ()
        check_loading_info(model, info, new_modules=new_head, remedy="fine-tune from a complete model folder")
        if recipe.image_size and _square(net.config.image_size) != recipe.image_size:
            logger.info("resizing position embeddings %s -> %s", net.config.image_size, recipe.image_size)
            net.resize_position_embeddings(recipe.image_size)
    else:
        overrides = dict(recipe.model_overrides)
        if recipe.image_size:
            overrides["image_size"] = recipe.image_size
        config = load_preset(model, **overrides, drop_path_rate=recipe.drop_path_rate, **labels)
        net = ILlamaForImageClassification(config)
    if recipe.init_from_llama:
        from modeling_illama.llm.weight_selection import init_model_from_llama

        report = init_model_from_llama(net, recipe.init_from_llama)
        logger.info("weight selection from %s: %s", recipe.init_from_llama, report)
    return net


def _square(size) -> int:
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"training expects square images, model image_size is {size}")
        return int(size[0])
    return int(size)


def build_image_processor(recipe: Recipe, image_size: int):
    """The saved eval preprocessing (matches `eval_transform`): resize by crop_pct, centre crop, ImageNet norm."""
    from modeling_illama import build_image_processor as build

    processor = build(image_size)
    processor.crop_pct = recipe.eval_crop_pct
    return processor


# --------------------------------------------------------------------------------------------- metrics


def compute_classification_metrics(eval_pred) -> dict[str, float]:
    """top-1, top-5 and ECE through the local evaluate modules."""
    logits = np.asarray(
        eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    )
    return classification_metrics(logits, np.asarray(eval_pred.label_ids))


# --------------------------------------------------------------------------------------------- trainer


class ILlamaTrainer(Trainer):
    """Trainer with the paper's loss (mixup/cutmix soft targets), AdamW groups and per-step cosine schedule.

    Evaluation always runs the deployed model (soft-mask rate 0) and restores the training rate afterwards.
    """

    def __init__(self, *args, recipe: Recipe, num_labels: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.mixup_fn = create_mixup(recipe, num_labels)
        self.loss_fn = ClassificationLoss(recipe.label_smoothing)
        self.model_accepts_loss_kwargs = False  # the loss is a mean; Trainer divides by accumulation steps
        self.warmup_steps = recipe.warmup_steps or 0
        self.undecodable_images = 0

    # optimisation
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            r = self.recipe
            self.optimizer = create_adamw(
                self.model if model is None else model, r.learning_rate, r.weight_decay, r.adam_betas, r.adam_eps
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = create_warmup_cosine_scheduler(
                optimizer or self.optimizer,
                self.recipe.learning_rate,
                self.recipe.min_lr,
                self.warmup_steps,
                num_training_steps,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # data
    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
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
            if not self.recipe.train_examples:
                return None
            return max(self.recipe.train_examples // (self.args.train_batch_size * self.args.world_size * ga), 1)
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

    # evaluation at the deployed rate (config.soft_mask_rate), then back to the scheduled one
    @contextlib.contextmanager
    def deployed_soft_mask(self):
        model = self.model
        rate = model.soft_mask_rate
        model.reset_soft_mask_rate()
        try:
            yield
        finally:
            model.set_soft_mask_rate(rate)

    def evaluate(self, *args, **kwargs):
        with self.deployed_soft_mask():
            return super().evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["soft_mask_rate"] = self.model.soft_mask_rate
            if self.undecodable_images:
                logs["undecodable_images"] = self.undecodable_images
        super().log(logs, start_time)


class FileLogCallback(TrainerCallback):
    """Every Trainer log line (loss, lr, soft-mask rate, eval metrics) also goes to the log file."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            logger.info("step %d: %s", state.global_step, json.dumps(logs, default=float))


# --------------------------------------------------------------------------------------------- assembly


@dataclass
class TrainingRun:
    trainer: ILlamaTrainer
    soft_mask: SoftMaskCallback
    train_data: ImageDataset
    eval_data: ImageDataset | None
    steps_per_epoch: int | None
    image_processor: Any


def run_on_cpu() -> bool:
    """CPU training when there is no GPU (or `accelerate launch --cpu`): several processes then use gloo.

    accelerate only detects multi-process CPU runs when asked for the CPU explicitly, so every place that
    creates the (shared) distributed state passes this.
    """
    from transformers.utils import strtobool

    return not torch.cuda.is_available() or bool(strtobool(os.environ.get("ACCELERATE_USE_CPU", "false")))


def distributed_state():
    from accelerate import PartialState

    return PartialState(cpu=run_on_cpu())


def training_arguments(recipe: Recipe, output_dir: str, num_processes: int, max_steps: int) -> TrainingArguments:
    """TrainingArguments (Transformers 5 names) from a recipe."""
    eval_split = recipe.eval_split
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=recipe.per_device_batch_size,
        per_device_eval_batch_size=recipe.eval_batch_size or recipe.per_device_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps(num_processes),
        num_train_epochs=recipe.epochs,
        max_steps=max_steps,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        adam_beta1=recipe.adam_betas[0],
        adam_beta2=recipe.adam_betas[1],
        adam_epsilon=recipe.adam_eps,
        max_grad_norm=recipe.max_grad_norm,
        bf16=recipe.bf16,
        fp16=recipe.fp16,
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        eval_strategy=recipe.eval_strategy if eval_split else "no",
        eval_steps=recipe.eval_steps,
        save_strategy=recipe.save_strategy,
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        seed=recipe.seed,
        dataloader_num_workers=recipe.dataloader_num_workers,
        dataloader_drop_last=False,  # keeps every eval image; an odd mixup batch drops one image instead
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        restore_callback_states_from_checkpoint=True,
        ddp_find_unused_parameters=False,
        use_cpu=run_on_cpu(),
        disable_tqdm=False,
    )


def build_training(
    recipe: Recipe,
    model: str,
    dataset: str,
    output_dir: str,
    streaming: bool = False,
    eval_dataset: str | None = None,
) -> TrainingRun:
    """Everything `illama-train` needs: data, model, Trainer, soft-mask callback and schedules."""
    state = distributed_state()
    set_seed(recipe.seed)
    train = load_image_dataset(
        dataset,
        recipe.train_split,
        streaming,
        recipe.image_column,
        recipe.label_column,
        recipe.shuffle_buffer,
        recipe.seed,
        state.process_index,
        state.num_processes,
    )
    if train.label_names is None:
        raise ValueError(
            f"{dataset} has no ClassLabel feature: class names are unknown when streaming; "
            "give a dataset with a ClassLabel label column"
        )
    evaluation = None
    if recipe.eval_split:
        evaluation = load_image_dataset(
            eval_dataset or dataset, recipe.eval_split, False, recipe.image_column, recipe.label_column, shuffle=False
        )

    train_check, eval_map = validate_training_labels(
        train, evaluation, dataset, eval_dataset or dataset, recipe.train_split, recipe.eval_split
    )

    net = build_model(model, recipe, train.label_names)
    image_size = _square(net.config.image_size)
    processor = build_image_processor(recipe, image_size)
    train_set = with_transform(train, train_transform(recipe, image_size), label_check=train_check)
    eval_set = with_transform(evaluation, eval_transform(recipe, image_size), eval_map) if evaluation else None

    max_steps = recipe.max_steps
    if streaming and max_steps <= 0:
        if not recipe.train_examples:
            raise ValueError("streaming data has no length: set max_steps=N or train_examples=N (images per epoch)")
        per_step = recipe.batch_size
        max_steps = math.ceil(recipe.epochs * max(recipe.train_examples // per_step, 1))
    args = training_arguments(recipe, output_dir, state.num_processes, max_steps)
    trainer = ILlamaTrainer(
        model=net,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collate_images,
        processing_class=processor,
        compute_metrics=compute_classification_metrics if eval_set else None,
        recipe=recipe,
        num_labels=len(train.label_names),
    )

    steps_per_epoch = trainer.optimizer_steps_per_epoch()
    if recipe.warmup_steps is None:
        if steps_per_epoch is None and recipe.warmup_epochs:
            raise ValueError("warmup in epochs needs a known epoch length: set warmup_steps=N (or train_examples=N)")
        trainer.warmup_steps = cutoff_in_steps(recipe.warmup_epochs, steps_per_epoch or 0)
    if recipe.soft_mask_cutoff_steps is not None:
        cutoff = recipe.soft_mask_cutoff_steps
    elif recipe.soft_mask == "none":
        cutoff = 0
    elif steps_per_epoch is None:
        raise ValueError(
            "a soft-mask cutoff in epochs needs a known epoch length: set soft_mask_cutoff_steps=N "
            "(or train_examples=N)"
        )
    else:
        cutoff = cutoff_in_steps(recipe.soft_mask_cutoff_epochs, steps_per_epoch)
    soft_mask = SoftMaskCallback(recipe.soft_mask, cutoff)
    trainer.add_callback(soft_mask)
    trainer.add_callback(FileLogCallback())
    logger.info(
        "steps per epoch %s, warmup %d steps, soft mask %s cutoff %d steps, %d process(es), gradient accumulation %d",
        steps_per_epoch,
        trainer.warmup_steps,
        recipe.soft_mask,
        cutoff,
        state.num_processes,
        args.gradient_accumulation_steps,
    )
    return TrainingRun(trainer, soft_mask, train, evaluation, steps_per_epoch, processor)


def save_final_model(run: TrainingRun, output_dir: str | Path) -> None:
    """Hub-ready folder: weights (safetensors), config with id2label and the deployed r, preprocessor, remote code."""
    run.trainer.save_model(str(output_dir))
