"""What every console script shares: the parser (help with defaults) and the one-line error style."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import sys
from pathlib import Path

# import names of the packages of the [train] extra (setup.cfg) that training and evaluation need
TRAIN_EXTRA_MODULES = ("accelerate", "datasets", "evaluate", "torchvision", "timm", "yaml", "matplotlib", "tqdm")


DEFAULT_BATCH_SIZE = 64  # images per forward pass of every tool that evaluates
SPLIT_PREFERENCE = ("validation", "val", "test")  # --split auto: the first of these the data set has


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks, appends `(default: X)` to options with a real default (once: not when
    the help already names its default) and hides the underscore spellings of dashed options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.help is argparse.SUPPRESS:
            return text
        if "default" in text or action.default == [] or isinstance(action, argparse._HelpAction):
            return text
        return super()._get_help_string(action)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if o not in getattr(action, "aliases", ())]
        if not shown or shown == action.option_strings:
            return super()._format_action_invocation(action)
        visible = argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(visible)


def _with_aliases(add_argument):
    """Wrap `add_argument` so that every `--a-b` option also answers to `--a_b` (kept out of --help)."""

    def add(*names, **kwargs):
        aliases = ["--" + n[2:].replace("-", "_") for n in names if n.startswith("--") and "-" in n[2:]]
        action = add_argument(*names, *aliases, **kwargs)
        action.aliases = tuple(aliases)
        return action

    return add


class ArgumentParser(argparse.ArgumentParser):
    """argparse with Transformers' spellings: `--output-dir` and `--output_dir` are the same option."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument = _with_aliases(self.add_argument)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        group.add_argument = _with_aliases(group.add_argument)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = super().add_mutually_exclusive_group(**kwargs)
        group.add_argument = _with_aliases(group.add_argument)
        return group


def make_parser(prog: str, description: str | None, parser_class=None, **kwargs) -> ArgumentParser:
    """The package's parser: help with defaults, Transformers' underscore spellings of every dashed option."""
    parser_class = parser_class or ArgumentParser
    return parser_class(prog=prog, description=description, formatter_class=HelpFormatter, **kwargs)


MODEL_HELP = "model folder or Hub id"


def add_model(parser, required: bool = True, what: str = "", **kwargs) -> argparse.Action:
    """`--model`: a saved model folder or a Hub id (`what` says which kind of model)."""
    return parser.add_argument(
        "--model", required=required, help=MODEL_HELP + (f" ({what})" if what else ""), **kwargs
    )


def add_device(parser) -> None:
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."
    )


def add_batch_size(parser, default: int = DEFAULT_BATCH_SIZE) -> None:
    parser.add_argument("--batch-size", type=int, default=default, help="images per forward pass")


def add_split(parser) -> None:
    parser.add_argument(
        "--split",
        default="auto",
        help=f"dataset split; auto: the first of {', '.join(SPLIT_PREFERENCE)} the data set has",
    )


def add_overwrite(parser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def resolve_device(name: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; anything else as given (torch checks it)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_split(dataset: str, split: str) -> str:
    """`auto` -> the first of SPLIT_PREFERENCE that `dataset` has (a folder without split sub-folders is one
    'train' split); a named split is returned as given. Raises ValueError naming the splits there are."""
    if split != "auto":
        return split
    from modeling_illama.training.data import available_splits

    splits = available_splits(dataset)
    if splits is None:  # a Hub id: the usual evaluation split
        return SPLIT_PREFERENCE[0]
    for name in SPLIT_PREFERENCE:
        if name in splits:
            return name
    if splits == ["train"]:
        return "train"
    raise ValueError(f"{dataset} has the splits {splits}, none of {list(SPLIT_PREFERENCE)}: pass --split NAME")


def load_package() -> None:
    """After parsing: Transformers, torch and the Auto-class registration of the model (see modeling_illama)."""
    import modeling_illama

    modeling_illama.register_auto_classes()


def add_allow_missing_weights(parser: argparse.ArgumentParser, verb: str) -> None:
    """`--allow-missing-weights`: `verb` (draw, measure, evaluate) a checkpoint that lacks some of the model's weights."""
    parser.add_argument(
        "--allow-missing-weights",
        action="store_true",
        help=f"{verb} even if weights are missing from the checkpoint (they are then random)",
    )


@contextlib.contextmanager
def progress_on_stdout(level: int = logging.INFO):
    """While the block runs, the package's info records (progress, results) are plain lines on stdout and its
    warnings and errors go to stderr."""
    package = logging.getLogger("modeling_illama")
    progress = logging.StreamHandler(sys.stdout)
    progress.setFormatter(logging.Formatter("%(message)s"))
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    previous = package.level
    package.addHandler(progress)
    package.addHandler(warnings)
    package.setLevel(level)
    try:
        yield
    finally:
        package.removeHandler(progress)
        package.removeHandler(warnings)
        package.setLevel(previous)


def user_error(prog: str, error: object) -> int:
    """Print `prog: error: message` on stderr (argparse's own style) and return argparse's exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def missing_train_extra() -> str | None:
    """The install hint when a package of the [train] extra is missing (a core-only `pip install`), else None."""
    missing = [name for name in TRAIN_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not installed: this command needs the [train] extra; "
        "install it with: pip install 'illama-transformers[train]' (in a checkout: pip install -e '.[train]')"
    )


def looks_like_local_path(name: str) -> bool:
    """True for a value meant as a local folder: it starts with ./ ../ / or ~, has more than one `/` (a Hub id is
    `name` or `org/name`), or its first component exists here (e.g. `outputs/` of `outputs/run`)."""
    if name.startswith(("./", "../", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


def missing_model_folder(name: str) -> str | None:
    """`no such folder` for a --model value that looks like a local folder and is none, else None (a preset
    name or a Hub id is left to the loader)."""
    path = Path(name).expanduser()
    if path.is_dir() or not looks_like_local_path(name):
        return None
    if path.exists():
        return f"{name} is a file, not a model folder (expected a folder with config.json and the weights)"
    return f"no such folder: {name} (expected a local model folder with config.json and the weights)"
