"""`illama-eval`: top-1, top-5, ECE, loss and images/s of a saved classifier on a dataset split.

illama-eval --model runs/demo --dataset data/cifar10-mini --split test
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

logger = logging.getLogger("modeling_illama")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="illama-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="saved model folder (config.json + weights)")
    parser.add_argument("--dataset", required=True, help="Hub id, local image folder, parquet folder or file")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", help="JSON file for the results (default: <model>/eval_<split>.json)")
    return parser.parse_args(argv)


def label_mapping(dataset_names: list[str] | None, model_id2label: dict[int, str]) -> np.ndarray | None:
    """Dataset class id -> model class id when both are named and the orders differ; None when ids agree."""
    model_names = [model_id2label[i] for i in sorted(model_id2label)]
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
    from modeling_illama.training.metrics import load_metric

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
    k = (1, 5) if logits.shape[1] >= 5 else (1, logits.shape[1])
    top = load_metric("top_k_accuracy").compute(predictions=logits.numpy(), references=labels.numpy(), k=k)
    ece = load_metric("expected_calibration_error").compute(
        predictions=logits.numpy(), references=labels.numpy(), from_logits=True
    )
    return {
        "top1": top["top1"],
        "top5": top.get("top5", top[f"top{k[1]}"]),
        "ece": ece["ece"],
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "num_images": images,
        "undecodable_images": skipped,
        "images_per_second": images / wall,
        "model_images_per_second": images / model_seconds,
        "wall_seconds": wall,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError) as error:  # missing model folder, bad dataset/split/columns, label mismatch
        raise SystemExit(f"illama-eval: {error}") from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import modeling_illama  # noqa: F401  (registers the Auto classes)
    from modeling_illama.training.data import collate_images, load_image_dataset, with_transform

    looks_local = os.path.exists(args.model) or args.model.startswith((os.sep, ".")) or args.model.count("/") > 1
    if looks_local and not os.path.isfile(os.path.join(args.model, "config.json")):
        raise ValueError(
            f"{args.model} is not a saved model folder (no config.json); pass the folder written "
            "by illama-train or illama-convert"
        )
    model = AutoModelForImageClassification.from_pretrained(args.model, dtype=torch.float32)
    model.set_soft_mask_rate(0.0)
    if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
        processor = AutoImageProcessor.from_pretrained(args.model)
    else:
        size = model.config.image_size
        logger.warning(
            "no preprocessor_config.json in %s: using the authors' eval transform at %s px", args.model, size
        )
        processor = modeling_illama.build_image_processor(size)

    data = load_image_dataset(
        args.dataset, args.split, args.streaming, args.image_column, args.label_column, shuffle=False
    )
    dataset = data.dataset
    if args.limit:
        dataset = dataset.take(args.limit) if args.streaming else dataset.select(range(min(args.limit, len(dataset))))
    data.dataset = dataset
    transformed = with_transform(data, lambda image: processor(image, return_tensors="pt")["pixel_values"][0])
    loader = DataLoader(
        transformed, batch_size=args.batch_size, collate_fn=collate_images, num_workers=args.num_workers
    )
    mapping = label_mapping(data.label_names, model.config.id2label)
    total = None if args.streaming else len(dataset)
    results = evaluate_model(model, loader, args.device, mapping, total)
    results.update(
        model=args.model,
        dataset=args.dataset,
        split=args.split,
        device=args.device,
        torch_threads=torch.get_num_threads(),
    )
    output = args.output or os.path.join(args.model, f"eval_{args.split}.json")
    with open(output, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print(
        f"top-1 {100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%  ECE {results['ece']:.4f}  "
        f"loss {results['loss']:.4f}  {results['images_per_second']:.1f} images/s  -> {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
