"""Evaluate a saved classifier on a dataset split: top-1, top-5, ECE, loss and images/s (`illama-eval`'s loop)."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..labels import class_names
from .data import collate_images, load_image_dataset, with_transform
from .metrics import classification_metrics

logger = logging.getLogger(__name__)


def label_mapping(dataset_names: list[str] | None, model_id2label: dict[int, str]) -> np.ndarray | None:
    """Dataset class id -> model class id when both are named and the orders differ; None when ids agree."""
    model_names = class_names(model_id2label)
    if not dataset_names or dataset_names == model_names:
        if dataset_names and len(dataset_names) > len(model_names):
            raise ValueError(f"dataset has {len(dataset_names)} classes, the model {len(model_names)}")
        return None
    missing = [n for n in dataset_names if n not in model_names]
    if missing:
        if len(dataset_names) == len(model_names):
            logger.warning("dataset and model class names differ (%s...); using class ids as they are", missing[:3])
            return None
        raise ValueError(f"dataset classes {missing[:5]} are not classes of the model ({len(model_names)} classes)")
    index = {name: i for i, name in enumerate(model_names)}
    return np.array([index[name] for name in dataset_names])


@torch.no_grad()
def evaluate_model(model, loader, device, mapping: np.ndarray | None = None, total: int | None = None) -> dict:
    """Run the model over `loader`; metrics through the local evaluate modules."""
    model.eval().to(device)
    all_logits, all_labels, skipped, images = [], [], 0, 0
    model_seconds = 0.0
    start = time.perf_counter()
    with tqdm(total=total, unit="img", desc="evaluating") as bar:
        for batch in loader:
            skipped += batch["num_undecodable"]
            if batch["pixel_values"].shape[0] == 0:
                continue
            pixel_values = batch["pixel_values"].to(device)
            tick = time.perf_counter()
            logits = model(pixel_values=pixel_values).logits.float().cpu()
            model_seconds += time.perf_counter() - tick
            all_logits.append(logits)
            all_labels.append(batch["labels"])
            images += len(logits)
            bar.update(len(logits) + batch["num_undecodable"])
    wall = time.perf_counter() - start
    if not images:
        raise ValueError("no image could be evaluated (empty split or every image undecodable)")
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    if mapping is not None:
        labels = torch.as_tensor(mapping)[labels]
    return {
        **classification_metrics(logits.numpy(), labels.numpy()),
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "num_images": images,
        "undecodable_images": skipped,
        "images_per_second": images / wall,
        "model_images_per_second": images / model_seconds,
        "wall_seconds": wall,
    }


def evaluate_saved_model(
    model: str,
    dataset: str,
    split: str = "validation",
    *,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    limit: int | None = None,
    device: str = "cpu",
) -> dict:
    """Load a saved model folder (or Hub id) in its deployed state and evaluate it on `dataset`/`split`.

    The folder's `preprocessor_config.json` is used when present, otherwise the authors' eval transform at the
    config's resolution. Dataset classes are matched to the model's by name when both are named.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..image_processing import build_image_processor

    looks_local = os.path.exists(model) or model.startswith((os.sep, ".")) or model.count("/") > 1
    if looks_local and not os.path.isfile(os.path.join(model, "config.json")):
        raise ValueError(
            f"{model} is not a saved model folder (no config.json); pass the folder written "
            "by illama-train or illama-convert"
        )
    net = AutoModelForImageClassification.from_pretrained(model, dtype=torch.float32)
    if os.path.isfile(os.path.join(model, "preprocessor_config.json")):
        processor = AutoImageProcessor.from_pretrained(model)
    else:
        size = net.config.image_size
        logger.warning("no preprocessor_config.json in %s: using the authors' eval transform at %s px", model, size)
        processor = build_image_processor(size)

    data = load_image_dataset(dataset, split, streaming, image_column, label_column, shuffle=False)
    if limit:
        data.dataset = (
            data.dataset.take(limit) if streaming else data.dataset.select(range(min(limit, len(data.dataset))))
        )
    transformed = with_transform(data, lambda image: processor(image, return_tensors="pt")["pixel_values"][0])
    loader = DataLoader(transformed, batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers)
    mapping = label_mapping(data.label_names, net.config.id2label)
    total = None if streaming else len(data.dataset)
    results = evaluate_model(net, loader, device, mapping, total)
    results.update(model=model, dataset=dataset, split=split, device=device, torch_threads=torch.get_num_threads())
    return results


__all__ = ["evaluate_model", "evaluate_saved_model", "label_mapping"]
