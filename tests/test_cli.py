"""The command lines: Transformers-style flags of illama-train, one spelling per concept across the tools, help
text (every flag explained, one default each, examples that parse), and argument parsing without torch."""

import argparse
import importlib
import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_illama.cli import main as umbrella
from modeling_illama.cli._common import MODEL_HELP, SPLIT_PREFERENCE, resolve_split
from modeling_illama.cli.train import build_parser as train_parser
from modeling_illama.cli.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
TOOLS = {name: module for name, (module, _) in umbrella.COMMANDS.items()}
HELP_CPU_SECONDS = 1.5  # CPU time of `python -m modeling_illama.cli.X --help` (docs/cli.md has the wall-clock figure)
HEAVY = ("torch", "transformers", "datasets", "numpy", "PIL", "safetensors", "accelerate")


def parsers(name: str):
    """(label, parser) of a tool and of each of its subcommands."""
    parser = importlib.import_module(f"modeling_illama.cli.{TOOLS[name]}").build_parser()
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"{name} {sub}", child) for sub, child in action.choices.items()]
    return found


def all_parsers():
    return [pair for name in TOOLS for pair in parsers(name)]


# ------------------------------------------------------------------------------------ 1. Transformers-style flags


def recipe_of(argv):
    from modeling_illama.training.recipes import load_recipe, parse_overrides

    args = train_parser().parse_args(argv)
    return args, load_recipe(args.recipe, parse_overrides(args.overrides), output_dir=args.output_dir)


@pytest.mark.parametrize(
    "spelling",
    [
        ["--learning_rate", "2e-3", "--num_train_epochs", "5", "--bf16", "false"],
        ["--learning_rate=2e-3", "--num_train_epochs=5", "--bf16=false"],
        ["learning_rate=2e-3", "num_train_epochs=5", "bf16=false"],
        ["--learning-rate", "2e-3", "num_train_epochs=5", "--bf16=false"],
    ],
    ids=["--field value", "--field=value", "field=value", "mixed"],
)
@pytest.mark.parametrize("output", ["--output-dir", "--output_dir"])
def test_every_field_spelling_gives_the_same_recipe(spelling, output, tmp_path):
    args, recipe = recipe_of(["--recipe", "cifar10-mini", output, str(tmp_path), *spelling])
    assert args.output_dir == str(tmp_path) and recipe.output_dir == str(tmp_path)
    assert recipe.learning_rate == 2e-3 and recipe.num_train_epochs == 5 and recipe.bf16 is False


def test_bare_boolean_flags_nested_fields_and_order(tmp_path):
    argv = ["--recipe", "cifar10-mini", "--model_ema", "--output-dir", str(tmp_path), "--model_overrides.hidden_size",
            "64", "seed=3", "--seed", "4", "--report_to", "none", "--image_column", "img"]  # fmt: skip
    args, recipe = recipe_of(argv)
    assert recipe.model_ema is True and recipe.model_overrides["hidden_size"] == 64
    assert recipe.model_overrides["num_hidden_layers"] == 6  # merged into the recipe's, not replacing it
    assert recipe.seed == 4  # the later one wins, as with key=value
    assert args.image_column == "img"  # the tool's own option in Transformers' spelling


