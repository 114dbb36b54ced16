"""`illama-analyze`: the paper's reliability measurements of a saved classifier, each as JSON + PNG.

  calibration     ECE (15 equal-width bins), reliability diagram, confusion matrix on a dataset split
  shape-bias      shape vs texture decisions on Geirhos et al.'s cue-conflict stimuli (ImageNet-1K models)
  attention-rank  singular values of every layer's/head's attention maps (iLLaMA at r = 0 and r = 1, vs others)
  quantize        int8 post-training quantization (torchao): accuracy, file size and CPU latency vs fp32
  export-onnx     ONNX graph of the classifier (dynamic batch), checked against PyTorch with onnxruntime

examples:
  illama-analyze calibration --model runs/demo --dataset data/cifar10-mini --output-dir analysis/
  illama-analyze attention-rank --model runs/demo runs/vit --dataset data/cifar10-mini --num-images 16
  illama-analyze quantize --model runs/demo --dataset data/cifar10-mini --split test --limit 200
  illama-analyze export-onnx --model runs/demo --output-dir analysis/onnx
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import _common as common

PROG = "illama-analyze"


def _output_args(parser: argparse.ArgumentParser, output: str) -> None:
    parser.add_argument("--output-dir", default=output, help="folder for the JSON and PNG files")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run of this analysis in --output-dir"
    )
    common.add_device(parser)
    common.add_batch_size(parser)
    common.add_allow_missing_weights(parser, "measure")


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="Hub id, local image folder, parquet folder or file")
    common.add_split(parser)
    parser.add_argument("--image-column", help="image column; default: auto-detected")
    parser.add_argument("--label-column", help="label column; default: auto-detected")


def build_parser() -> argparse.ArgumentParser:
    parser = common.make_parser(PROG, __doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    calibration = commands.add_parser("calibration", help="ECE, reliability diagram and confusion matrix")
    common.add_model(calibration, what="an image classifier")
    _dataset_args(calibration)
    calibration.add_argument("--limit", type=int, help="only the first N images")
    calibration.add_argument("--num-bins", type=int, default=15, help="equal-width confidence bins")
    _output_args(calibration, "analysis/calibration")

    shape = commands.add_parser("shape-bias", help="shape bias on the cue-conflict stimuli")
    shape.add_argument(
        "--model", required=True, nargs="+", help=f"one or more ImageNet-1K classifiers, each a {common.MODEL_HELP}"
    )
    shape.add_argument("--label", nargs="+", help="names for the plot legend; default: the folder names")
    shape.add_argument("--stimuli", required=True, help="cue-conflict folder: <shape>/<shape>N-<texture>M.png|jpg")
    shape.add_argument(
        "--categories",
        help="category -> ImageNet indices TSV; default: the stimuli folder's categories.tsv, else the packaged copy",
    )
    _output_args(shape, "analysis/shape-bias")

    rank = commands.add_parser("attention-rank", help="rank of the attention maps per layer and head")
    rank.add_argument(
        "--model",
        required=True,
        nargs="+",
        help=f"one or more image classifiers, each a {common.MODEL_HELP} (an iLLaMA is measured at each --rates)",
    )
    rank.add_argument("--compare", nargs="*", default=[], help="more classifiers, as further --model values")
    _dataset_args(rank)
    rank.add_argument("--num-images", type=int, default=32, help="images whose attention maps are measured")
    rank.add_argument("--rates", type=float, nargs="+", default=[0.0, 1.0], help="iLLaMA soft-mask rates r")
    rank.add_argument("--threshold", type=float, default=0.8, help="fraction of the singular-value sum")
    _output_args(rank, "analysis/attention-rank")

    quantize = commands.add_parser("quantize", help="int8 post-training quantization (torchao)")
    common.add_model(quantize, what="a float image classifier")
    quantize.add_argument(
        "--scheme",
        default="int8-dynamic",
        choices=("int8-weight-only", "int8-dynamic"),
        help="torchao scheme: int8 weights only, or int8 weights and dynamically quantized activations",
    )
    _dataset_args(quantize)
    quantize.add_argument("--limit", type=int, help="evaluate only the first N images")
    quantize.add_argument("--latency-batch-size", type=int, default=8, help="images per timed forward pass")
    quantize.add_argument("--latency-repeats", type=int, default=20, help="timed forward passes per model")
    _output_args(quantize, "analysis/quantize")

    onnx = commands.add_parser("export-onnx", help="ONNX export checked with onnxruntime")
    common.add_model(onnx, what="an image classifier")
    onnx.add_argument("--image-size", type=int, help="export at this resolution (iLLaMA: position table resized)")
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    onnx.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| logits accepted")
    _output_args(onnx, "analysis/onnx")
    return parser


def _write_json(data: dict, folder: str, name: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    return path


def _evaluation_options(args) -> dict:
    """The flags shared with `evaluate_saved_model` (same names) of the subcommands that evaluate a split."""
    names = ("image_column", "label_column", "batch_size", "limit", "device", "allow_missing_weights")
    return {name: getattr(args, name) for name in names}


def _label(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def run_calibration(args) -> tuple[list[str], str]:
    from modeling_illama.analysis.calibration import calibration_report, draw_calibration_figures
    from modeling_illama.training.evaluation import evaluate_saved_model

    results = evaluate_saved_model(
        args.model, args.dataset, args.split, **_evaluation_options(args), keep_predictions=True
    )
    logits, labels = results.pop("logits"), results.pop("labels")
    report = calibration_report(logits, labels, args.num_bins, results.get("class_names"))
    report.update(model=args.model, dataset=args.dataset, split=args.split)
    name = f"{_label(args.model)} on {_label(args.dataset)} ({args.split})"
    return [
        _write_json(report, args.output_dir, "calibration.json"),
        *draw_calibration_figures(report, args.output_dir, name),
    ], f"ECE {report['ece']:.4f}  top-1 {100 * report['top1']:.2f}%  ({report['num_examples']} images)"


def run_shape_bias(args) -> tuple[list[str], str]:
    from modeling_illama.analysis.loading import load_saved_classifier
    from modeling_illama.analysis.shape_bias import (
        check_imagenet_classifier,
        describe_shape_bias,
        draw_shape_bias,
        load_categories,
        measure_shape_bias,
    )

    labels = args.label or [_label(m) for m in args.model]
    if len(labels) != len(args.model):
        raise ValueError(f"{len(args.model)} models but {len(labels)} labels")
    local = os.path.join(args.stimuli, "categories.tsv")
    categories = load_categories(args.categories or (local if os.path.isfile(local) else None))
    models = []
    for path in args.model:  # refuse a non-ImageNet model before spending time on any other
        model, processor = load_saved_classifier(path, allow_missing_weights=args.allow_missing_weights)
        check_imagenet_classifier(model)
        models.append((model, processor))
    reports = {}
    for label, path, (model, processor) in zip(labels, args.model, models):
        reports[label] = measure_shape_bias(model, processor, args.stimuli, categories, args.batch_size, args.device)
        reports[label]["model"] = path
    summary = "  ".join(f"{label}: {describe_shape_bias(r['shape_bias'])}" for label, r in reports.items())
    return [
        _write_json({"stimuli": args.stimuli, "models": reports}, args.output_dir, "shape_bias.json"),
        draw_shape_bias(reports, os.path.join(args.output_dir, "shape_bias.png"), "shape bias (cue-conflict)"),
    ], f"shape bias  {summary}"


def run_attention_rank(args) -> tuple[list[str], str]:
    from modeling_illama.analysis.attention_rank import attention_rank, draw_attention_rank
    from modeling_illama.analysis.loading import dataset_pixel_values, load_saved_classifier

    results = {}
    for path in [*args.model, *args.compare]:
        model, processor = load_saved_classifier(path, "eager", args.allow_missing_weights)
        pixel_values, _ = dataset_pixel_values(
            args.dataset, args.split, processor, args.num_images, args.image_column, args.label_column
        )
        if hasattr(model, "set_soft_mask_rate"):
            for rate in args.rates:
                model.set_soft_mask_rate(rate)
                label = f"{_label(path)} r={rate:g}"
                results[label] = attention_rank(
                    model, pixel_values, args.threshold, args.batch_size, args.device, description=label
                )
            model.reset_soft_mask_rate()
        else:
            results[_label(path)] = attention_rank(
                model, pixel_values, args.threshold, args.batch_size, args.device, description=_label(path)
            )
    summary = "  ".join(
        f"{label}: {r['first_layer_first_head']:.1f}/{r['num_tokens']}" for label, r in results.items()
    )
    return [
        _write_json(
            {"dataset": args.dataset, "split": args.split, "results": results}, args.output_dir, "attention_rank.json"
        ),
        draw_attention_rank(results, os.path.join(args.output_dir, "attention_rank.png")),
    ], f"layer 1 head 1 rank@{args.threshold:g}  {summary}"


def _machine() -> dict:
    from modeling_illama.utils.machine import cpu_model

    return {"cpu": cpu_model(), "load_average": list(os.getloadavg())}


def run_quantize(args) -> tuple[list[str], str]:
    import torch

    from modeling_illama.analysis.loading import load_saved_classifier
    from modeling_illama.analysis.quantization import (
        draw_quantization,
        folder_size,
        interleaved_latency,
        load_quantized,
        quantized_linear_count,
    )
    from modeling_illama.training.evaluation import evaluate_saved_model

    model_dir = os.path.join(args.output_dir, "model")
    quantized = load_quantized(args.model, args.scheme, allow_missing_weights=args.allow_missing_weights)
    quantized.save_pretrained(model_dir)
    float_model, processor = load_saved_classifier(args.model, allow_missing_weights=args.allow_missing_weights)
    processor.save_pretrained(model_dir)  # the same preprocessing as the float model
    reloaded, _ = load_saved_classifier(model_dir)  # the folder's config carries the quantization
    float_results = evaluate_saved_model(args.model, args.dataset, args.split, **_evaluation_options(args))
    int8_results = evaluate_saved_model(model_dir, args.dataset, args.split, **_evaluation_options(args))
    size = float_model.config.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    pixel_values = torch.randn(args.latency_batch_size, 3, *size, generator=torch.Generator().manual_seed(0))
    machine_before = _machine()
    latency = interleaved_latency({"float32": float_model, "int8": reloaded}, pixel_values, args.latency_repeats)
    report = {
        "model": args.model,
        "scheme": args.scheme,
        "quantized_model": model_dir,
        "quantized_linear_layers": quantized_linear_count(reloaded),
        "dataset": args.dataset,
        "split": args.split,
        "num_images": int8_results["num_images"],
        "top1": {"float32": float_results["top1"], "int8": int8_results["top1"]},
        "top1_change": int8_results["top1"] - float_results["top1"],
        "ece": {"float32": float_results["ece"], "int8": int8_results["ece"]},
        "weights_bytes": {"float32": folder_size(args.model), "int8": folder_size(model_dir)},
        "latency_seconds": latency,
        "latency_batch_size": args.latency_batch_size,
        "latency_repeats": args.latency_repeats,
        "torch_threads": torch.get_num_threads(),
        "machine": {"before": machine_before, "after": _machine()},
    }
    report["size_ratio"] = report["weights_bytes"]["int8"] / report["weights_bytes"]["float32"]
    report["latency_ratio"] = latency["int8"] / latency["float32"]
    return [
        _write_json(report, args.output_dir, "quantization.json"),
        draw_quantization(report, os.path.join(args.output_dir, "quantization.png")),
    ], (
        f"{args.scheme}: top-1 {100 * float_results['top1']:.2f}% -> {100 * int8_results['top1']:.2f}%  weights "
        f"{report['size_ratio']:.2f}x  CPU latency {report['latency_ratio']:.2f}x fp32  -> {model_dir}"
    )


def run_export_onnx(args) -> tuple[list[str], str]:
    from modeling_illama.analysis.loading import load_saved_classifier
    from modeling_illama.analysis.onnx_export import compare_with_pytorch, draw_onnx_agreement, export_onnx

    model, _ = load_saved_classifier(args.model, "eager", args.allow_missing_weights)
    if args.image_size:
        if not hasattr(model, "resize_position_embeddings"):
            raise ValueError(f"--image-size needs an iLLaMA model; {type(model).__name__} cannot be resized here")
        model.resize_position_embeddings(args.image_size)
    size = model.config.image_size
    size = size if isinstance(size, int) else size[0]
    path = export_onnx(model, os.path.join(args.output_dir, f"model_{size}.onnx"), args.opset)
    report = compare_with_pytorch(model, path)
    report.update(model=args.model, onnx=path, opset=args.opset, tolerance=args.tolerance)
    worst = max(report["max_abs_difference"].values())
    report["within_tolerance"] = worst <= args.tolerance
    files = [
        _write_json(report, args.output_dir, f"onnx_{size}.json"),
        draw_onnx_agreement(model, path, os.path.join(args.output_dir, f"onnx_{size}.png")),
    ]
    if not report["within_tolerance"]:
        raise ValueError(f"ONNX logits differ from PyTorch by {worst:.3g} > tolerance {args.tolerance:g} ({path})")
    return files, f"{path}: max |ONNX - PyTorch| logits {worst:.2e} (batch sizes {list(report['max_abs_difference'])})"


def _onnx_size(args) -> int:
    """The resolution export-onnx writes at (its file names hold it): --image-size, else the model's."""
    if args.image_size:
        return args.image_size
    from transformers import AutoConfig

    size = AutoConfig.from_pretrained(args.model).image_size
    return size if isinstance(size, int) else size[0]


