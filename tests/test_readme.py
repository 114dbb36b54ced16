"""Documentation test: every fenced code block of README.md and of every docs/*.md page is run or checked as
written, page by page (README first, then the pages in the order of mkdocs.yml's navigation), each page in order.

Each block must be preceded (blank lines allowed) by one directive in an HTML comment, which the reader sees
next to the block in the Markdown source:

    <!-- readme-test: run -->
        shell: every command runs with bash in one scratch folder (data/, tests/, configuration/, scripts/, ...
        are links into the checkout, so relative paths resolve as in a checkout; files written by one block are
        there for the next). `illama-*` commands run their console-script function in this process (the same
        code, without a fresh interpreter's import time). `hf` commands (Hub) are only parsed. `cd DIR` and
        `export VAR=x` hold for the rest of the block.
        python: executed in one namespace per page, shared by its python `run` blocks like a notebook, in the
        scratch folder.
    <!-- readme-test: run, append: num_train_epochs=1 max_steps=3 -->
        the same, with these words appended to every training command of the block (the smallest overrides the
        test needs, stated where the reader sees them).
    <!-- readme-test: run, append: max_steps=2, eval-limit: 32 -->
        `--limit 32` added to every `illama-eval` command of the block (the first 32 images of the split).
    <!-- readme-test: run, stand-in: downloads/FILE.pth (random weights) -->
        before the block runs, FILE is written (if missing) as a random-weight checkpoint in the authors' layout
        by the package's own export, from the preset of the released file of that name: what the `hf download`
        of the block would have fetched.
    <!-- readme-test: run, no venv on PATH -->
        run with the interpreter's bin folder removed from PATH, as in a shell where the venv is not activated.
    <!-- readme-test: check -->
        nothing runs: each command is parsed by its tool's own parser (illama-* / scripts/*.py: the CLI's
        argparse parser, then the recipe and its overrides are loaded and the global batch is checked against
        the process count; `accelerate launch`: accelerate's parser, the config file must exist, then the
        script's arguments as above; `hf`: the hf CLI's parser; `pip`: pip's parser; `make T`: `make -n T`;
        `bash F.sh`: `bash -n`). python: compiled, and its import statements executed. bibtex: entries parsed
        (title, author, year). yaml / json: parsed.
    <!-- readme-test: skip: REASON -->
        not tested (e.g. a diagram), with the reason.

A block without a directive fails, so a new README block cannot go untested by accident.

Budget (the whole suite, install included, must fit CI's 20 minutes on 2 cores), enforced on the work, not timed:
every training command of a `run` block (illama-train, scripts/train.py, scripts/run_demo.sh) must end up with
`max_steps=N`, N <= MAX_STEPS_PER_RUN (in the command or its `append:`); at most MAX_TRAINING_RUNS such commands
over all pages together; every block stops after BLOCK_TIMEOUT_S seconds (a hang guard). A heavier block is marked `check`
with what is checked, or `skip` with the reason.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
# checkout folders linked into the scratch folder (read by the README's commands; nothing is written into them)
LINKED = ("benchmarks", "configuration", "data", "docs", "model_cards", "modeling_illama", "scripts", "tests")
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->", re.S)
FENCE = re.compile(r"^```(\S*)\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
TRAIN_SCRIPT = "train"
MAX_STEPS_PER_RUN = 3  # optimizer steps of one training command run by this test
MAX_TRAINING_RUNS = 6  # training commands run by this test, over the whole README
BLOCK_TIMEOUT_S = 600  # per block: a hang guard, far above what a block needs


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    directive: str | None  # text after "readme-test:", None when missing
    page: str = "README.md"  # the file, relative to the repository

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def action(self) -> str:
        return re.split(r"[,:(\s]", (self.directive or "").strip(), maxsplit=1)[0]

    def option(self, name: str) -> str | None:
        """The value of `name: value` in the directive (up to the next `, word:` option or the end)."""
        match = re.search(rf"(?:^|,)\s*{re.escape(name)}\s*:\s*(.*?)\s*(?=,\s*[a-z -]+:|$)", self.directive or "")
        return match.group(1) if match else None

    def flag(self, words: str) -> bool:
        return any(part.strip() == words for part in (self.directive or "").split(","))


def readme_blocks(text: str, page: str = "README.md") -> list[Block]:
    """Every fenced block with the directive of the HTML comment right before it (only blank lines between)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, language = i, fence.group(1)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{page}:{start + 1}: unclosed code fence"
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        directive = None
        if before >= 0 and lines[before].rstrip().endswith("-->"):
            opening = before
            while opening > 0 and "<!--" not in lines[opening]:
                opening -= 1
            match = DIRECTIVE.search("\n".join(lines[opening : before + 1]))
            directive = " ".join(match.group(1).split()) if match else None
        blocks.append(Block(start + 1, language, "\n".join(lines[start + 1 : end]), directive, page))
        i = end + 1
    return blocks


