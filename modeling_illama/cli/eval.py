"""`illama-eval`: top-1, top-5, ECE, loss and images/s of a saved classifier on a dataset split.

examples:
  illama-eval --model runs/demo --dataset data/cifar10-mini
  illama-eval --model runs/demo --dataset data/cifar10-mini --split test --batch-size 128 --output eval.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import _common as common

PROG = "illama-eval"


def build_parser() -> argparse.ArgumentParser:
    parser = common.make_parser(PROG, __doc__)
    common.add_model(parser, what="an image classifier")
    parser.add_argument("--dataset", required=True, help="Hub id, local image folder, parquet folder or file")
    common.add_split(parser)
    parser.add_argument("--streaming", action="store_true", help="stream the split (IterableDataset)")
    parser.add_argument("--image-column", help="image column; default: auto-detected")
    parser.add_argument("--label-column", help="label column; default: auto-detected")
    common.add_batch_size(parser)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    common.add_device(parser)
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="JSON file for the results; default: <model>/eval_<split>.json for a folder, "
        "./eval_<org>--<name>_<split>.json for a Hub id",
    )
    common.add_allow_missing_weights(parser, "evaluate")
    parser.add_argument(
        "--plots", metavar="DIR", help="also draw reliability_diagram.png and confusion_matrix.png into DIR"
    )
    return parser


def plot_files(folder: str) -> list[str]:
    """The files `--plots DIR` writes (draw_calibration_figures)."""
    from modeling_illama.analysis.calibration import CALIBRATION_FIGURES

    return [os.path.join(folder, name) for name in CALIBRATION_FIGURES]


@common.one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if missing := common.missing_train_extra() or common.missing_model_folder(args.model):
        return common.user_error(PROG, missing)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common.load_package()
    from modeling_illama.training.evaluation import evaluate_saved_model

    try:
        args.split = common.resolve_split(args.dataset, args.split)
    except ValueError as error:
        return common.user_error(PROG, error)
    args.device = common.resolve_device(args.device)
    output = common.output_file(args, "eval", f"_{args.split}")
    if args.plots and (
        error := common.existing_outputs_error(plot_files(args.plots), args.overwrite, "give --plots another folder")
    ):
        return common.user_error(PROG, error)
    try:
        # every flag but --output and --plots is a parameter of evaluate_saved_model with the same name
        flags = {name: value for name, value in vars(args).items() if name not in ("output", "plots", "overwrite")}
        results = evaluate_saved_model(**flags, keep_predictions=bool(args.plots))
    except (OSError, ValueError) as error:  # missing model/weights, bad dataset/split/columns/labels
        return common.user_error(PROG, error)
    if args.plots:
        from modeling_illama.analysis.calibration import calibration_report, draw_calibration_figures

        report = calibration_report(
            results.pop("logits"), results.pop("labels"), class_names=results.pop("class_names")
        )
        with common.writing_to(args.plots):
            for path in draw_calibration_figures(report, args.plots):
                print(f"wrote {path}")
    with common.writing_to(output), open(output, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print(
        f"top-1 {100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%  ECE {results['ece']:.4f}  "
        f"loss {results['loss']:.4f}  {results['images_per_second']:.1f} images/s  -> {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
