"""`illama-train`: train or fine-tune a model with a recipe: image classification (iLLaMA, ViT + frozen LLaMA
layers) or semantic segmentation (UperNet on iLLaMA); full fine-tuning or LoRA (recipe field `peft`).

A recipe is a YAML file of `ILlamaTrainingArguments` fields: every `TrainingArguments` field plus the iLLaMA ones
(model, data, augmentation, soft mask, EMA, layer decay, peft). Any of them can be set on the command line as
`--field value`, `--field=value` or `field=value` (nested: `--peft.r 16`, `model_overrides.depth=6`).

examples:
  illama-train --list-recipes
  illama-train --recipe cifar10-mini --output-dir runs/demo
  illama-train --recipe cifar10-mini --output-dir runs/demo --num_train_epochs 5 --report_to tensorboard
  illama-train --recipe cifar10-mini --output_dir runs/demo learning_rate=2e-3 --seed=1
  illama-train --recipe cifar10-mini-lora --model runs/demo --output-dir runs/lora --peft.r 16
  accelerate launch --num_processes 8 scripts/train.py --recipe illama-tiny-in1k --streaming \\
      --output-dir runs/tiny bf16=true
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys

from ._common import (
    ILlamaArgumentParser,
    load_package,
    make_parser,
    missing_model_folder,
    missing_train_extra,
    one_line_errors,
    user_error,
    writing_to,
)

PROG = "illama-train"
SWITCHES = {  # the tool's on/off options about the output folder and the run around training
    "--resume": "continue from the last checkpoint in --output-dir",
    "--overwrite": "replace the run or model already in --output-dir (only files a training run writes are removed)",
    "--allow-changed-recipe": "with --resume: accept another data set, model or recipe than the run's recipe.json",
    "--no-plot": "do not write training_curves.png",
}
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # key=value (key may be dotted: model_overrides.depth=6)


class TrainArgumentParser(ILlamaArgumentParser):
    """Its own options, plus recipe / TrainingArguments fields as `--field value`, `--field=value` or `field=value`
    (HfArgumentParser's forms): they all land in `args.overrides` as `field=value`, in command-line order."""

    def parse_known_args(self, args=None, namespace=None):
        words = sys.argv[1:] if args is None else list(args)
        rest, overrides = self.split_fields(words)
        namespace, extra = super().parse_known_args(rest, namespace)
        namespace.overrides = [*namespace.overrides, *overrides]
        return namespace, extra

    def split_fields(self, words: list[str]) -> tuple[list[str], list[str]]:
        """(the words of the tool's own options, the field overrides as `field=value`)."""
        own = self._option_string_actions
        rest, overrides, index = [], [], 0
        while index < len(words):
            word = words[index]
            name = word.partition("=")[0]
            if word == "--":
                rest += words[index:]
                break
            if name in own:  # the tool's option, with its value(s)
                takes = own[name].nargs != 0 and "=" not in word
                rest += words[index : index + 1 + int(takes)]
                index += 1 + int(takes)
            elif word.startswith("--") and len(word) > 2:  # a field as --field value / --field=value / --flag
                field = name[2:].replace("-", "_")
                if "=" in word:
                    overrides.append(f"{field}={word.partition('=')[2]}")
                    index += 1
                elif index + 1 < len(words) and _is_value(words[index + 1]):
                    overrides.append(f"{field}={words[index + 1]}")
                    index += 2
                else:  # a bare boolean flag: --bf16
                    overrides.append(f"{field}=true")
                    index += 1
            elif _OVERRIDE.match(word):
                overrides.append(word)
                index += 1
            else:
                rest.append(word)
                index += 1
        return rest, overrides


def _is_value(word: str) -> bool:
    """A word after `--field` is its value unless it is another option or a key=value override."""
    return not (word.startswith("--") or _OVERRIDE.match(word) or (word.startswith("-") and word[1:2].isalpha()))


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__, TrainArgumentParser, allow_abbrev=False)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", help="recipe name (see --list-recipes) or YAML file")
    what.add_argument("--list-recipes", action="store_true", help="list the shipped recipes and exit")
    parser.add_argument(
        "--model",
        help="preset name (train from scratch) or model folder or Hub id (fine-tune; with `peft` the base of the "
        "adapter); default: the recipe's `model`",
    )
    parser.add_argument(
        "--backbone",
        help="semantic-segmentation: start the backbone from this iLLaMA (model folder or Hub id); default: the "
        "recipe's `backbone`",
    )
    parser.add_argument(
        "--dataset", help="Hub id, local image folder, parquet folder or file; default: the recipe's `dataset`"
    )
    parser.add_argument("--eval-dataset", help="evaluation data when it lives elsewhere; default: --dataset")
    parser.add_argument("--streaming", action="store_true", help="stream the training split (IterableDataset)")
    parser.add_argument("--image-column", help="image column; default: auto-detected")
    parser.add_argument("--label-column", help="label column; default: auto-detected")
    parser.add_argument("--batch-size", type=int, help="per_device_train_batch_size; default: the recipe's")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one, else cpu) or cpu (TrainingArguments use_cpu)"
    )
    parser.add_argument("--output-dir", metavar="DIR", help="checkpoints, logs and the final model (required)")
    for flag, text in SWITCHES.items():
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="--field value | field=value",
        help="any recipe / TrainingArguments field, e.g. --num_train_epochs 10, --learning_rate=1e-3, "
        "report_to=tensorboard, --peft.r 16 (values are read as YAML: numbers, true/false, null, [lists])",
    )
    return parser


