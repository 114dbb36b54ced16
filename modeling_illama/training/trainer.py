"""Trainer glue: the model, data, loss, optimizer and callbacks of one recipe, dispatched on its task and family.

`build_training(recipe)` looks up `TASK_BUILDERS[(recipe.task, recipe.model_family)]`; another task or model
family registers its own builder there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, set_seed

from ..labels import class_names, label_fields
from .data import ImageDataset, collate_images, load_image_dataset, with_transform
from .ema import ModelEmaCallback
from .guards import TrainingGuard, check_finite_logits
from .label_checks import validate_training_labels
from .metrics import classification_metrics
from .optim import create_epoch_cosine_scheduler, optimizer_param_groups
from .recipes import Recipe, run_on_cpu
from .resume import last_checkpoint  # noqa: F401  (the newest complete checkpoint, for the CLI)
from .soft_mask import SoftMaskCallback, cutoff_in_steps
from .transforms import ClassificationLoss, create_mixup, processor_transform, train_transform

logger = logging.getLogger(__name__)
step_logger = logging.getLogger("modeling_illama.training.steps")  # JSON line per log step; the CLI sends it to a file


# --------------------------------------------------------------------------------------------- model


def is_model_dir(model: str | None) -> bool:
    return model is not None and os.path.isfile(os.path.join(str(model), "config.json"))


ModelBuilder = Callable[[str, Recipe, list[str]], Any]  # (model, recipe, label names) -> classifier


def build_model(model: str, recipe: Recipe, label_names: list[str]):
    """A preset name -> a new model; a saved folder -> that model, with a new head if the class count differs.

    A different `recipe.image_size` resizes the position embeddings (bicubic, class row kept aside).
    `init_from_llama` runs weight selection from a LLaMA checkpoint.
    """
    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.loading import check_loading_info

    labels = label_fields(label_names)
    if is_model_dir(model):
        net, info = ILlamaForImageClassification.from_pretrained(
            model,
            drop_path_rate=recipe.drop_path_rate,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            **labels,
        )
        _log_head(model, net, info, label_names)
        check_loading_info(model, info, new_modules=("classifier.",), remedy="fine-tune from a complete model folder")
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


def _log_head(model: str, net, info: dict, label_names: list[str]) -> None:
    """Say what happened to the classifier: kept (same classes), kept with new names, or new (other count)."""
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(model)
    saved_names = class_names(saved.id2label)
    new_head = [key for key, *_ in info.get("mismatched_keys", []) if key.startswith("classifier.")]
    new_head += [key for key in info.get("missing_keys", []) if key.startswith("classifier.")]
    if new_head:
        logger.info(
            "classification head: NEW, randomly initialised (%s has %d classes, the data %d)",
            model,
            len(saved_names),
            len(label_names),
        )
    elif saved_names != list(label_names):
        logger.info(
            "classification head: KEPT (same class count %d); label names replaced by the data set's (%s -> %s)",
            len(label_names),
            saved_names[:3],
            list(label_names)[:3],
        )
    else:
        logger.info("classification head: KEPT (same %d labels as %s)", len(label_names), model)


def _square(size) -> int:
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"training expects square images, model image_size is {size}")
        return int(size[0])
    return int(size)


def build_image_processor(recipe: Recipe, image_size: int):
    """The image processor saved with the model; evaluation during training runs exactly this processor."""
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
    check_finite_logits(logits)
    return classification_metrics(logits, np.asarray(eval_pred.label_ids))


# --------------------------------------------------------------------------------------------- trainer


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


class StepLogCallback(TrainerCallback):
    """Every Trainer log entry as one JSON line on `modeling_illama.training.steps` (the CLI routes it to
    train.log only; the console already shows Trainer's own line)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            step_logger.info("step %d: %s", state.global_step, json.dumps(logs, default=float))


# --------------------------------------------------------------------------------------------- assembly


@dataclass
class TrainingRun:
    trainer: ILlamaTrainer
    soft_mask: SoftMaskCallback
    train_data: ImageDataset
    eval_data: ImageDataset | None
    steps_per_epoch: int | None
    image_processor: Any
    ema: ModelEmaCallback | None = None
    extras: dict[str, Any] = field(default_factory=dict)


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


def build_training(recipe: Recipe) -> TrainingRun:
    """Everything `illama-train` needs for `recipe` (its task and model family choose the builder)."""
    key = (recipe.task, recipe.model_family)
    if key not in TASK_BUILDERS:
        raise ValueError(
            f"no trainer for task {key[0]!r} with model family {key[1]!r}; known: {sorted(TASK_BUILDERS)}"
        )
    return TASK_BUILDERS[key](recipe)


def build_image_classification(recipe: Recipe, model_builder: ModelBuilder | None = None) -> TrainingRun:
    """Data, classifier (`model_builder`, default: the iLLaMA `build_model`), Trainer, soft-mask / EMA callbacks
    and epoch -> step conversions.

    Sets the run-time fields of `recipe` in place: gradient accumulation (from `global_batch_size`),
    `max_steps` of streamed data and `warmup_steps` (from `warmup_epochs`).
    """
    if not recipe.model:
        raise ValueError("no model: pass --model PRESET|DIR or set `model:` in the recipe")
    if not recipe.dataset:
        raise ValueError("no data set: pass --dataset (Hub id, folder or parquet) or set `dataset:` in the recipe")
    state = distributed_state()
    set_seed(recipe.seed)
    dataset = resolve_dataset(recipe.dataset)
    train = load_image_dataset(
        dataset,
        recipe.train_split,
        recipe.streaming,
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
            resolve_dataset(recipe.eval_dataset or recipe.dataset),
            recipe.eval_split,
            False,
            recipe.image_column,
            recipe.label_column,
            shuffle=False,
        )
    else:
        recipe.eval_strategy = "no"

    train_check, eval_map = validate_training_labels(
        train,
        evaluation,
        recipe.dataset,
        recipe.eval_dataset or recipe.dataset,
        recipe.train_split,
        recipe.eval_split,
    )

    net = (model_builder or build_model)(recipe.model, recipe, train.label_names)
    if recipe.qat:  # fake-quantized linears during training, plain ones again in save_final_model
        from ..analysis.quantization import prepare_qat

        prepare_qat(net, recipe.qat)
    image_size = _square(net.config.image_size)
    processor = build_image_processor(recipe, image_size)
    train_set = with_transform(train, train_transform(recipe, image_size), label_check=train_check)
    eval_set = with_transform(evaluation, processor_transform(processor), eval_map) if evaluation else None

    recipe.set_step_counts(state.num_processes)
    if recipe.model_ema and recipe.fsdp:
        raise ValueError("model_ema is not supported with FSDP (the EMA would hold a full copy per process)")
    soft_mask = SoftMaskCallback(recipe.soft_mask, 0)
    ema = ModelEmaCallback(recipe.model_ema_decay, recipe.model_ema_warmup) if recipe.model_ema else None
    trainer = ILlamaTrainer(
        model=net,
        args=recipe,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collate_images,
        processing_class=processor,
        compute_metrics=compute_classification_metrics if eval_set else None,
        num_labels=len(train.label_names),
        soft_mask=soft_mask,
        ema=ema,
        callbacks=[StepLogCallback()],
    )
    trainer.add_callback(TrainingGuard(trainer))  # 0 steps, no decodable image, non-finite loss: an error

    steps_per_epoch = trainer.optimizer_steps_per_epoch()
    trainer.steps_per_epoch = steps_per_epoch
    if recipe.warmup_epochs is not None:
        if steps_per_epoch is None and recipe.warmup_epochs:
            raise ValueError("warmup in epochs needs a known epoch length: set warmup_steps=N (or train_examples=N)")
        recipe.warmup_steps = cutoff_in_steps(recipe.warmup_epochs, steps_per_epoch or 0)
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
    soft_mask.cutoff_steps = cutoff
    logger.info(
        "steps per epoch %s, warmup %s steps (%s), soft mask %s cutoff %d steps, %d process(es), "
        "gradient accumulation %d%s%s",
        steps_per_epoch,
        recipe.warmup_steps,
        recipe.lr_scheduler_type.value if hasattr(recipe.lr_scheduler_type, "value") else recipe.lr_scheduler_type,
        recipe.soft_mask,
        cutoff,
        state.num_processes,
        recipe.gradient_accumulation_steps,
        f", layer decay {recipe.layer_decay}" if recipe.layer_decay else "",
        f", EMA decay {recipe.model_ema_decay}" if recipe.model_ema else "",
    )
    return TrainingRun(trainer, soft_mask, train, evaluation, steps_per_epoch, processor, ema)


def build_vit_frozen_llm_classification(recipe: Recipe) -> TrainingRun:
    """The image-classification run of a ViT/DeiT with frozen LLaMA layer(s) (Pang et al.; `vit_frozen_llm.py`)."""
    from .vit_frozen_llm import build_vit_frozen_llm_model

    return build_image_classification(recipe, build_vit_frozen_llm_model)


def build_semantic_segmentation(recipe: Recipe) -> TrainingRun:
    """UperNet on an iLLaMA backbone (training/segmentation.py)."""
    from .segmentation import build_segmentation_training

    return build_segmentation_training(recipe)


TASK_BUILDERS: dict[tuple[str, str], Callable[[Recipe], TrainingRun]] = {
    ("image-classification", "illama"): build_image_classification,
    ("image-classification", "vit_frozen_llm"): build_vit_frozen_llm_classification,
    ("semantic-segmentation", "illama"): build_semantic_segmentation,
}


def save_final_model(run: TrainingRun, output_dir: str | Path) -> None:
    """Hub-ready folder: weights (safetensors), config with id2label and the deployed r, preprocessor, remote code.

    With `model_ema_save` the EMA weights become the saved model (the raw weights stay in the checkpoints)."""
    if run.trainer.args.model_ema_save:
        run.ema.copy_to(run.trainer.model)
        logger.info("saving the EMA weights as the model (model_ema_save)")
    if run.trainer.args.qat:
        from ..analysis.quantization import finish_qat

        finish_qat(run.trainer.model)
    run.trainer.save_model(str(output_dir))
