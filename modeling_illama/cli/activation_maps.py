"""`illama-activation-maps`: "information filtering" maps (token magnitude and FFT phase) of chosen layers, drawn
over the image as a PNG.

examples:
  illama-activation-maps --model runs/demo --image docs/images/cat.jpg --output maps.png
  illama-activation-maps --model runs/tiny-llama31 --image cat.jpg --layers 11 frozen_llm --output maps.png
"""

from __future__ import annotations

import argparse
import json
import sys

from ._common import (
    add_allow_missing_weights,
    add_model,
    load_package,
    make_parser,
    one_line_errors,
    user_error,
    writing_to,
)

PROG = "illama-activation-maps"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    add_model(parser, what="iLLaMA, ViT, or either with frozen LLM layers")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="block numbers (output of block i; negative counts from the end) and/or submodule names "
        "of the base model such as frozen_llm or frozen_llm.layers.0 (default: the last block, "
        "and frozen_llm when the model has one)",
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="PNG file to write")
    parser.add_argument("--json", metavar="FILE", help="also write the maps (lists of lists) to this JSON file")
    add_allow_missing_weights(parser, "draw")
    return parser


@one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_package()
    from modeling_illama.analysis.activation_maps import activation_maps, denormalize, draw_activation_maps
    from modeling_illama.image_processing_illama import to_rgb_image
    from modeling_illama.loading import load_classifier, load_image_processor

    try:
        model = load_classifier(args.model, allow_missing_weights=args.allow_missing_weights)
        processor = load_image_processor(args.model, model.config)
        image = to_rgb_image(args.image)  # the processor's and the pipeline's decoding
        pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
        layers = args.layers
        if layers is None:
            layers = ["-1"] + (["frozen_llm"] if getattr(model.config, "frozen_llm", None) else [])
        layers = [int(layer) if layer.lstrip("-").isdigit() else layer for layer in layers]
        maps = activation_maps(model, pixel_values, layers)
    except (FileNotFoundError, ValueError, OSError) as error:
        return user_error(PROG, error)
    first = {layer: {kind: value[0] for kind, value in kinds.items()} for layer, kinds in maps.items()}
    shown = denormalize(pixel_values[0], processor.image_mean, processor.image_std)
    with writing_to(args.output):
        draw_activation_maps(shown, first, args.output)
    if args.json:
        with writing_to(args.json), open(args.json, "w", encoding="utf-8") as handle:
            json.dump({str(k): {kind: v.tolist() for kind, v in kinds.items()} for k, kinds in first.items()}, handle)
    print(f"wrote {args.output} (layers {', '.join(map(str, layers))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