def test_a_wrong_flag_names_the_accepted_forms_and_the_nearest_names(tmp_path, capsys):
    code = train_main(["--recipe", "cifar10-mini", "--output-dir", str(tmp_path / "o"), "--lerning_rate", "1e-3"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("illama-train: error: unknown option(s) --lerning_rate")
    assert "did you mean --learning_rate" in err
    assert "--field value, --field=value or field=value" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code = train_main(["--recipe", "cifar10-mini", "--output-dir", str(tmp_path / "o"), "--eval-dataste", "x"])
    assert code == 2 and "did you mean --eval_dataset, --eval-dataset" in capsys.readouterr().err


def test_output_dir_is_required_with_a_recipe_in_either_spelling(capsys):
    assert train_main(["--recipe", "cifar10-mini"]) == 2
    assert "--output-dir DIR (or --output_dir DIR) is required" in capsys.readouterr().err


def test_list_recipes_names_each_shipped_recipe_with_one_line(capsys):
    from modeling_illama.training.recipes import list_recipes

    assert train_main(["--list-recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_recipes()
    assert "cifar10-mini-lora" in list_recipes() and all(len(line.split(maxsplit=1)) == 2 for line in lines)
    assert all(len(line) <= 130 for line in lines)


# ------------------------------------------------------------------------------------ 2. one spelling per concept


def options(parser):
    return {o: a for a in parser._actions for o in a.option_strings}


def test_every_flag_has_help_and_one_default_at_most(capsys):
    for label, parser in all_parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{label}: {action.option_strings} has no help"
        text = parser.format_help()
        for line in text.split("\n  -"):
            assert line.count("(default") <= 1, f"{label}: doubled default in {line!r}"


def test_the_shared_options_have_one_spelling_and_one_default():
    for label, parser in all_parsers():
        found = options(parser)
        if "--device" in found:
            assert found["--device"].default == "auto", label
        if "--batch-size" in found and not label.startswith("train"):
            assert found["--batch-size"].default == 64, label
        if "--split" in found:
            assert found["--split"].default == "auto", label
        if "--model" in found and label not in ("convert", "select-weights", "attach-frozen-llm", "train"):
            assert MODEL_HELP in found["--model"].help or "model folder" in found["--model"].help, label
        for option in found:
            if option.startswith("--") and "-" in option[2:]:
                assert "--" + option[2:].replace("-", "_") in found, f"{label}: no underscore spelling of {option}"
        assert not {"--out", "--output-file", "--out-dir", "--outdir"} & set(found), label
        if "--output" in found:
            assert found["--output"].metavar == "FILE", f"{label}: --output names a file"
        if "--output-dir" in found:
            assert found["--output-dir"].metavar in (None, "DIR"), label
    writers = ("train", "convert", "export-official", "select-weights", "attach-frozen-llm")
    assert all("--overwrite" in options(parsers(name)[0][1]) for name in writers)


def test_split_auto_picks_a_split_the_bundled_data_has_and_names_them_otherwise(tmp_path):
    assert resolve_split(str(REPO / "data" / "cifar10-mini"), "auto") == "test"
    assert resolve_split(str(REPO / "data" / "camvid-mini"), "auto") == "validation"
    assert resolve_split("owner/hub-data", "auto") == SPLIT_PREFERENCE[0]
    (tmp_path / "d").mkdir()
    for split in ("train", "holdout"):
        (tmp_path / "d" / f"{split}.parquet").write_bytes(b"")
    assert resolve_split(str(tmp_path / "d"), "auto") == "train"


def test_attach_refuses_a_non_empty_output_folder_without_overwrite(tmp_path, capsys):
    from modeling_illama.cli.attach_frozen_llm import main as attach
    from modeling_illama.cli.attach_frozen_llm import rms_norm_eps

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    argv = ["--llama", str(tmp_path), "--model", "illama-tiny-224", "--output-dir", str(tmp_path / "out")]
    assert attach(argv) == 2 and "is not empty (pass --overwrite)" in capsys.readouterr().err
    assert rms_norm_eps("checkpoint") is None and rms_norm_eps("null") is None and rms_norm_eps("1e-5") == 1e-5


def test_importing_the_package_elsewhere_registers_the_auto_classes(tmp_path):
    """Only a command of the package defers the registration; a user's script (even one named illama_*.py) and
    `python -c` get the Auto classes on import."""
    script = tmp_path / "illama_demo.py"
    script.write_text(
        "import modeling_illama\nfrom transformers import AutoConfig\nprint(type(AutoConfig.for_model('illama')).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.strip() == "ILlamaConfig", done.stderr[-2000:]


def test_the_illama_command_runs_each_tool(capsys):
    assert umbrella.main(["train", "--list-recipes"]) == 0
    assert "cifar10-mini-lora" in capsys.readouterr().out
    assert umbrella.main(["trian"]) == 2 and "did you mean 'train'" in capsys.readouterr().err
    assert set(TOOLS) == {
        line.split("=")[0].strip().removeprefix("illama-")
        for line in (REPO / "setup.cfg").read_text().split("console_scripts =")[1].split("[")[0].splitlines()
        if line.strip().startswith("illama-")
    }


def help_examples(parser) -> list[list[str]]:
    """The command lines of a --help's `examples:` block (continuation lines joined)."""
    text = parser.description or ""
    if "examples:" not in text:
        return []
    block = text.split("examples:", 1)[1].replace("\\\n", " ")
    return [shlex.split(line) for line in block.strip().splitlines() if line.strip()]


@pytest.mark.parametrize("name", list(TOOLS) + ["illama"])
def test_help_examples_parse_as_written(name, tmp_path, monkeypatch):
    """Running them needs data and models they name: each is parsed by the tool it names (as tests/test_readme.py
    checks the README's commands), recipe fields included. It runs in an empty folder where the folders of the
    files an example writes exist (as after the commands before it; a missing one is refused while parsing)."""
    monkeypatch.chdir(tmp_path)
    text = umbrella.__doc__ if name == "illama" else parsers(name)[0][1].description
    examples = help_examples(argparse.ArgumentParser(description=text))
    assert examples, f"{name}: no examples in --help"
    for words in examples:
        if words[:2] == ["accelerate", "launch"]:
            words = words[words.index("scripts/train.py") :]
            words[0] = "illama-train"
        if words[0] == "illama":
            words = [f"illama-{words[1]}", *words[2:]]
        tool = words[0].removeprefix("illama-")
        for flag, value in zip(words, words[1:]):
            if flag in ("--output", "--json"):
                Path(value).parent.mkdir(parents=True, exist_ok=True)
        module = importlib.import_module(f"modeling_illama.cli.{TOOLS[tool]}")
        try:
            args = module.build_parser().parse_args(words[1:])
        except SystemExit as exit_:
            raise AssertionError(f"{' '.join(words)} does not parse (exit {exit_.code})") from None
        if tool == "train" and args.recipe:
            recipe_of(words[1:])


# ------------------------------------------------------------------------------------ 3. help without torch


@pytest.mark.parametrize("name", [*TOOLS, "scripts/train.py"])
def test_help_imports_nothing_heavy(name):
    command = ["scripts/train.py"] if name.endswith(".py") else ["-m", f"modeling_illama.cli.{TOOLS[name]}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {module for module in imported if module.split(".")[0] in HEAVY}, f"{name} --help imports them"
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < HELP_CPU_SECONDS, f"{name} --help took {cpu:.2f} s of CPU"
