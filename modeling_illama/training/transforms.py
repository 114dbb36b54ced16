"""Image transforms (timm), mixup/cutmix and the soft-target loss of the paper's recipes."""

from __future__ import annotations

import torch
from timm.data import Mixup, create_transform
from timm.loss import SoftTargetCrossEntropy

from ..image_processing_illama import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .recipes import Recipe


def train_transform(recipe: Recipe, image_size: int, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
    """RandomResizedCrop + flip + RandAugment + random erasing (timm.create_transform), PIL image -> tensor.

    With `crop_padding > 0` (small images such as CIFAR) the crop is instead the classic resize + pad +
    random crop (torchvision), which keeps the object scale of the evaluation images.
    """
    if recipe.crop_padding > 0:
        return padded_crop_transform(recipe, image_size, mean, std)
    return create_transform(
        input_size=image_size,
        is_training=True,
        scale=recipe.crop_scale,
        ratio=recipe.crop_ratio,
        hflip=recipe.hflip,
        color_jitter=recipe.color_jitter or 0.0,
        auto_augment=recipe.rand_augment,
        interpolation=recipe.interpolation,
        re_prob=recipe.random_erasing,
        re_mode="pixel",
        re_count=1,
        mean=mean,
        std=std,
    )


def padded_crop_transform(recipe: Recipe, image_size: int, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
    """Resize to image_size, reflect-pad by crop_padding, random crop, flip, [RandAugment], normalise, [erasing]."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import str_to_interp_mode
    from torchvision import transforms as T

    steps = [
        T.Resize((image_size, image_size), interpolation=str_to_interp_mode(recipe.interpolation)),
        T.RandomCrop(image_size, padding=recipe.crop_padding, padding_mode="reflect"),
    ]
    if recipe.hflip > 0:
        steps.append(T.RandomHorizontalFlip(recipe.hflip))
    if recipe.rand_augment:
        fill = tuple(round(255 * m) for m in mean)
        steps.append(
            rand_augment_transform(recipe.rand_augment, {"translate_const": int(image_size * 0.45), "img_mean": fill})
        )
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if recipe.random_erasing > 0:
        steps.append(RandomErasing(recipe.random_erasing, mode="pixel", device="cpu"))
    return T.Compose(steps)


def processor_transform(image_processor):
    """PIL image -> tensor through the image processor saved with the model: evaluation during training,
    `illama-eval` and pipelines all preprocess with this one object."""

    def transform(image):
        return image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    return transform


def create_mixup(recipe: Recipe, num_labels: int) -> Mixup | None:
    """timm Mixup (mixup/cutmix with switch probability and label smoothing), or None when both are off."""
    if recipe.mixup <= 0 and recipe.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=recipe.mixup,
        cutmix_alpha=recipe.cutmix,
        prob=recipe.mixup_prob,
        switch_prob=recipe.mixup_switch_prob,
        mode="batch",
        label_smoothing=recipe.label_smoothing,
        num_classes=num_labels,
    )


class ClassificationLoss(torch.nn.Module):
    """Soft-target cross-entropy for (B, C) targets (mixup), label-smoothed cross-entropy for (B,) targets."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.soft = SoftTargetCrossEntropy()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if targets.ndim == 2:
            return self.soft(logits, targets.to(logits.dtype))
        return torch.nn.functional.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
