"""The iLLaMA classifier a recipe trains (preset or saved folder, optional weight selection from LLaMA) and the image
processor saved with it; `is_model_dir` and the head log shared by every model family."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from ..labels import class_names, label_fields
from .recipes import Recipe

logger = logging.getLogger(__name__)

ModelBuilder = Callable[[str, Recipe, list[str]], Any]  # (model, recipe, label names) -> classifier


def is_model_dir(model: str | None) -> bool:
    return model is not None and os.path.isfile(os.path.join(str(model), "config.json"))


def build_model(model: str, recipe: Recipe, label_names: list[str]):
    """A preset name -> a new model; a saved folder -> that model, with a new head if the class count differs.

    A different `recipe.image_size` resizes the position embeddings (bicubic, class row kept aside).
    `init_from_llama` runs weight selection from a LLaMA checkpoint.
    """
    from modeling_illama import ILlamaForImageClassification, load_preset

    labels = label_fields(label_names)
    if is_model_dir(model):
        net = load_classifier_folder(
            ILlamaForImageClassification,
            model,
            label_names,
            drop_path_rate=recipe.drop_path_rate,
            ignore_mismatched_sizes=True,
            **labels,
        )
        if recipe.image_size and square_size(net.config.image_size) != recipe.image_size:
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


def load_classifier_folder(model_class, model: str, label_names: list[str], **kwargs):
    """`model_class.from_pretrained(model, **kwargs)` in float32 for fine-tuning: the head's fate is logged, and
    every weight but the classifier's must come from the folder."""
    from modeling_illama.loading import check_loading_info

    net, info = model_class.from_pretrained(model, dtype=torch.float32, output_loading_info=True, **kwargs)
    log_head(model, info, label_names)
    check_loading_info(model, info, new_modules=("classifier.",), remedy="fine-tune from a complete model folder")
    return net


def log_head(model: str, info: dict, label_names: list[str]) -> None:
    """Say what happened to the classifier: kept (same classes), kept with new names, or new (other count)."""
    from transformers import AutoConfig

    saved_names = class_names(AutoConfig.from_pretrained(model).id2label)
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


def square_size(size) -> int:
    """The side of a square `image_size` (int or pair); other shapes are refused."""
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


__all__ = ["ModelBuilder", "build_image_processor", "build_model", "is_model_dir", "log_head", "square_size"]
