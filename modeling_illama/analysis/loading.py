"""Load what the analyses measure: a saved classifier folder with its preprocessing, and batches of a dataset split."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def load_classifier(path: str, attn_implementation: str | None = None):
    """(model, image processor) of a saved `AutoModelForImageClassification` folder (iLLaMA, ViT, DeiT, ...).

    iLLaMA is put in its deployed state (soft-mask rate 0). The folder's preprocessor is used when it has one,
    otherwise the authors' eval transform at the config's resolution."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import modeling_illama  # noqa: F401  (registers the Auto classes)

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} is not a saved model folder (no config.json)")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForImageClassification.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
    if hasattr(model, "set_soft_mask_rate"):
        model.set_soft_mask_rate(0.0)
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        processor = AutoImageProcessor.from_pretrained(path)
    else:
        logger.warning("no preprocessor_config.json in %s: using the authors' eval transform", path)
        processor = modeling_illama.build_image_processor(model.config.image_size)
    return model, processor


def dataset_pixel_values(
    dataset: str, split: str, processor, limit: int | None = None, image_column=None, label_column=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, labels) of the first `limit` decodable images of a split the training stack reads."""
    from torch.utils.data import DataLoader

    from ..training.data import collate_images, load_image_dataset, with_transform

    data = load_image_dataset(dataset, split, False, image_column, label_column, shuffle=False)
    if limit:
        data.dataset = data.dataset.select(range(min(limit, len(data.dataset))))
    transformed = with_transform(data, lambda image: processor(image, return_tensors="pt")["pixel_values"][0])
    batches = list(DataLoader(transformed, batch_size=64, collate_fn=collate_images))
    pixel_values = torch.cat([b["pixel_values"] for b in batches])
    if not len(pixel_values):
        raise ValueError(f"no decodable image in {dataset} ({split})")
    return pixel_values, torch.cat([b["labels"] for b in batches])


__all__ = ["dataset_pixel_values", "load_classifier"]
