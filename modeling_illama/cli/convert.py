"""`illama-convert`: the authors' .pth / .safetensors checkpoints -> Hugging Face folders."""

from __future__ import annotations

import argparse
import sys

from ..conversion import VerificationError, convert_all, convert_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="illama-convert",
        description="Convert the authors' iLLaMA checkpoints (techmonsterwang/iLLaMA) into Hugging Face folders "
        "(config.json, model.safetensors, preprocessor_config.json, remote code, README.md card).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="FILE", help="an authors' .pth (bare or training dict) or .safetensors")
    what.add_argument(
        "--all",
        nargs=2,
        metavar=("SRC_DIR", "OUT_DIR"),
        help="convert every released file name found in SRC_DIR into OUT_DIR/<variant>",
    )
    parser.add_argument("--output", metavar="DIR", help="output folder (with --checkpoint)")
    parser.add_argument("--model", help="preset name (e.g. illama-base-384) instead of inferring the size from shapes")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        metavar="PX",
        help="resolution (one value, or HEIGHT WIDTH); default: inferred from pos_embed",
    )
    parser.add_argument("--num-heads", type=int, help="attention heads (default: hidden size / 64)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare logits with a reference forward pass on the authors' layout; fail above 1e-4",
    )
    parser.add_argument("--verify-inputs", type=int, default=2, help="random inputs used by --verify (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    image_size = None
    if args.image_size:
        if len(args.image_size) > 2:
            parser.error("--image-size takes one value or HEIGHT WIDTH")
        image_size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    try:
        if args.all:
            if args.output or args.model or image_size or args.num_heads:
                parser.error("--all takes SRC_DIR OUT_DIR only (sizes come from the released file names)")
            convert_all(*args.all, verify=args.verify, num_verify_inputs=args.verify_inputs, overwrite=args.overwrite)
        else:
            if not args.output:
                parser.error("--checkpoint needs --output DIR")
            convert_checkpoint(
                args.checkpoint,
                args.output,
                model=args.model,
                image_size=image_size,
                num_heads=args.num_heads,
                verify=args.verify,
                num_verify_inputs=args.verify_inputs,
                overwrite=args.overwrite,
            )
    except (ValueError, VerificationError, OSError) as error:  # CheckpointError is a ValueError
        print(f"illama-convert: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
