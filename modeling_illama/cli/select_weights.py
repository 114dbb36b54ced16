"""`illama-select-weights`: initialise an iLLaMA from a Hugging Face LLaMA checkpoint by weight selection.

Uniform weight selection (docs/DESIGN.md, 'Weight selection') reads only the needed tensors, one at a time, from
the LLaMA checkpoint (safetensors, sharded or not) and writes a folder that loads with from_pretrained and trains
with illama-train.

examples:
  illama-select-weights --llama llama/Llama-2-7b-hf --model illama-tiny-224 --output-dir runs/tiny-selected
  illama-select-weights --llama llama/Llama-2-7b-hf --model illama-small-224 --num-labels 10 \\
      --output-dir runs/small-selected --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._common import load_package, make_parser, one_line_errors, user_error, writing_to

PROG = "illama-select-weights"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    parser.add_argument(
        "--llama", required=True, metavar="DIR", help="LLaMA checkpoint folder (config.json + safetensors)"
    )
    parser.add_argument(
        "--model", required=True, help="iLLaMA preset (e.g. illama-tiny-224) or a config.json / model folder"
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--num-labels", type=int, help="classes of the (randomly initialised) head")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init of the non-selected parameters")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --output-dir")
    return parser


def load_config(model: str, num_labels: int | None):
    from ..configuration_illama import ILlamaConfig
    from ..presets import list_presets, load_preset

    overrides = {} if num_labels is None else {"num_labels": num_labels}
    if os.path.exists(model):
        config = ILlamaConfig.from_pretrained(model)
        for key, value in overrides.items():
            setattr(config, key, value)
        return config
    if model not in list_presets():
        raise ValueError(f"--model {model!r} is neither a preset ({', '.join(list_presets())}) nor an existing path")
    return load_preset(model, **overrides)


def save_selected(model, report, config, output_dir: str) -> None:
    """The model, its image processor (square inputs) and weight_selection_report.json into `output_dir`."""
    model.save_pretrained(output_dir)
    try:
        from ..image_processing_illama import build_image_processor

        build_image_processor(config.image_size).save_pretrained(output_dir)
    except ValueError as error:  # non-square inputs have no eval transform
        print(f"{PROG}: warning: no preprocessor_config.json written: {error}", file=sys.stderr)
    with open(os.path.join(output_dir, "weight_selection_report.json"), "w", encoding="utf-8") as handle:
        json.dump(report.to_dict(), handle, indent=2)


@one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_package()
    import torch

    from ..llm.weight_selection import init_model_from_llama
    from ..modeling_illama import ILlamaForImageClassification

    try:
        if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite:
            raise FileExistsError(f"output folder {args.output_dir!r} is not empty (pass --overwrite)")
        config = load_config(args.model, args.num_labels)
        torch.manual_seed(args.seed)
        model = ILlamaForImageClassification(config)
        report = init_model_from_llama(model, args.llama)
        with writing_to(args.output_dir):
            save_selected(model, report, config, args.output_dir)
    except (OSError, ValueError, KeyError) as error:
        return user_error(PROG, error)
    print(report.summary())
    print(f"saved to {args.output_dir} (report: weight_selection_report.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
