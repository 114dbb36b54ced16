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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and appends `(default: X)` to options that have a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.help is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def make_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


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
