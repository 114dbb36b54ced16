"""What every console script shares: the parser (help with defaults) and the one-line error style."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import math
import os
import sys
from pathlib import Path

from ..utils.writing import writing_to  # noqa: F401  (the tools wrap their writes in it)

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


# numeric options checked after parsing, by destination: (rule, test); 0 never means "all"
POSITIVE_INTS = ("limit", "batch_size", "num_bins", "num_images", "latency_batch_size", "latency_repeats")
POSITIVE_INTS += ("verify_inputs", "num_heads", "num_labels", "image_size", "opset", "hidden_size")
NON_NEGATIVE_INTS = ("num_workers", "seed")
FRACTIONS = ("threshold",)  # in (0, 1]
POSITIVE_FLOATS = ("tolerance",)
OUTPUT_FILES = ("output", "json")  # single files a command writes: never written over without --overwrite
# import name -> the extra that installs it
EXTRA_OF_MODULE = {name: "train" for name in (*TRAIN_EXTRA_MODULES, "tensorboardX")}
EXTRA_OF_MODULE.update({name: "analysis" for name in ("torchao", "onnx", "onnxruntime", "onnxscript")})


class ILlamaArgumentParser(argparse.ArgumentParser):
    """argparse with the package's checks: `--debug` on every (sub)command, numeric limits in range (a count of
    0 or less is an error, not "everything"), and an existing `--output` / `--json` file refused unless
    `--overwrite` (added to any parser with such an option); every `--a-b` option also answers to `--a_b`, as
    Transformers' scripts spell them (kept out of --help)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        self.add_argument = _with_aliases(self.add_argument)
        self.add_argument("--debug", action="store_true", help="show the traceback of an error (or ILLAMA_DEBUG=1)")

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        group.add_argument = _with_aliases(group.add_argument)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = super().add_mutually_exclusive_group(**kwargs)
        group.add_argument = _with_aliases(group.add_argument)
        return group

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        if action.dest in OUTPUT_FILES and "--overwrite" not in self._option_string_actions:
            super().add_argument("--overwrite", action="store_true", help="replace existing output files")
        return action

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            self._check_parsed(action, getattr(namespace, action.dest, None), namespace)
        vars(namespace).pop("debug", None)  # read from argv by one_line_errors; not a parameter of the command
        return namespace, extras

    def _check_parsed(self, action, value, namespace):
        if value is None or isinstance(value, bool) or not action.option_strings:
            return
        name = [o for o in action.option_strings if o not in getattr(action, "aliases", ())][-1]
        dest = action.dest
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, (int, float)) and not math.isfinite(one):
                self.error(f"argument {name}: must be a finite number, got {one}")
            if dest in POSITIVE_INTS and one < 1:
                self.error(f"argument {name}: must be a positive integer, got {one} (leave it out for the default)")
            if dest in NON_NEGATIVE_INTS and one < 0:
                self.error(f"argument {name}: must be >= 0, got {one}")
            if dest in FRACTIONS and not 0 < one <= 1:
                self.error(f"argument {name}: must be in (0, 1], got {one}")
            if dest in POSITIVE_FLOATS and one <= 0:
                self.error(f"argument {name}: must be > 0, got {one}")
        if dest in OUTPUT_FILES and isinstance(value, str):
            self._check_output_file(name, dest, value, namespace)

    def _check_output_file(self, name, dest, path, namespace):
        if os.path.isdir(path):
            self.error(f"argument {name}: {path} is a folder; give a file name")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            self.error(f"argument {name}: no such folder: {parent}")
        if not os.path.exists(path):
            return
        for other, value in vars(namespace).items():
            if other != dest and isinstance(value, str) and os.path.exists(value):
                if os.path.samefile(value, path):
                    self.error(f"argument {name}: {path} is the input --{other.replace('_', '-')}; write elsewhere")
        if error := existing_outputs_error([path], getattr(namespace, "overwrite", False), "choose another file"):
            self.error(f"argument {name}: {error}")


def make_parser(prog: str, description: str | None, parser_class=None, **kwargs) -> ILlamaArgumentParser:
    """The package's parser: help with defaults, the checks of ILlamaArgumentParser, Transformers' underscore
    spellings of every dashed option."""
    return (parser_class or ILlamaArgumentParser)(prog=prog, description=description, **kwargs)


