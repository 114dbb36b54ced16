"""Semantic segmentation: an iLLaMA backbone inside Transformers' `UperNetForSemanticSegmentation`, trained
with Trainer from a recipe whose `task` is "semantic-segmentation".

Data: any `datasets` source (Hub id, parquet folder or file, streaming) with an image column and a label-map
column (the recipe's `image_column` / `label_column`, ADE20K's Hub names `image` / `annotation` by default). Label maps hold class ids 0 .. num_labels - 1
and the void id 255, which the loss and the metrics ignore.

Training images and masks are transformed together (torchvision's joint transforms, nearest neighbour for
masks): random rescale (mmsegmentation's keep-ratio `Resize` with a ratio range), random crop, horizontal
flip. An image smaller than the crop after rescaling is padded; padded pixels are void, so they count
neither in the loss nor in the metrics. Evaluation (and the saved image processor) resizes to one fixed
`eval_size`; the metrics are computed at that size. A label map whose size differs from its image, or that holds
an id that is neither a class nor void, stops the run with a `LabelError` naming it (the evaluation split is
checked before training starts, training examples as they are read).

`build_segmentation_training` is `tasks.TASK_BUILDERS[("semantic-segmentation", "illama")]`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image
from transformers import Trainer, UperNetConfig, UperNetForSemanticSegmentation

from ..configuration_illama import to_pair
from ..image_processing_illama import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, build_segmentation_image_processor
from ..labels import LabelError, label_fields
from .assembly import StepLogCallback, TrainingRun, resolve_dataset, run_arguments, start_run, warmup_in_steps
from .data import decode_image, open_split
from .metrics import load_metric
from .models import is_model_dir
from .optim import optimizer_param_groups
from .recipes import Recipe

logger = logging.getLogger(__name__)

TASK = "semantic-segmentation"


@dataclass
class SegmentationSettings:
    """The `segmentation:` mapping of a recipe (the rest of a segmentation run is ordinary recipe fields)."""

    label_names: list[str] = field(default_factory=list)  # class names, index = class id
    ignore_index: int = 255  # void label: ignored by the loss and the metrics
    reduce_labels: bool = False  # ADE20K: label 0 ("other objects") -> void, the others shifted down by one
    crop_size: int | list[int] = 512  # training crop (height, width); also the backbone's image_size
    scale_base: list[int] = field(default_factory=lambda: [512, 2048])  # (h, w) the random rescale fits into
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # ratio range of that rescale
    hflip: float = 0.5
    eval_size: list[int] = field(default_factory=lambda: [512, 512])  # (h, w) of evaluation / saved processor
    out_indices: list[int] | None = None  # backbone stages fed to the decoder; None: 4 evenly spaced blocks
    add_fpn: bool = True  # 4x, 2x, 1x, 0.5x pyramid from the 4 stages (BEiT's neck)
    decoder_hidden_size: int = 512  # UperNet channels
    auxiliary_head: bool = True  # FCN head on the third feature map, loss weight below
    auxiliary_channels: int = 256
    auxiliary_loss_weight: float = 0.4

    def __post_init__(self):
        if not self.label_names:
            raise ValueError("recipe field segmentation.label_names must list the class names (index = class id)")
        low, high = (float(v) for v in self.scale_range)
        if not 0 < low <= high:
            raise ValueError(
                f"segmentation.scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}"
            )
        if 0 <= self.ignore_index < len(self.label_names):
            raise ValueError(
                f"segmentation.ignore_index ({self.ignore_index}) must not be a class id (0..{len(self.label_names) - 1})"
            )

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> SegmentationSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(recipe.segmentation) - known)
        if unknown:
            raise ValueError(f"unknown segmentation field(s) {unknown}; valid: {sorted(known)}")
        return cls(**recipe.segmentation)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# --------------------------------------------------------------------------------------------- data


def decode_label_map(value: Any) -> np.ndarray:
    """A label map (8-bit grayscale or palette PNG) as an int64 (height, width) array of class ids."""
    image = (
        value
        if isinstance(value, Image.Image)
        else Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    )
    if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"a label map must be a single-channel image of class ids, got mode {image.mode!r}")
    return np.asarray(image, dtype=np.int64)


def check_label_map(image: Image.Image, label_map: np.ndarray, settings: SegmentationSettings) -> np.ndarray:
    """Errors for a mask whose size differs from its image and for ids that are neither classes nor void;
    applies `reduce_labels`."""
    if label_map.shape != (image.height, image.width):
        raise LabelError(
            f"label map of size {label_map.shape[1]}x{label_map.shape[0]} (width x height) for an image of "
            f"{image.width}x{image.height}: masks must have their image's size"
        )
    if settings.reduce_labels:
        label_map = np.where(label_map == 0, settings.ignore_index, label_map - 1)
        label_map[label_map == settings.ignore_index - 1] = settings.ignore_index
    valid = (label_map < settings.num_labels) | (label_map == settings.ignore_index)
    if not valid.all():
        bad = np.unique(label_map[~valid])[:10].tolist()
        raise LabelError(
            f"label map holds ids {bad}: expected class ids 0..{settings.num_labels - 1} or the void id "
            f"{settings.ignore_index} (num_labels = len(segmentation.label_names) = {settings.num_labels})"
        )
    return label_map


class SegmentationTrainTransform:
    """Joint random rescale (keep ratio, to fit `scale_base` x U(scale_range)), crop (padding image with 0
    and mask with void) and horizontal flip, then ImageNet normalisation."""

    def __init__(self, settings: SegmentationSettings):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self.settings = settings
        self.tv_tensors = tv_tensors
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: settings.ignore_index}
        self.transform = v2.Compose(
            [
                # torchvision's target_size is (width, height): min(w_t / w, h_t / h) * U(scale_range)
                v2.ScaleJitter(to_pair(settings.scale_base)[::-1], scale_range=tuple(settings.scale_range)),
                v2.RandomCrop(to_pair(settings.crop_size), pad_if_needed=True, fill=fill),
                v2.RandomHorizontalFlip(settings.hflip),
                v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
            ]
        )

    def __call__(self, image: Image.Image, label_map: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2.functional import pil_to_tensor

        image_tensor = self.tv_tensors.Image(pil_to_tensor(image))
        mask = self.tv_tensors.Mask(torch.from_numpy(label_map))
        image_tensor, mask = self.transform(image_tensor, mask)
        return image_tensor.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


class SegmentationEvalTransform:
    """The saved image processor: image and mask resized to `eval_size` (bilinear / nearest)."""

    def __init__(self, settings: SegmentationSettings, processor):
        self.settings = settings
        self.processor = processor

    def __call__(self, image: Image.Image, label_map: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        mask = Image.fromarray(label_map.astype(np.uint8))  # ids <= 255 after check_label_map
        out = self.processor(images=image, segmentation_maps=mask, do_reduce_labels=False, return_tensors="pt")
        return out["pixel_values"][0], out["labels"][0].long()


class SegmentationExampleTransform:
    """datasets transform: decode, check and transform -> {"pixel_values", "labels"}."""

    def __init__(self, transform, columns: tuple[str, str], settings: SegmentationSettings):
        self.transform = transform
        self.image_column, self.annotation_column = columns
        self.settings = settings

    def example(self, example: dict) -> dict:
        image = decode_image(example[self.image_column])
        if image is None:
            raise ValueError("undecodable image in a segmentation dataset")
        label_map = check_label_map(image, decode_label_map(example[self.annotation_column]), self.settings)
        pixel_values, labels = self.transform(image, label_map)
        return {"pixel_values": pixel_values, "labels": labels}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        columns = (self.image_column, self.annotation_column)
        examples = [self.example(dict(zip(columns, values))) for values in zip(*(batch[c] for c in columns))]
        return {key: [e[key] for e in examples] for key in ("pixel_values", "labels")}


def load_segmentation_split(
    source: str,
    split: str,
    columns: tuple[str, str],
    streaming: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    rank: int = 0,
    world_size: int = 1,
):
    """One split with just the image and annotation `columns`, images left encoded (decoded in the transform).
    Streamed data is shuffled through a buffer and split across processes by node."""
    dataset = open_split(source, split, streaming)
    present = list(dataset.column_names or (dataset.features or {}).keys())
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"{source} split {split!r} has columns {present}, not {missing}; pass --image-column / --label-column "
            "(or set image_column / label_column in the recipe)"
        )
    for column in columns:
        if isinstance((dataset.features or {}).get(column), datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    dataset = dataset.select_columns(list(columns))
    if streaming:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset


def check_label_maps(dataset, columns: tuple[str, str], settings: SegmentationSettings, what: str) -> None:
    """Every label map of a (non-streamed) split against its image's size and the classes, before training.
    Only image headers are read (PIL opens lazily), the label maps are decoded."""
    if isinstance(dataset, datasets.IterableDataset):
        return
    image_column, annotation_column = columns
    for index, example in enumerate(dataset):
        value = example[image_column]
        image = (
            value
            if isinstance(value, Image.Image)
            else Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
        )
        try:
            check_label_map(image, decode_label_map(example[annotation_column]), settings)
        except LabelError as error:
            raise LabelError(f"{what}, example {index}: {error}") from None


def with_segmentation_transform(dataset, transform, columns: tuple[str, str], settings: SegmentationSettings):
    example_transform = SegmentationExampleTransform(transform, columns, settings)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(example_transform.example, remove_columns=list(columns))
    return dataset.with_transform(example_transform)


def collate_segmentation(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.stack([e["labels"] for e in examples]),
    }


# --------------------------------------------------------------------------------------------- model


def default_out_indices(num_layers: int) -> list[int]:
    """4 evenly spaced blocks ending at the last: [3, 6, 9, 12] for 12 blocks, [2, 3, 4, 6] for 6 (rounded)."""
    return sorted({max(1, round(num_layers * k / 4)) for k in (1, 2, 3, 4)})


def upernet_config(backbone_config, settings: SegmentationSettings) -> UperNetConfig:
    """Transformers' UperNet on `backbone_config` with the recipe's decoder, loss and class names."""
    return UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=settings.decoder_hidden_size,
        use_auxiliary_head=settings.auxiliary_head,
        auxiliary_in_channels=backbone_config.hidden_size,
        auxiliary_channels=settings.auxiliary_channels,
        auxiliary_loss_weight=settings.auxiliary_loss_weight,
        loss_ignore_index=settings.ignore_index,
        **label_fields(settings.label_names),
    )


def build_segmentation_model(model: str, recipe: Recipe, settings: SegmentationSettings):
    """UperNet on an iLLaMA backbone: from a preset (from scratch), from `recipe.backbone` (an iLLaMA folder:
    its weights, position table resized to the crop), or a saved UperNet folder (continued training)."""
    from transformers import AutoConfig

    from modeling_illama import ILlamaBackbone, load_preset
    from modeling_illama.loading import check_loading_info

    crop = to_pair(settings.crop_size)
    if is_model_dir(model) and AutoConfig.from_pretrained(model).model_type == "upernet":
        net, info = UperNetForSemanticSegmentation.from_pretrained(
            model, dtype=torch.float32, output_loading_info=True
        )
        check_loading_info(model, info, remedy="continue from a complete segmentation folder")
        return net

    backbone = None
    if recipe.backbone:
        if not is_model_dir(recipe.backbone):
            raise ValueError(f"--backbone / recipe field backbone {recipe.backbone!r} is not a saved model folder")
        saved = AutoConfig.from_pretrained(recipe.backbone)
        out_indices = settings.out_indices or default_out_indices(saved.num_hidden_layers)
        backbone, info = ILlamaBackbone.from_pretrained(
            recipe.backbone,
            out_indices=out_indices,
            add_fpn=settings.add_fpn,
            drop_path_rate=recipe.drop_path_rate,
            dtype=torch.float32,
            output_loading_info=True,
        )
        # the pyramid neck is new; every transformer weight must come from the folder
        check_loading_info(recipe.backbone, info, new_modules=("fpn.",), remedy="start from a complete iLLaMA folder")
        if backbone.config.grid_size != tuple(c // p for c, p in zip(crop, to_pair(backbone.config.patch_size))):
            logger.info("resizing position embeddings %s -> %s", backbone.config.image_size, crop)
            backbone.resize_position_embeddings(crop)
        backbone_config = backbone.config
    else:
        preset = load_preset(model, **recipe.model_overrides)
        out_indices = settings.out_indices or default_out_indices(preset.num_hidden_layers)
        backbone_config = load_preset(
            model,
            **{**recipe.model_overrides, "image_size": crop if crop[0] != crop[1] else crop[0]},
            drop_path_rate=recipe.drop_path_rate,
            out_indices=out_indices,
            add_fpn=settings.add_fpn,
        )
    net = UperNetForSemanticSegmentation(upernet_config(backbone_config, settings))
    if backbone is not None:
        net.backbone.load_state_dict(backbone.state_dict())
    return net


# --------------------------------------------------------------------------------------------- metrics


def segmentation_metrics(settings: SegmentationSettings):
    """compute_metrics for Trainer: mIoU, pixel accuracy, mean accuracy and per-class IoU (local evaluate module)."""

    def compute(eval_pred) -> dict[str, float]:
        predictions = np.asarray(eval_pred.predictions)
        references = np.asarray(eval_pred.label_ids)
        result = load_metric("mean_iou").compute(
            predictions=list(predictions),
            references=list(references),
            num_labels=settings.num_labels,
            ignore_index=settings.ignore_index,
        )
        metrics = {k: result[k] for k in ("mean_iou", "pixel_accuracy", "mean_accuracy")}
        metrics.update({f"iou_{name}": iou for name, iou in zip(settings.label_names, result["per_category_iou"])})
        return metrics

    return compute


def predicted_labels(logits, labels):
    """Keep only the argmax of each pixel during evaluation (the logits of a whole split do not fit in memory)."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.argmax(dim=1)


