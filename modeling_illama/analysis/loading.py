"""What the analyses run on: a saved classifier with its preprocessing, and preprocessed images of a dataset split
the training stack reads."""

from __future__ import annotations

import torch


def load_saved_classifier(model: str, attn_implementation: str | None = None, allow_missing_weights: bool = False):
    """(classifier, image processor) of a saved folder or Hub id (iLLaMA, ViT, DeiT, ...) in eval mode at its deployed
    state, through `modeling_illama.loading`: weights missing from the checkpoint are refused unless
    `allow_missing_weights`, and the checkpoint's own preprocessor is used when it has one."""
    from ..loading import load_classifier, load_image_processor

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    net = load_classifier(model, allow_missing_weights=allow_missing_weights, **kwargs).eval()
    return net, load_image_processor(model, net.config)


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


__all__ = ["dataset_pixel_values", "load_saved_classifier"]
