"""What every console script shares: the parser (help with defaults) and the one-line error style."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and appends `(default: X)` to options that have a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.help is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def make_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


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