def output_files(args) -> list[str]:
    """Every file (or folder) the subcommand writes into --output-dir, as the run_* functions name them."""
    if args.command == "calibration":
        from modeling_illama.analysis.calibration import CALIBRATION_FIGURES

        names = ["calibration.json", *CALIBRATION_FIGURES]
    elif args.command == "export-onnx":
        size = _onnx_size(args)
        names = [f"model_{size}.onnx", f"onnx_{size}.json", f"onnx_{size}.png"]
    else:
        stem = {"shape-bias": "shape_bias", "attention-rank": "attention_rank", "quantize": "quantization"}
        names = [f"{stem[args.command]}.json", f"{stem[args.command]}.png"]
        names += ["model"] if args.command == "quantize" else []  # the quantized model's folder
    return [os.path.join(args.output_dir, name) for name in names]


ANALYSIS_EXTRA_MODULES = {"quantize": ("torchao",), "export-onnx": ("onnx", "onnxruntime", "onnxscript")}
COMMANDS = {
    "calibration": run_calibration,
    "shape-bias": run_shape_bias,
    "attention-rank": run_attention_rank,
    "quantize": run_quantize,
    "export-onnx": run_export_onnx,
}


@common.one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if missing := common.missing_extra("analysis", ANALYSIS_EXTRA_MODULES.get(args.command, ())):
        return common.user_error(f"{PROG} {args.command}", missing)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common.load_package()
    try:
        args.device = common.resolve_device(args.device)
        if getattr(args, "split", None):
            args.split = common.resolve_split(args.dataset, args.split)
        # before any model loads: an earlier run's results are not replaced without --overwrite
        if error := common.existing_outputs_error(
            output_files(args), args.overwrite, "give --output-dir another folder"
        ):
            return common.user_error(f"{PROG} {args.command}", error)
        with common.writing_to(args.output_dir):
            files, summary = COMMANDS[args.command](args)
    except (ValueError, OSError) as error:  # a model or dataset it cannot measure, a missing folder
        return common.user_error(f"{PROG} {args.command}", error)
    print(summary)
    for path in files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
