"""`illama-attach-frozen-llm`: insert frozen LLaMA decoder layer(s) (Pang et al.) between two bias-free adapters
after the last block of an iLLaMA (preset or folder) or of a Transformers ViT/DeiT folder, and save a folder that
loads with from_pretrained / AutoModel*.

--llama takes Meta's format (params.json + consolidated.00.pth; Pang et al. use layer 31 of LLaMA-1 7B) or a
Hugging Face LLaMA folder (any version, e.g. Llama-2-7b-hf).

examples:
  illama-attach-frozen-llm --llama llama/7B --model illama-tiny-224 --output-dir runs/tiny-llama31
  illama-attach-frozen-llm --llama llama/Llama-2-7b-hf --model runs/demo --output-dir runs/demo-llama \\
      --layers 31 --rms-norm-eps checkpoint --overwrite
"""

from __future__ import annotations

import argparse
import os
import sys

from ._common import load_package, make_parser, one_line_errors, user_error, writing_to

PROG = "illama-attach-frozen-llm"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    parser.add_argument(
        "--llama",
        required=True,
        metavar="DIR",
        help="LLaMA checkpoint folder: Hugging Face (config.json + safetensors) or Meta's original format "
        "(params.json + consolidated.*.pth; the paper uses layer 31 of LLaMA-1 7B)",
    )
    parser.add_argument(
        "--rms-norm-eps",
        type=rms_norm_eps,
        default=1e-6,
        metavar="EPS|checkpoint",
        help="epsilon of the LLaMA layers' RMSNorms: a number (default 1e-6, hard-coded by the authors) or "
        "'checkpoint' (also 'null', as the recipe field frozen_llm_rms_norm_eps): the checkpoint's own value, "
        "e.g. 1e-5 for LLaMA-2",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="iLLaMA preset (e.g. illama-tiny-224), or model folder of an iLLaMA or a ViT/DeiT (ViT architecture)",
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder to write the model into")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --output-dir")
    parser.add_argument("--layers", type=int, nargs="+", metavar="N", help="LLaMA layer indices (default: the last)")
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help="save only the path, layer indices and checksum of the LLaMA layers, not their tensors",
    )
    parser.add_argument("--num-labels", type=int, help="classes of a new iLLaMA from a preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomly initialised adapters and head")
    return parser


def rms_norm_eps(value: str) -> float | None:
    """`--rms-norm-eps`: a number, or `checkpoint` / `null` / `none` for the checkpoint's own value (None)."""
    if value.lower() in ("checkpoint", "null", "none"):
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number, 'checkpoint' or 'null'") from None


def load_vision_model(model: str, num_labels: int | None):
    import torch
    from transformers import AutoConfig, ViTForImageClassification

    from ..modeling_illama import ILlamaForImageClassification
    from ..presets import list_presets, load_preset

    if os.path.isdir(model):
        model_type = AutoConfig.from_pretrained(model).model_type
        if model_type == "vit":
            return ViTForImageClassification.from_pretrained(model, dtype=torch.float32), True
        if model_type == "illama":
            return ILlamaForImageClassification.from_pretrained(model, dtype=torch.float32), False
        raise ValueError(f"{model!r} is a {model_type!r} model; expected an iLLaMA or a ViT folder")
    if model not in list_presets():
        raise ValueError(f"--model {model!r} is neither a folder nor a preset ({', '.join(list_presets())})")
    overrides = {} if num_labels is None else {"num_labels": num_labels}
    return ILlamaForImageClassification(load_preset(model, **overrides)), False


def save_image_processor(source: str, config, output: str) -> None:
    """Copy the source folder's preprocessing, or write the iLLaMA eval transform for a preset."""
    from transformers import AutoImageProcessor

    from ..image_processing_illama import build_image_processor

    if os.path.isfile(os.path.join(source, "preprocessor_config.json")):
        AutoImageProcessor.from_pretrained(source).save_pretrained(output)
    elif not os.path.isdir(source):
        build_image_processor(config.image_size).save_pretrained(output)


@one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite:
        return user_error(PROG, f"output folder {args.output_dir!r} is not empty (pass --overwrite)")
    load_package()
    import torch

    from ..llm.frozen import attach_frozen_llm, vit_with_frozen_llm

    try:
        torch.manual_seed(args.seed)
        model, is_vit = load_vision_model(args.model, args.num_labels)
        store_weights = not args.reference_only
        if is_vit:
            model = vit_with_frozen_llm(model, args.llama, args.layers, store_weights, args.rms_norm_eps)
        else:
            attach_frozen_llm(model, args.llama, args.layers, store_weights, args.rms_norm_eps)
        with writing_to(args.output_dir):
            model.save_pretrained(args.output_dir)
            save_image_processor(args.model, model.config, args.output_dir)
    except (OSError, ValueError, KeyError) as error:
        return user_error(PROG, error)
    settings = model.config.frozen_llm
    frozen = sum(p.numel() for n, p in model.named_parameters() if "frozen_llm.layers." in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"{type(model).__name__}: LLaMA layers {settings.layer_indices} from {settings.source_path} "
        f"({frozen:,} frozen parameters, {'stored' if store_weights else 'referenced, ' + settings.checksum}); "
        f"{trainable:,} trainable parameters; saved to {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
