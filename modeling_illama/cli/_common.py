"""What every console script shares: the parser (help with defaults) and the one-line error style."""

from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and appends `(default: X)` to options that have a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.help is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def make_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def user_error(prog: str, error: object) -> int:
    """Print `prog: error: message` on stderr (argparse's own style) and return argparse's exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2