# --------------------------------------------------------------------------------------------- trainer


class SegmentationTrainer(Trainer):
    """Trainer with the package's parameter groups (`optim.optimizer_param_groups`: no weight decay on 1-D
    weights, the backbone's position table and class token). Optimizer and schedule are Transformers' own
    (`optim`, `lr_scheduler_type`; the recipes use "polynomial" with power 1, mmsegmentation's poly)."""

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            backbone = getattr(model, "backbone", None)
            no_decay = [f"backbone.{name}" for name in getattr(backbone, "no_weight_decay", set)()]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            groups = optimizer_param_groups(model, self.args.weight_decay, no_weight_decay=no_decay)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def optimizer_steps_per_epoch(self) -> int | None:
        """Optimizer steps in one pass over the training data, with Trainer's own rounding; None if unknown."""
        if isinstance(self.train_dataset, datasets.IterableDataset):
            if not self.args.train_examples:
                return None
            per_step = self.args.train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
            return max(self.args.train_examples // per_step, 1)
        batches = len(self.get_train_dataloader())
        return max(math.ceil(batches / self.args.gradient_accumulation_steps), 1)


@dataclass
class SegmentationData:
    dataset: Any
    label_names: list[str]


def check_segmentation_recipe(recipe: Recipe) -> None:
    """Recipe fields that have no meaning for segmentation, refused by name."""
    if recipe.soft_mask != "none":
        raise ValueError(
            "segmentation recipes train at the backbone's fixed soft-mask rate (model_overrides.soft_mask_rate); "
            f"set soft_mask: none (got {recipe.soft_mask!r})"
        )
    if recipe.layer_decay:
        raise ValueError(f"layer_decay ({recipe.layer_decay}) is for classification recipes; remove it")
    if recipe.model_ema:
        raise ValueError("model_ema is for classification recipes; set model_ema: false")
    if getattr(recipe, "qat", None):
        raise ValueError(f"qat ({recipe.qat}) is for classification recipes; remove it")


def build_segmentation_training(recipe: Recipe, model: torch.nn.Module | None = None) -> TrainingRun:
    """`TASK_BUILDERS[("semantic-segmentation", "illama")]`: data, UperNet on an iLLaMA backbone (`recipe.model`
    preset from scratch, `recipe.backbone` folder, or a saved UperNet folder) and Trainer. `model`: a ready
    segmentation model instead (benchmarks train another backbone with the same data and schedule).

    `recipe` is left as it is, as in the classification builder: the Trainer trains with a copy whose run-time fields
    are set (gradient accumulation, `max_steps` of streamed data, `warmup_steps` from `warmup_epochs`).
    """
    check_segmentation_recipe(recipe)
    state = start_run(recipe, needs_model=model is None)
    settings = SegmentationSettings.from_recipe(recipe)
    columns = (recipe.image_column or "image", recipe.label_column or "annotation")
    train, evaluation = load_segmentation_data(recipe, state, columns, settings)
    net = model if model is not None else build_segmentation_model(recipe.model, recipe, settings)
    processor = build_segmentation_image_processor(settings.eval_size, settings.reduce_labels)
    train_set = with_segmentation_transform(train, SegmentationTrainTransform(settings), columns, settings)
    eval_set = None
    if evaluation is not None:
        eval_set = with_segmentation_transform(
            evaluation, SegmentationEvalTransform(settings, processor), columns, settings
        )
    trainer = SegmentationTrainer(
        model=net,
        args=run_arguments(recipe, state.num_processes, evaluates=evaluation is not None),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collate_segmentation,
        processing_class=processor,
        compute_metrics=segmentation_metrics(settings) if eval_set is not None else None,
        preprocess_logits_for_metrics=predicted_labels,
        callbacks=[StepLogCallback()],
    )
    steps_per_epoch = trainer.optimizer_steps_per_epoch()
    trainer.args.warmup_steps = warmup_in_steps(trainer.args, steps_per_epoch)
    log_segmentation_run(trainer.args, settings, steps_per_epoch, net)
    names = settings.label_names
    return TrainingRun(
        trainer,
        None,
        SegmentationData(train, names),
        SegmentationData(evaluation, names) if evaluation is not None else None,
        steps_per_epoch,
        processor,
    )


def load_segmentation_data(recipe: Recipe, state, columns: tuple[str, str], settings: SegmentationSettings):
    """The training split (this process's shard when streamed) and the evaluation split, its label maps checked
    before training (None without one)."""
    train = load_segmentation_split(
        resolve_dataset(recipe.dataset),
        recipe.train_split,
        columns,
        recipe.streaming,
        recipe.seed,
        recipe.shuffle_buffer,
        state.process_index,
        state.num_processes,
    )
    if not recipe.eval_split:
        return train, None
    eval_source = resolve_dataset(recipe.eval_dataset or recipe.dataset)
    evaluation = load_segmentation_split(eval_source, recipe.eval_split, columns)
    check_label_maps(evaluation, columns, settings, f"{recipe.eval_dataset or recipe.dataset} {recipe.eval_split}")
    return train, evaluation


def log_segmentation_run(args: Recipe, settings: SegmentationSettings, steps_per_epoch: int | None, net) -> None:
    logger.info(
        "segmentation: %d classes, crop %s, steps per epoch %s, warmup %s steps (%s), gradient accumulation %d, "
        "soft-mask rate %s",
        settings.num_labels,
        settings.crop_size,
        steps_per_epoch,
        args.warmup_steps,
        getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        args.gradient_accumulation_steps,
        getattr(net.config.backbone_config, "soft_mask_rate", None),
    )


__all__ = [
    "SegmentationSettings",
    "SegmentationTrainer",
    "build_segmentation_image_processor",
    "build_segmentation_model",
    "build_segmentation_training",
    "check_label_map",
    "collate_segmentation",
    "segmentation_metrics",
]
