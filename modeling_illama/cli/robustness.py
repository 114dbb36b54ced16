"""`illama-robustness`: ImageNet-C mCE, ImageNet-A / -R / -Sketch top-1 and FGSM / PGD top-1 of a saved ImageNet-1K
classifier, as Pang et al. report them (see modeling_illama/analysis/robustness.py for the exact settings).

Each source is a local folder (ImageFolder layout, or parquet) or a Hub id; --split names the split of Hub
datasets and of folders that have split sub-folders (a folder of class folders is read whole).

examples:
  illama-robustness --model runs/vit-llama --imagenet-sketch songweig/imagenet_sketch --limit 500
  illama-robustness --model runs/vit-llama --imagenet-c data/ImageNet-C --imagenet-a data/imagenet-a \\
      --imagenet-r data/imagenet-r --imagenet-sketch songweig/imagenet_sketch --adversarial ILSVRC/imagenet-1k
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import _common as common

PROG = "illama-robustness"


def build_parser() -> argparse.ArgumentParser:
    parser = common.make_parser(PROG, __doc__)
    common.add_model(parser, what="an ImageNet-1K classifier")
    parser.add_argument("--imagenet-c", metavar="DIR", help="ImageNet-C root: <corruption>/<severity>/<wnid>/*")
    parser.add_argument("--imagenet-a", metavar="SRC", help="ImageNet-A (200 classes)")
    parser.add_argument("--imagenet-r", metavar="SRC", help="ImageNet-R (200 classes)")
    parser.add_argument("--imagenet-sketch", metavar="SRC", help="ImageNet-Sketch (1000 classes)")
    parser.add_argument("--adversarial", metavar="SRC", help="ImageNet-1K data for the FGSM / PGD evaluation")
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=["fgsm", "pgd"],
        choices=["fgsm", "pgd"],
        help="adversarial attacks run on --adversarial data",
    )
    common.add_split(parser)
    common.add_batch_size(parser)
    parser.add_argument("--limit", type=int, help="evaluate only the first N images of each set")
    common.add_device(parser)
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="JSON file; default: <model>/robustness.json for a folder, ./robustness_<org>--<name>.json for a Hub id",
    )
    return parser


def split_for(source: str, split: str) -> str:
    """The split to read: a local folder without split sub-folders is one 'train' split for `datasets`."""
    from modeling_illama.training.data import available_splits

    if split == "auto":
        return common.resolve_split(source, split)
    splits = available_splits(source)
    if splits is None or split in splits:
        return split
    if splits == ["train"]:
        return "train"
    raise ValueError(f"{source} has splits {splits}, not {split!r}; pass --split")


@common.one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sets = (args.imagenet_c, args.imagenet_a, args.imagenet_r, args.imagenet_sketch, args.adversarial)
    if not any(sets):
        return common.user_error(PROG, "give at least one of --imagenet-c/-a/-r/-sketch or --adversarial")
    output = common.output_file(args, "robustness")  # before the model loads
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    common.load_package()
    import modeling_illama
    from modeling_illama.analysis import robustness as rb

    device = common.resolve_device(args.device)
    try:
        model = AutoModelForImageClassification.from_pretrained(args.model, dtype=torch.float32).to(device).eval()
        if model.config.num_labels != 1000:
            raise ValueError(f"{args.model} has {model.config.num_labels} classes; these benchmarks need ImageNet-1K")
        if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
            processor = AutoImageProcessor.from_pretrained(args.model)
        else:
            processor = modeling_illama.build_image_processor(model.config.image_size)
        mean, std = processor.image_mean, processor.image_std
        size = model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0]

        def transform(image):
            return processor(image, return_tensors="pt")["pixel_values"][0]

        shared = {"device": device, "batch_size": args.batch_size, "limit": args.limit}
        results = {"model": args.model, "device": device}
        if args.imagenet_c:
            c_transform = rb.center_crop_transform(size, mean, std)
            results["imagenet_c"] = rb.evaluate_imagenet_c(model, args.imagenet_c, c_transform, **shared)
        for key, source, subset in (
            ("imagenet_a", args.imagenet_a, "imagenet-a"),
            ("imagenet_r", args.imagenet_r, "imagenet-r"),
            ("imagenet_sketch", args.imagenet_sketch, None),
        ):
            if source:
                split = split_for(source, args.split)
                results[key] = rb.evaluate_subset(model, source, split, subset, transform, **shared)
        if args.adversarial:
            split = split_for(args.adversarial, args.split)
            results["adversarial"] = rb.evaluate_attacks(
                model, args.adversarial, split, transform, mean, std, args.attacks, **shared
            )
    except (OSError, ValueError, KeyError) as error:
        return common.user_error(PROG, error)
    with common.writing_to(output), open(output, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    lines = []
    if "imagenet_c" in results:
        c = results["imagenet_c"]
        lines.append(f"ImageNet-C mCE {100 * c['mce']:.2f}" + ("" if c["complete"] else " (incomplete)"))
    for key in ("imagenet_a", "imagenet_r", "imagenet_sketch"):
        if key in results:
            lines.append(f"{key} top-1 {100 * results[key]['top1']:.2f}% ({results[key]['images']} images)")
    if "adversarial" in results:
        adv = results["adversarial"]
        lines.append(
            f"clean top-1 {100 * adv['clean_top1']:.2f}%"
            + "".join(f", {name.upper()} {100 * adv[f'{name}_top1']:.2f}%" for name in args.attacks)
        )
    print("\n".join(lines) + f"\n-> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