def indented_code_blocks(text: str) -> list[int]:
    """Lines of 4-space-indented code blocks outside fences (they would escape this test)."""
    found, in_fence, previous_blank = [], False, True
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and previous_blank and line.startswith("    ") and line.strip():
            found.append(number)
        previous_blank = not line.strip()
    return found


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    commands, current = [], ""
    for raw in code.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        commands.append(current + line)
        current = ""
    assert not current, f"dangling line continuation in {code!r}"
    return commands


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """`VAR=x tool args  # comment` -> ({VAR: x}, [tool, args...])."""
    words = shlex.split(command, comments=True)
    env = {}
    while words and ENV_ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def trains(words: list[str]) -> bool:
    """A command that starts a training run."""
    return bool(words) and (
        words[0] == "illama-train" or "scripts/train.py" in words or "scripts/run_demo.sh" in words
    )


def training_commands(block: Block) -> list[list[str]]:
    """The training commands of a shell `run` block, with the words its `append:` adds."""
    if block.action != "run" or block.language not in SHELL_LANGUAGES:
        return []
    extra = shlex.split(block.option("append") or "")
    return [[*words, *extra] for _, words in map(split_command, shell_commands(block.code)) if trains(words)]


def max_steps(words: list[str]) -> int | None:
    """The last `max_steps=N` among a command's words (later overrides win, as in the CLI)."""
    values = [word.partition("=")[2] for word in words if word.startswith("max_steps=")]
    return int(values[-1]) if values else None


def documentation_pages() -> list[str]:
    """README.md, then docs/*.md in the order of mkdocs.yml's nav (pages outside it last, alphabetically): the
    order a reader follows, and the order in which the pages' blocks run (a page may use what an earlier one
    wrote, e.g. the README's converted folder)."""
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8")).get("nav", [])
    listed = [next(iter(entry.values())) if isinstance(entry, dict) else entry for entry in nav]
    pages = [f"docs/{name}" for name in listed if (DOCS / name).is_file()]
    pages += sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if f"docs/{p.name}" not in pages)
    return ["README.md", *pages]


SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
PAGES = documentation_pages()
PAGE_BLOCKS = {page: readme_blocks((REPO / page).read_text(encoding="utf-8"), page) for page in PAGES}
BLOCKS = [block for page in PAGES for block in PAGE_BLOCKS[page]]


# ------------------------------------------------------------------------------------------------ checks
def cli_module(tool: str):
    """`illama-eval` / `scripts/eval.py` -> modeling_illama.cli.eval."""
    name = Path(tool).stem if tool.endswith(".py") else tool.removeprefix("illama-")
    return importlib.import_module(f"modeling_illama.cli.{name.replace('-', '_')}")


def check_training_args(args, num_processes: int) -> None:
    """A train command's recipe and overrides load, and its global batch splits over `num_processes`."""
    from modeling_illama.training.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    split = getattr(recipe, "gradient_accumulation_for", None) or recipe.gradient_accumulation_steps
    split(num_processes)


def check_cli(tool: str, argv: list[str], num_processes: int = 1) -> None:
    module = cli_module(tool)
    try:
        args = module.build_parser().parse_args(argv)
    except SystemExit as exit_:
        raise AssertionError(f"{tool} rejects its arguments {argv} (exit {exit_.code})") from None
    if module.__name__.endswith(f".{TRAIN_SCRIPT}"):
        check_training_args(args, num_processes)


