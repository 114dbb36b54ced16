"""`illama-convert`: the authors' iLLaMA checkpoints (techmonsterwang/iLLaMA, .pth or .safetensors) -> Hugging Face
folders (config.json, model.safetensors, preprocessor_config.json, remote code, README.md card).

examples:
  illama-convert --checkpoint illama-tiny-in1k-75.0.pth --output-dir illama-tiny-224-in1k --verify
  illama-convert --all downloads/ --output-dir converted/
  illama-convert --write-cards model_cards
"""

from __future__ import annotations

import argparse
import sys

from ._common import load_package, make_parser, one_line_errors, progress_on_stdout, user_error, writing_to

PROG = "illama-convert"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="FILE", help="an authors' .pth (bare or training dict) or .safetensors")
    what.add_argument(
        "--all",
        nargs="+",
        metavar="SRC_DIR",
        help="convert every released file name found in SRC_DIR into <--output-dir>/<variant> "
        "(`--all SRC_DIR OUT_DIR` also works)",
    )
    what.add_argument(
        "--write-cards", metavar="DIR", help="only write the model cards of the eight released checkpoints into DIR"
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", help="output folder (of the model, or of the models with --all)"
    )
    parser.add_argument(
        "--model", help="preset name (e.g. illama-base-384) instead of inferring the size from the shapes"
    )
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
    parser.add_argument("--verify-inputs", type=int, default=2, help="random inputs used by --verify")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing output folder: the converted files replace their namesakes, other files stay",
    )
    return parser


@one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_package()
    from ..conversion import VerificationError, convert_all, convert_checkpoint, write_released_cards

    if args.all:
        if len(args.all) > 2 or (len(args.all) == 2 and args.output_dir):
            return user_error(PROG, "--all takes SRC_DIR (and --output-dir OUT_DIR), or SRC_DIR OUT_DIR")
        if len(args.all) == 1 and not args.output_dir:
            return user_error(PROG, "--all SRC_DIR needs --output-dir OUT_DIR")
        args.all, args.output_dir = [args.all[0], args.all[-1] if len(args.all) == 2 else args.output_dir], None
    if args.write_cards:
        for path in write_released_cards(args.write_cards):
            print(path)
        return 0
    image_size = None
    if args.image_size:
        if len(args.image_size) > 2:
            return user_error(PROG, "--image-size takes one value or HEIGHT WIDTH")
        image_size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    if args.all and (args.output_dir or args.model or image_size or args.num_heads):
        return user_error(PROG, "--all takes SRC_DIR and --output-dir only (sizes come from the released file names)")
    if args.checkpoint and not args.output_dir:
        return user_error(PROG, "--checkpoint needs --output-dir DIR")
    try:
        with progress_on_stdout(), writing_to(args.all[1] if args.all else args.output_dir):
            if args.all:
                convert_all(
                    *args.all, verify=args.verify, num_verify_inputs=args.verify_inputs, overwrite=args.overwrite
                )
            else:
                convert_checkpoint(
                    args.checkpoint,
                    args.output_dir,
                    model=args.model,
                    image_size=image_size,
                    num_heads=args.num_heads,
                    verify=args.verify,
                    num_verify_inputs=args.verify_inputs,
                    overwrite=args.overwrite,
                )
    except (ValueError, VerificationError, OSError) as error:  # CheckpointError is a ValueError
        return user_error(PROG, error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