def describe_error(error: BaseException) -> str:
    """One line for an exception: its message, with the install hint for a missing optional package and the
    type name for an unexpected kind of error."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.split(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        if extra:
            return install_hint([top], extra)
    if type(error).__name__.startswith("StrictDataclass") and isinstance(error.__cause__, (ValueError, TypeError)):
        error = error.__cause__  # a config field's own check: its message is the line
    text = " ".join(str(error).split()) or "no details"
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    expected = (ValueError, OSError, RuntimeError, ImportError, KeyError, LookupError)
    return text if isinstance(error, expected) else f"{type(error).__name__}: {text}"


def debug_requested(argv) -> bool:
    argv = sys.argv[1:] if argv is None else list(argv)
    return "--debug" in argv or os.environ.get("ILLAMA_DEBUG", "") not in ("", "0")


def one_line_errors(prog: str):
    """Decorator of a console script's `main(argv)`: any exception becomes `prog: error: message` on stderr and
    exit status 2 (argparse's style); `--debug` or ILLAMA_DEBUG=1 shows the traceback instead."""

    def decorate(main):
        @functools.wraps(main)
        def run(argv=None):
            global _DEBUG
            _DEBUG = debug_requested(argv)
            try:
                return main(argv)
            except Exception as error:
                if _DEBUG:
                    raise
                return user_error(prog, describe_error(error))

        return run

    return decorate


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


def default_output(model: str, prefix: str, suffix: str = "") -> str:
    """The JSON file a tool writes when no --output is given: `<model>/<prefix><suffix>.json` next to a local
    model; `./<prefix>_<org>--<name><suffix>.json` for a Hub id (never inside a path named like the id)."""
    if os.path.isdir(model):
        return os.path.join(model, f"{prefix}{suffix}.json")
    return f"{prefix}_{model.replace('/', '--')}{suffix}.json"


def output_file(args, prefix: str, suffix: str = "") -> str:
    """`--output`, else `default_output(args.model, prefix, suffix)`, refused here (FileExistsError) when it exists
    and `--overwrite` is not given: before any work (an explicit --output is checked by the parser)."""
    if args.output:
        return args.output
    output = default_output(args.model, prefix, suffix)
    if error := existing_outputs_error([output], args.overwrite, "give --output FILE to write elsewhere"):
        raise FileExistsError(error)
    return output


def existing_outputs_error(paths, overwrite: bool, elsewhere: str) -> str | None:
    """The one-line refusal when a file (or folder) a command is about to write already exists and `overwrite`
    is not set, else None: names the existing paths and both fixes, `--overwrite` or `elsewhere` (e.g.
    "--output FILE"). Called before the command loads a model or does any work, so that nothing is lost."""
    found = [str(path) for path in paths if os.path.lexists(path)]
    if overwrite or not found:
        return None
    verb, pronoun = ("exists", "it") if len(found) == 1 else ("exist", "them")
    return f"{', '.join(found)} {verb}; pass --overwrite to replace {pronoun}, or {elsewhere}"


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


_DEBUG = False  # set by one_line_errors for the running command


def user_error(prog: str, error: object) -> int:
    """Print `prog: error: message` on stderr (argparse's own style) and return argparse's exit status 2 (with
    --debug / ILLAMA_DEBUG=1, an exception is raised instead, with its traceback)."""
    if _DEBUG and isinstance(error, BaseException):
        raise error
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def missing_extra(extra: str, modules: tuple[str, ...]) -> str | None:
    """The install hint when one of `modules` (of the `extra` in setup.cfg) is not installed, else None."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return install_hint(missing, extra) if missing else None


def install_hint(missing: list[str], extra: str) -> str:
    """`X not installed: this command needs the [extra] extra; install it with: ...`"""
    return (
        f"{', '.join(missing)} not installed: this command needs the [{extra}] extra; install it with: "
        f"pip install 'illama-transformers[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
    )


def missing_train_extra() -> str | None:
    """The install hint when a package of the [train] extra is missing (a core-only `pip install`), else None."""
    return missing_extra("train", TRAIN_EXTRA_MODULES)


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