def check_python_script(path: str, argv: list[str]) -> None:
    """`python FILE.py ARGS` outside scripts/: the file's own `build_parser()` or `parse_args(argv)`."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        if hasattr(module, "build_parser"):
            module.build_parser().parse_args(argv)
        else:
            module.parse_args(argv)
    except SystemExit as exit_:
        raise AssertionError(f"{path} rejects its arguments {argv} (exit {exit_.code})") from None


def check_accelerate(argv: list[str]) -> None:
    import yaml
    from accelerate.commands.launch import launch_command_parser

    assert argv[:1] == ["launch"], f"only `accelerate launch` is checked, got {argv}"
    try:
        args = launch_command_parser().parse_args(argv[1:])
    except SystemExit as exit_:
        raise AssertionError(f"accelerate launch rejects {argv[1:]} (exit {exit_.code})") from None
    num_processes = args.num_processes
    if args.config_file:
        config = REPO / args.config_file
        assert config.is_file(), f"accelerate config {args.config_file} does not exist"
        num_processes = num_processes or yaml.safe_load(config.read_text())["num_processes"]
    assert (REPO / args.training_script).is_file(), f"no script {args.training_script}"
    check_cli(args.training_script, args.training_script_args, num_processes or 1)


def check_hf(argv: list[str]) -> None:
    """Parse with the hf CLI's own (click) parser, down to the sub-command; nothing is invoked."""
    import click
    from huggingface_hub.cli.hf import app

    command, context = app, app.make_context("hf", list(argv))
    while isinstance(command, click.Group):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2 moves protected_args into args
            rest = [*context.protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)


def check_named_files(words: list[str]) -> None:
    """Files of the checkout a command names exist (`docs/images/cat.jpg`, `configuration/...`), and a converted
    folder is named as the conversion names it (the folder of a released checkpoint: its model card's name)."""
    converted = {card.stem for card in (REPO / "model_cards").glob("*.md")}
    for word in words:
        value = word.partition("=")[2] if "=" in word and not word.startswith("-") else word
        if value.split("/")[0] in LINKED and "/" in value:
            assert (REPO / value).exists(), f"{value} is named but does not exist in the checkout"
        if value.startswith("converted/"):
            name = value.split("/")[1]
            assert name in converted, (
                f"{value}: the conversion writes no folder {name!r} (it names {sorted(converted)})"
            )


