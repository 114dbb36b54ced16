"""Evaluate a saved classifier on a dataset split: top-1, top-5, ECE, loss and images/s (`illama-eval`'s loop)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..labels import class_names, label_mapping
from .data import collate_images, load_image_dataset, with_transform
from .label_checks import StreamingLabelCheck, check_label_ids
from .metrics import classification_metrics

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_model(
    model, loader, device, mapping: np.ndarray | None = None, total: int | None = None, keep_predictions: bool = False
) -> dict:
    """Run the model over `loader`; metrics through the local evaluate modules (and the logits and labels
    themselves with `keep_predictions`)."""
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
    results = {
        **classification_metrics(logits.numpy(), labels.numpy()),
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "num_images": images,
        "undecodable_images": skipped,
        "images_per_second": images / wall,
        "model_images_per_second": images / model_seconds,
        "wall_seconds": wall,
    }
    if keep_predictions:
        results.update(logits=logits, labels=labels)
    return results


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
    allow_missing_weights: bool = False,
    keep_predictions: bool = False,
) -> dict:
    """Load a saved model folder (or Hub id) in its deployed state and evaluate it on `dataset`/`split`.

    The checkpoint's `preprocessor_config.json` is used when present, otherwise the authors' eval transform at
    the config's resolution. Weights missing from the checkpoint are an error unless `allow_missing_weights`.
    Dataset classes are matched to the model's by name when both are named; label ids are checked first.
    With `keep_predictions`, the results also hold "logits" (n, C) and "labels" (n,) tensors (labels in the
    model's class ids) and "class_names".
    """
    from ..loading import load_classifier, load_image_processor

    net = load_classifier(model, allow_missing_weights=allow_missing_weights)
    processor = load_image_processor(model, net.config)

    data = load_image_dataset(dataset, split, streaming, image_column, label_column, shuffle=False)
    if limit:
        data.dataset = (
            data.dataset.take(limit) if streaming else data.dataset.select(range(min(limit, len(data.dataset))))
        )
    label_check = None
    if streaming:
        label_check = StreamingLabelCheck(len(data.label_names or net.config.id2label), split, dataset)
    else:
        check_label_ids(data.dataset[data.label_column], len(data.label_names), split, dataset)
    mapping = label_mapping(data.label_names, net.config.id2label)
    transformed = with_transform(
        data, lambda image: processor(image, return_tensors="pt")["pixel_values"][0], label_check=label_check
    )
    loader = DataLoader(transformed, batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers)
    total = None if streaming else len(data.dataset)
    results = evaluate_model(net, loader, device, mapping, total, keep_predictions)
    results.update(model=model, dataset=dataset, split=split, device=device, torch_threads=torch.get_num_threads())
    if keep_predictions:
        results["class_names"] = class_names(net.config.id2label) if net.config.id2label else None
    return results


__all__ = ["evaluate_model", "evaluate_saved_model", "label_mapping"]