def command_line_fields(args: argparse.Namespace) -> dict:
    """The tool's options that are recipe fields, as overrides (they come from the command line)."""
    fields = {
        "model": args.model,
        "backbone": args.backbone,
        "dataset": args.dataset,
        "eval_dataset": args.eval_dataset,
        "image_column": args.image_column,
        "label_column": args.label_column,
        "per_device_train_batch_size": args.batch_size,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if args.streaming:
        fields["streaming"] = True
    if args.device == "cpu":
        fields["use_cpu"] = True
    return fields


def unknown_field_error(overrides: dict, parser: argparse.ArgumentParser) -> str | None:
    """The one error for names that are neither the tool's options nor recipe fields: the accepted forms and the
    closest names (difflib)."""
    import dataclasses

    from modeling_illama.training.recipes import ILlamaTrainingArguments

    known = {f.name for f in dataclasses.fields(ILlamaTrainingArguments) if f.init}
    unknown = [name for name in overrides if name not in known]
    if not unknown:
        return None
    own = [o for o in parser._option_string_actions if o.startswith("--")]
    candidates = sorted({f"--{name}" for name in known} | set(own))
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(f"--{name}", candidates, n=3)
        hints.append(f"--{name}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return (
        f"unknown option(s) {'; '.join(hints)}. {PROG} takes its own options (--help) and every recipe / "
        "TrainingArguments field as --field value, --field=value or field=value"
    )


def list_recipes_text() -> str:
    """One line per shipped recipe: its name and the first clause of its `description`."""
    import yaml

    from ..configuration import configuration_files

    lines = []
    for name, path in configuration_files("recipes").items():
        description = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description") or ""
        lines.append(f"{name:28s} {first_clause(description)}")
    return "\n".join(lines)


def first_clause(text: str, width: int = 100) -> str:
    """Text up to its first `: `, `; ` or `. ` outside parentheses, cut to `width` characters."""
    text, depth = " ".join(text.split()), 0
    for index, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0 and char in ":;." and text[index + 1 : index + 2] in (" ", ""):
            text = text[:index]
            break
    return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + " ..."


@one_line_errors(PROG)
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_recipes:
        print(list_recipes_text())
        return 0
    if not args.output_dir:
        return user_error(PROG, "--output-dir DIR (or --output_dir DIR) is required with --recipe")
    if missing := missing_train_extra():
        return user_error(PROG, missing)
    if args.model and (missing := missing_model_folder(args.model)):
        return user_error(PROG, missing)
    load_package()
    from modeling_illama.labels import LabelError
    from modeling_illama.training.assembly import distributed_state
    from modeling_illama.training.output_dir import OutputDirInUseError
    from modeling_illama.training.recipes import load_recipe, parse_overrides
    from modeling_illama.training.run import train

    setup_logging(distributed_state().is_main_process)
    try:
        overrides = parse_overrides(args.overrides)
        if error := unknown_field_error(overrides, parser):
            return user_error(PROG, error)
        recipe = load_recipe(args.recipe, {**overrides, **command_line_fields(args)}, output_dir=args.output_dir)
        with writing_to(args.output_dir):
            run = train(recipe, args.resume, args.overwrite, args.allow_changed_recipe, plot=not args.no_plot)
    except (OSError, ValueError, LabelError, OutputDirInUseError) as error:  # settings, data, folders, labels
        return user_error(PROG, error)
    state = distributed_state()
    print(
        f"[rank {state.process_index}/{state.num_processes}] finished at optimizer step "
        f"{run.trainer.state.global_step}",
        flush=True,
    )
    return 0


def setup_logging(is_main: bool) -> None:
    """Console records for this package and Transformers (train.log is written by the run itself)."""
    import logging

    from transformers.utils import logging as hf_logging

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("modeling_illama")
    for previous in [h for h in package.handlers if getattr(h, "illama_console", False)]:
        package.removeHandler(previous)  # an earlier main() in this process: write to today's stderr once
    console.illama_console = True
    package.addHandler(console)
    package.propagate = False
    level = logging.INFO if is_main else logging.WARNING
    package.setLevel(level)
    hf_logging.set_verbosity(level)  # transformers keeps its own console handler
    steps = logging.getLogger("modeling_illama.training.steps")
    steps.propagate = False  # Trainer prints each log step on the console already: the JSON copy is for train.log
    steps.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