def check_command(command: str) -> None:
    _, words = split_command(command)
    tool, argv = words[0], words[1:]
    check_named_files(argv)
    if tool.startswith("illama-"):
        check_cli(tool, argv)
    elif tool == "python" and argv[:2] and argv[0] == "-m" and argv[1].startswith("modeling_illama.cli."):
        check_cli(argv[1].rpartition(".")[2], argv[2:])
    elif tool == "python" and argv[0].startswith("scripts/"):
        check_cli(argv[0], argv[1:])
    elif tool == "python":
        check_python_script(argv[0], argv[1:])
    elif tool == "accelerate":
        check_accelerate(argv)
    elif tool == "hf":
        check_hf(argv)
    elif tool == "pip":
        from pip._internal.commands import create_command

        create_command(argv[0]).parse_args(argv[1:])  # pip's own option parser (exits on an unknown option)
    elif tool == "make":
        done = subprocess.run(["make", "-n", *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"make -n {' '.join(argv)}: {done.stderr}"
    elif tool == "bash":
        done = subprocess.run(["bash", "-n", argv[0]], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"bash -n {argv[0]}: {done.stderr}"
    else:
        raise AssertionError(f"no checker for {tool!r} (in {command!r}); run it or add one to tests/test_readme.py")


def check_python(block: Block) -> None:
    tree = ast.parse(block.code, filename=block.where)
    imports = ast.Module([node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], [])
    exec(compile(imports, block.where, "exec"), {})


def check_data(block: Block) -> None:
    """yaml / json: parsed."""
    import json

    import yaml

    yaml.safe_load(block.code) if block.language in ("yaml", "yml") else json.loads(block.code)


def check_bibtex(block: Block) -> None:
    entries = re.findall(r"@(\w+)\{([\w:-]+),(.*?)\n\}", block.code, re.S)
    assert entries and len(entries) == block.code.count("@"), "every @entry{key, ...} must close with a `}` line"
    for kind, key, body in entries:
        assert body.count("{") == body.count("}"), f"unbalanced braces in {key}"
        fields = set(re.findall(r"^\s*(\w+)\s*=", body, re.M))
        assert {"title", "author", "year"} <= fields, f"{kind} {key} lacks title/author/year: {sorted(fields)}"


# ------------------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh folder that looks like a checkout: links to its read-only folders, and the venv as .venv."""
    root = tmp_path_factory.mktemp("readme")
    for name in LINKED:
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    if sys.prefix != sys.base_prefix:  # what `make install` makes: scripts/run_demo.sh looks for it
        (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def namespaces():
    """One namespace per page, shared by that page's python blocks (like a notebook)."""
    return {}


def command_env(no_venv: bool) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    bin_dir = str(Path(sys.executable).parent)
    paths = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join(paths if no_venv else [bin_dir, *paths])
    return env


def write_stand_in(scratch: Path, description: str) -> None:
    """A random-weight checkpoint in the authors' layout at the README's path, through the package's export."""
    import torch

    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.conversion import export_official
    from modeling_illama.conversion.cards import released_variant

    path = scratch / description.split()[0]
    if path.exists():
        return
    variant = released_variant(path)
    assert variant is not None, f"stand-in {path.name} is not a released file name"
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_official(ILlamaForImageClassification(load_preset(variant.preset)).eval(), path)


@contextlib.contextmanager
def logging_restored():
    """The CLIs configure logging for a process of their own (handlers, levels, propagation): undo it afterwards so
    that later tests in this process see the loggers as they were."""
    import logging

    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(), logging.getLogger("modeling_illama"), hf_logging.get_logger()]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    verbosity = hf_logging.get_verbosity()
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            for handler in set(logger.handlers) - set(handlers):
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(level)
            logger.propagate = propagate
        hf_logging.set_verbosity(verbosity)


def run_in_process(words: list[str]) -> None:
    """`illama-NAME args`: the console script's function, as the entry point calls it."""
    module = cli_module(words[0])
    stdout, stderr = io.StringIO(), io.StringIO()
    with logging_restored(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = module.main(words[1:])
    assert code in (0, None), f"{' '.join(words)} exited {code}:\n{stdout.getvalue()[-3000:]}\n{stderr.getvalue()}"


def run_shell(block: Block, scratch: Path, monkeypatch) -> None:
    append = block.option("append")
    no_venv = block.flag("no venv on PATH")
    cwd, exported = scratch, {}
    for command in shell_commands(block.code):
        env, words = split_command(command)
        if words[0] == "cd":  # shell state that later commands of the block see
            cwd = cwd / words[1]
            continue
        if words[0] == "export":
            exported.update(word.split("=", 1) for word in words[1:])
            continue
        if words[0] == "hf":  # the Hub is not reachable from the tests: parsed only (a stand-in has the file)
            check_hf(words[1:])
            continue
        if append and trains(words):
            command, words = f"{command} {append}", [*words, *shlex.split(append)]
        if block.option("eval-limit") and words[0] == "illama-eval":
            command, words = (
                f"{command} --limit {block.option('eval-limit')}",
                [*words, "--limit", block.option("eval-limit")],
            )
        if words[0].startswith("illama-") and not env and not no_venv:
            for name, value in {**command_env(no_venv), **exported}.items():
                monkeypatch.setenv(name, value)
            monkeypatch.chdir(cwd)
            run_in_process(words)
            continue
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env={**command_env(no_venv), **exported},
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
        assert done.returncode == 0, (
            f"`{command}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )


def run_python(block: Block, namespace: dict) -> None:
    exec(compile(block.code, block.where, "exec"), namespace)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_is_fenced(page):
    lines = indented_code_blocks((REPO / page).read_text(encoding="utf-8"))
    assert not lines, f"indented code blocks at {page} lines {lines}: fence them (```bash) and add a directive"


def test_a_fresh_machine_needs_two_commands():
    """The first section states exactly `make demo` (the main job) and `make test` (the suite, what CI runs), and
    the Makefile and .ci/run do what it says: both set up the venv, demo runs the main job, test the whole suite."""
    text = README.read_text(encoding="utf-8")
    first = text.split("\n## ")[1]
    assert first.startswith("Fresh machine")
    assert [block.code.strip() for block in readme_blocks(first)] == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()[-1]
    for target, runs in (("demo", "bash scripts/run_demo.sh"), ("test", "-m pytest")):
        done = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and runs in done.stdout, done.stdout + done.stderr
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert (
        "tests/" not in test_recipe
        and " -k " not in test_recipe
        and " -m " not in test_recipe.replace("python -m pytest", "")
    ), f"make test must run every test (this README test included): {test_recipe!r}"
    assert re.search(r"^test:.*\$\(VENV\)/\.installed", (REPO / "Makefile").read_text(), re.M)


def test_run_blocks_stay_within_the_budget():
    runs = [(block.where, words) for block in BLOCKS for words in training_commands(block)]
    unbounded = [
        f"{line}: {' '.join(words[:4])} ... (max_steps={max_steps(words)})"
        for line, words in runs
        if max_steps(words) is None or max_steps(words) > MAX_STEPS_PER_RUN
    ]
    assert not unbounded, (
        f"training commands run by the README test need max_steps <= {MAX_STEPS_PER_RUN} "
        f"(`append: max_steps=2` in the directive), or `check`: {unbounded}"
    )
    assert len(runs) <= MAX_TRAINING_RUNS, (
        f"{len(runs)} training commands run by the documentation test (budget {MAX_TRAINING_RUNS}): mark the heavier "
        f"ones `check`: {[line for line, _ in runs]}"
    )


def run_block(block: Block, scratch: Path, namespace: dict, monkeypatch) -> str | None:
    """Run or check one block as its directive says; the reason when it is skipped."""
    where = block.where
    assert block.directive is not None, f"{where}: no <!-- readme-test: run|check|skip: REASON --> before the block"
    assert block.action in ("run", "check", "skip"), f"{where}: unknown directive {block.directive!r}"
    if block.action == "skip":
        reason = block.option("skip") or re.fullmatch(r"skip\s*\((.+)\)", block.directive or "", re.S)
        reason = reason.group(1) if isinstance(reason, re.Match) else reason
        assert reason, f"{where}: `skip` needs a reason (skip: REASON or skip (REASON))"
        return reason
    shell = block.language in SHELL_LANGUAGES
    data = block.language in ("yaml", "yml", "json")
    assert shell or data or block.language in ("python", "bibtex"), f"{where}: no runner for ```{block.language}"
    if block.action == "check":
        if shell:
            for command in shell_commands(block.code):
                check_command(command)
        elif block.language == "python":
            check_python(block)
        elif data:
            check_data(block)
        else:
            check_bibtex(block)
        return None
    assert shell or block.language == "python", f"{where}: ```{block.language} blocks are checked, not run"
    monkeypatch.chdir(scratch)
    if block.option("stand-in"):
        write_stand_in(scratch, block.option("stand-in"))
    if shell:
        run_shell(block, scratch, monkeypatch)
    else:
        run_python(block, namespace)
    return None


@pytest.mark.timeout(BLOCK_TIMEOUT_S * 4)
@pytest.mark.parametrize("page", PAGES)
def test_documentation_page(page: str, scratch: Path, namespaces: dict, monkeypatch):
    """Every block of the page, in page order (a block's files and python names are there for the next ones)."""
    blocks = PAGE_BLOCKS[page]
    namespace = namespaces.setdefault(page, {"__name__": "__docs__"})
    skipped = [(block.where, run_block(block, scratch, namespace, monkeypatch)) for block in blocks]
    skipped = [f"{where}: {reason}" for where, reason in skipped if reason]
    if blocks and len(skipped) == len(blocks):
        pytest.skip("; ".join(skipped))


def test_what_the_readme_writes_is_git_ignored(scratch):
    """After the blocks (pytest runs this file in order): everything they wrote into the scratch checkout is ignored
    by the repository's .gitignore, so following the README leaves `git status` clean."""
    written = sorted(
        p.name + ("/" if p.is_dir() else "") for p in scratch.iterdir() if p.name not in (*LINKED, ".venv")
    )
    if not written or not (REPO / ".git").exists():
        pytest.skip("no README block ran in this session, or no git checkout")
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *written], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert not set(written) - set(done.stdout.split()), (
        f"add to .gitignore: {sorted(set(written) - set(done.stdout.split()))}"
    )


# ----------------------------------------------------------------------------- the test's own machinery
def test_directives_are_read_from_the_comment_right_before_a_block():
    text = (
        "<!-- readme-test: run, append: num_train_epochs=1 max_steps=3 -->\n\n```bash\nillama-train \\\n  --x y  # c\n```\n"
        "text\n\n```python\nx = 1\n```\n<!--\n readme-test: skip: a diagram\n-->\n```text\na\n```\n"
    )
    first, second, third = readme_blocks(text)
    assert (first.action, first.option("append"), first.line) == ("run", "num_train_epochs=1 max_steps=3", 3)
    both = readme_blocks(
        "<!-- readme-test: run, append: max_steps=2 eval_strategy=no, eval-limit: 32 -->\n```bash\nx\n```\n"
    )
    assert (both[0].option("append"), both[0].option("eval-limit")) == ("max_steps=2 eval_strategy=no", "32")
    assert shell_commands(first.code) == ["illama-train --x y  # c"]
    assert split_command("A= B=2 tool 'a b' # c") == ({"A": "", "B": "2"}, ["tool", "a b"])
    assert second.directive is None and third.action == "skip" and third.option("skip") == "a diagram"
    assert indented_code_blocks("text\n\n    make demo\n\n```\n    not code\n```\n") == [3]


def test_the_budget_sees_unbounded_training():
    text = (
        "<!-- readme-test: run -->\n```bash\nillama-train --recipe r --output-dir o\n```\n"
        "<!-- readme-test: run, append: max_steps=2 -->\n```bash\nbash scripts/run_demo.sh\nillama-eval --model o\n```\n"
        "<!-- readme-test: check -->\n```bash\nillama-train --recipe r --output-dir o\n```\n"
        "<!-- readme-test: run, append: max_steps=9 -->\n```bash\nillama-train --recipe r max_steps=1\n```\n"
    )
    unbounded, demo, checked, last_wins = (training_commands(block) for block in readme_blocks(text))
    assert [max_steps(words) for words in unbounded] == [None]
    assert demo == [["bash", "scripts/run_demo.sh", "max_steps=2"]] and checked == []
    assert max_steps(last_wins[0]) == 9


def test_check_rejects_what_the_tools_reject():
    with pytest.raises(AssertionError, match="rejects"):
        check_command("illama-eval --model m")  # --dataset is required
    with pytest.raises(ValueError, match="unknown recipe field"):
        check_command("illama-train --recipe cifar10-mini --dataset d --output-dir o num_train_epochz=1")
    with pytest.raises(ValueError, match="not divisible"):
        check_command(
            "accelerate launch --multi_gpu --num_processes 2 scripts/train.py --recipe cifar10-mini --dataset d "
            "--output-dir o global_batch_size=64 per_device_train_batch_size=64"
        )
    with pytest.raises(AssertionError, match="does not exist"):
        check_command("accelerate launch --config_file configuration/accelerate/none.yaml scripts/train.py")
    with pytest.raises(AssertionError, match="does not exist"):
        check_command("illama-activation-maps --model m --image docs/images/dog.jpg --layers 1 --output x.png")
    with pytest.raises(AssertionError, match="writes no folder 'illama-tiny-in1k'"):
        check_command("illama-train --recipe cifar10 --model converted/illama-tiny-in1k --output-dir o")
    import click

    with pytest.raises(click.UsageError):
        check_command("hf download org/name --no-such-option")
    check_command("pip install -e '.[train]'")
    with pytest.raises(SystemExit):
        check_command("pip install --no-such-option x")
    with pytest.raises(AssertionError, match="no checker"):
        check_command("rm -rf /")


def test_the_layout_table_matches_the_tree():
    """The "Where things are" table of docs/contributing.md names every module and subpackage of modeling_illama/
    and every top-level folder it describes exists, so a newcomer finds each file by the table."""
    table = (DOCS / "contributing.md").read_text().split("Where things are", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))
    assert named, "no layout table found after 'Where things are'"
    for path in named:
        assert (REPO / path.rstrip("/")).exists(), f"the layout table names {path}, which does not exist"
    package = REPO / "modeling_illama"
    for entry in sorted(package.iterdir()):
        if (
            entry.name.startswith(("_", "."))
            or entry.suffix not in (".py", "")
            or entry.is_file()
            and not entry.suffix
        ):
            continue
        listed = f"modeling_illama/{entry.name}" + ("/" if entry.is_dir() and not entry.is_symlink() else "")
        assert listed in named or listed.rstrip("/") in named, f"{listed} is missing from the layout table"


# ------------------------------------------------------------------------------------------------ the pages' text
HISTORY = re.compile(
    r"SECTIONS BELOW|earlier recipe|used to (break|be)|target met|met\? *\||adversarial user|"
    r"no GPU was (available|lent)|\bissue [0-9]+"
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", [page for page in PAGES if page != "docs/DESIGN.md"])
def test_the_page_describes_the_package_as_it_is(page):
    """No project history in user text (issue numbers, targets met or not, what a version used to do)."""
    found = [
        f"{page}:{number}: {line.strip()[:120]}"
        for number, line in enumerate((REPO / page).read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, found


def test_the_readme_links_resolve_and_name_every_docs_page():
    """README links to files of the checkout exist (GitHub renders them; mkdocs checks the docs/ pages' links), and
    the README links every page of the documentation."""
    links = {link.split("#")[0] for link in LINK.findall(README.read_text(encoding="utf-8"))}
    local = {link for link in links if link and "://" not in link}
    assert not [link for link in local if not (REPO / link).exists()], sorted(local)
    assert not set(PAGES[1:]) - local, f"docs pages the README does not link: {sorted(set(PAGES[1:]) - local)}"


def test_the_history_pattern_sees_history():
    assert HISTORY.search("| target | measured | met? |") and HISTORY.search("see issue 24")
    assert not HISTORY.search("the class token sits at the END of the sequence")


PACKAGE_PATH = re.compile(r"\bmodeling_illama/[\w/.]*\w/?")
DOTTED = re.compile(r"\bmodeling_illama(?:\.\w+)+")


@pytest.mark.parametrize("page", PAGES)
def test_every_package_path_a_page_names_exists(page):
    """`modeling_illama/x/y.py` and `modeling_illama.x.y[.name]` named in user text exist, so a moved module shows
    up here (docs/api.md's `:::` directives are resolved by the strict site build)."""
    text = (REPO / page).read_text(encoding="utf-8")
    stale = [path for path in set(PACKAGE_PATH.findall(text)) if not (REPO / path.rstrip("/")).exists()]
    for dotted in set(DOTTED.findall(text)):
        parts = dotted.split(".")
        if parts[-1] in ("py", "json", "yaml", "md"):  # a file name such as modeling_illama.py
            continue
        known = [
            i
            for i in range(1, len(parts) + 1)
            if (REPO.joinpath(*parts[:i]).with_suffix(".py")).is_file()
            or (REPO.joinpath(*parts[:i]) / "__init__.py").is_file()
        ]
        if not known or len(parts) - max(known) > 1:  # a module, or a module and one name in it
            stale.append(dotted)
        elif max(known) < len(parts):
            module = REPO.joinpath(*parts[: max(known)])
            source = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
            if not re.search(rf"\b{parts[-1]}\b", source.read_text(encoding="utf-8")):
                stale.append(dotted)
    assert not stale, f"{page} names what the package does not have: {sorted(stale)}"
