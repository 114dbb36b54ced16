"""`illama-export-official`: a Hugging Face iLLaMA folder -> the authors' state-dict layout.

The file loads with the authors' code: model.load_state_dict(torch.load(FILE)).

examples:
  illama-export-official --model runs/demo --output runs/demo-official.pth
  illama-export-official --model runs/demo --output runs/demo-official.safetensors --overwrite
"""

from __future__ import annotations

import argparse
import sys

from ._common import (
    add_model,
    load_package,
    make_parser,
    missing_model_folder,
    one_line_errors,
    progress_on_stdout,
    user_error,
    writing_to,
)

PROG = "illama-export-official"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    add_model(parser, what="a converted or fine-tuned iLLaMA classifier")
    parser.add_argument("--output", required=True, metavar="FILE", help="FILE.pth (torch.save) or FILE.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


@one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_package()
    from ..conversion import export_official

    if missing := missing_model_folder(args.model):
        return user_error(PROG, missing)
    try:
        with progress_on_stdout(), writing_to(args.output):
            export_official(args.model, args.output, overwrite=args.overwrite)
    except (OSError, ValueError) as error:  # CheckpointError is a ValueError
        return user_error(PROG, error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
