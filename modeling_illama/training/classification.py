"""The image-classification run of a recipe: data, classifier, transforms, `ILlamaTrainer` and its schedules."""

from __future__ import annotations

import logging

from .assembly import StepLogCallback, TrainingRun, resolve_dataset, run_arguments, start_run, warmup_in_steps
from .data import ImageDataset, collate_images, load_image_dataset, with_transform
from .ema import ModelEmaCallback
from .guards import TrainingGuard
from .label_checks import validate_training_labels
from .metrics import compute_classification_metrics
from .models import ModelBuilder, build_image_processor, build_model, square_size
from .recipes import Recipe
from .soft_mask import SoftMaskCallback, cutoff_in_steps
from .trainer import ILlamaTrainer
from .transforms import processor_transform, train_transform

logger = logging.getLogger(__name__)


def build_image_classification(recipe: Recipe, model_builder: ModelBuilder | None = None) -> TrainingRun:
    """Data, classifier (`model_builder`, default: the iLLaMA `build_model`), Trainer, soft-mask / EMA callbacks
    and epoch -> step conversions.

    `recipe` is left as it is: the Trainer trains with a copy whose run-time fields are set (gradient accumulation
    from `global_batch_size`, `max_steps` of streamed data, `warmup_steps` from `warmup_epochs`), `run.trainer.args`.
    """
    state = start_run(recipe)
    train, evaluation = load_classification_data(recipe, state)
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
        from .qat import prepare_qat

        prepare_qat(net, recipe.qat)
    image_size = square_size(net.config.image_size)
    processor = build_image_processor(recipe, image_size)
    train_set = with_transform(train, train_transform(recipe, image_size), label_check=train_check)
    eval_set = with_transform(evaluation, processor_transform(processor), eval_map) if evaluation else None

    args = run_arguments(recipe, state.num_processes, evaluates=evaluation is not None)
    if args.model_ema and args.fsdp:
        raise ValueError("model_ema is not supported with FSDP (the EMA would hold a full copy per process)")
    soft_mask = SoftMaskCallback(args.soft_mask, 0)
    ema = ModelEmaCallback(args.model_ema_decay, args.model_ema_warmup) if args.model_ema else None
    trainer = ILlamaTrainer(
        model=net,
        args=args,
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
    steps_per_epoch = schedule_in_steps(trainer, soft_mask)
    return TrainingRun(trainer, soft_mask, train, evaluation, steps_per_epoch, processor, ema)


def load_classification_data(recipe: Recipe, state) -> tuple[ImageDataset, ImageDataset | None]:
    """The training split (this process's shard when streamed) and the evaluation split (None without one)."""
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
    if not recipe.eval_split:
        return train, None
    evaluation = load_image_dataset(
        resolve_dataset(recipe.eval_dataset or recipe.dataset),
        recipe.eval_split,
        False,
        recipe.image_column,
        recipe.label_column,
        shuffle=False,
    )
    return train, evaluation


def schedule_in_steps(trainer: ILlamaTrainer, soft_mask: SoftMaskCallback) -> int | None:
    """Measure the epoch in optimizer steps and set the epoch-given schedules in steps on the run: the warm-up (the
    trainer's own `args`) and the soft-mask cutoff. Returns the steps per epoch (None when unknown)."""
    args = trainer.args
    steps_per_epoch = trainer.optimizer_steps_per_epoch()
    trainer.steps_per_epoch = steps_per_epoch
    args.warmup_steps = warmup_in_steps(args, steps_per_epoch)
    soft_mask.cutoff_steps = soft_mask_cutoff(args, steps_per_epoch)
    logger.info(
        "steps per epoch %s, warmup %s steps (%s), soft mask %s cutoff %d steps, %d process(es), "
        "gradient accumulation %d%s%s",
        steps_per_epoch,
        args.warmup_steps,
        getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        args.soft_mask,
        soft_mask.cutoff_steps,
        args.world_size,
        args.gradient_accumulation_steps,
        f", layer decay {args.layer_decay}" if args.layer_decay else "",
        f", EMA decay {args.model_ema_decay}" if args.model_ema else "",
    )
    return steps_per_epoch


def soft_mask_cutoff(args: Recipe, steps_per_epoch: int | None) -> int:
    """The optimizer step at which the soft-mask rate reaches its deployed value."""
    if args.soft_mask_cutoff_steps is not None:
        return args.soft_mask_cutoff_steps
    if args.soft_mask == "none":
        return 0
    if steps_per_epoch is None:
        raise ValueError(
            "a soft-mask cutoff in epochs needs a known epoch length: set soft_mask_cutoff_steps=N "
            "(or train_examples=N)"
        )
    return cutoff_in_steps(args.soft_mask_cutoff_epochs, steps_per_epoch)


__all__ = ["build_image_classification", "load_classification_data", "schedule_in_steps", "soft_mask_cutoff"]
