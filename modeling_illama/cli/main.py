"""`illama <command> ...`: one entry point for every tool (`illama train` = `illama-train`, and so on).

examples:
  illama train --list-recipes
  illama eval --model runs/demo --dataset data/cifar10-mini
  illama analyze calibration --model runs/demo --dataset data/cifar10-mini
"""

from __future__ import annotations

import importlib
import sys

PROG = "illama"
# command -> (module of modeling_illama.cli, one-line summary)
COMMANDS = {
    "train": ("train", "train or fine-tune (full or LoRA) with a recipe"),
    "eval": ("eval", "top-1, top-5, ECE, loss and images/s on a dataset split"),
    "analyze": ("analyze", "calibration, shape bias, attention rank, int8 quantization, ONNX export"),
    "robustness": ("robustness", "ImageNet-C / -A / -R / -Sketch and FGSM / PGD"),
    "activation-maps": ("activation_maps", "token-magnitude and FFT-phase maps of chosen layers"),
    "convert": ("convert", "the authors' checkpoints -> Hugging Face folders"),
    "export-official": ("export_official", "a Hugging Face iLLaMA folder -> the authors' layout"),
    "select-weights": ("select_weights", "initialise an iLLaMA from a LLaMA checkpoint (weight selection)"),
    "attach-frozen-llm": ("attach_frozen_llm", "insert frozen LLaMA layers after the last block"),
}


def usage() -> str:
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> --help for a command's options)", "", "commands:"]
    lines += [f"  {name:20s} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines) + "\n\n" + __doc__.split("\n\n", 1)[1]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"{PROG}: error: unknown command {command!r}{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__package__}.{COMMANDS[command][0]}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
