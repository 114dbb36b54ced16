"""What a new user meets first: install hints, local-folder errors, class names of presets, the benchmark's
output folder and the demo script without an activated venv (issue: a README that runs as written)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_illama import load_preset
from modeling_illama.cli import eval as eval_cli
from modeling_illama.cli import export_official as export_cli
from modeling_illama.cli import train as train_cli
from modeling_illama.cli._common import looks_like_local_path, missing_model_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cli", [train_cli, eval_cli], ids=["illama-train", "illama-eval"])
def test_core_only_install_names_the_train_extra(cli, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what `import datasets` sees without the [train] extra
    argv = ["--model", str(tmp_path), "--dataset", "data/cifar10-mini"]
    argv += ["--recipe", "cifar10-mini", "--output-dir", str(tmp_path / "out")] if cli is train_cli else []
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "datasets not installed" in error and "pip install 'illama-transformers[train]'" in error
    assert not (tmp_path / "out").exists()  # stopped before touching the output folder


def test_local_looking_paths_are_told_apart_from_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for local in ("./model", "../model", "/abs/model", "~/model", "a/b/c", "outputs/missing"):
        assert looks_like_local_path(local), local
    for hub_id in ("illama-tiny-224", "org/name", "techmonsterwang/iLLaMA"):
        assert not looks_like_local_path(hub_id), hub_id
        assert missing_model_folder(hub_id) is None  # left to the loader (preset or Hub)
    assert missing_model_folder("outputs") is None  # an existing folder
    assert missing_model_folder("outputs/missing").startswith("no such folder: outputs/missing")
    (tmp_path / "outputs" / "file").write_text("x")
    assert "is a file, not a model folder" in missing_model_folder("outputs/file")


@pytest.mark.parametrize(
    "cli, argv",
    [
        (eval_cli, ["--model", "outputs/missing-run", "--dataset", "data/cifar10-mini"]),
        (train_cli, ["--recipe", "cifar10-mini", "--model", "./missing", "--dataset", "d", "--output-dir", "o"]),
        (export_cli, ["--model", "converted/illama-tiny-224-in1k", "--output", "x.pth"]),
    ],
    ids=["illama-eval", "illama-train", "illama-export-official"],
)
def test_missing_local_model_folder_is_reported_as_such(cli, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "converted").mkdir()
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "no such folder" in error and "huggingface.co" not in error


def test_presets_with_1000_labels_get_the_imagenet_class_names():
    from modeling_illama.labels import imagenet_classes

    config = load_preset("illama-tiny-224")
    names = [name.replace("_", " ") for _, name in imagenet_classes()]  # the shipped table, read here directly
    assert config.num_labels == 1000
    assert config.id2label[0] == "tench" and config.id2label[594] == names[594] != "LABEL_594"
    assert all(config.label2id[config.id2label[i]] == i for i in range(1000))  # unique names, both directions
    assert load_preset("illama-tiny-224", num_labels=10).id2label[3] == "LABEL_3"  # other heads: generic names
    custom = load_preset("illama-tiny-224", id2label={0: "cat", 1: "dog"})
    assert custom.num_labels == 2 and custom.id2label == {0: "cat", 1: "dog"}


def test_benchmark_writes_the_committed_results_only_when_told():
    spec = importlib.util.spec_from_file_location("run_benchmark", REPO / "benchmarks" / "run_benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.parse_args(["--quick"]).out == REPO / "outputs" / "benchmarks"
    assert benchmark.parse_args(["--update-results"]).out == REPO / "benchmarks" / "results"
    assert benchmark.parse_args(["--out", "somewhere"]).out == Path("somewhere")
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--update-results", "--out", "somewhere"])


def test_demo_script_says_how_to_get_the_console_scripts(tmp_path):
    """Without .venv/ and without the scripts on PATH it stops at once with the fix, before any work."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "run_demo.sh", tmp_path / "scripts")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        ["bash", "scripts/run_demo.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 127 and "illama-train not found" in done.stderr and "make demo" in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_licence_and_citation_files_agree_with_the_package_and_the_readme():
    """LICENSE is the Apache-2.0 text setup.cfg declares; CITATION.cff cites the package (GitHub's "Cite this
    repository") and lists both papers with the README BibTeX's authors; every released model card states the
    weights' licence as not stated by the authors."""
    import configparser
    import re

    import yaml

    licence = (REPO / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence and len(licence) > 10_000  # the full text, not a pointer
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["license"] == "Apache-2.0"

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors", "license", "version"} <= set(citation)
    assert citation["type"] == "software" and "preferred-citation" not in citation  # the package is what is cited
    assert (citation["license"], str(citation["version"])) == ("Apache-2.0", setup["metadata"]["version"])
    references = {ref["title"]: ref for ref in citation["references"]}
    readme = (REPO / "README.md").read_text()
    bibtex = dict(re.findall(r"title\s*=\s*\{(.+?)\},\s*\n\s*author\s*=\s*\{(.+?)\}", readme))
    assert set(bibtex) == set(references) and len(bibtex) == 2, (sorted(bibtex), sorted(references))
    for title, authors in bibtex.items():
        names = [tuple(part.strip() for part in name.split(",")) for name in authors.split(" and ")]
        assert [(a["family-names"], a["given-names"]) for a in references[title]["authors"]] == names, title

    cards = sorted((REPO / "model_cards").glob("*.md"))
    assert len(cards) == 8
    for card in cards:
        text = card.read_text()
        front = yaml.safe_load(text.split("---")[1])
        assert front["license"] == "unknown" and "not stated by the authors" in text, card.name


def test_another_schedule_on_the_command_line_drops_the_recipes_schedule_arguments():
    """README: `illama-train --recipe cifar10-mini ... lr_scheduler_type=cosine`. The recipe's `min_lr` belongs to its
    `cosine_with_min_lr`; Trainer's `cosine` would fail with a TypeError at its first step."""
    import torch
    from transformers import get_scheduler

    from modeling_illama.training.recipes import load_recipe

    recipe = load_recipe("cifar10-mini", ["optim=sgd", "lr_scheduler_type=cosine"])
    assert recipe.lr_scheduler_type == "cosine" and not recipe.lr_scheduler_kwargs
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    get_scheduler(recipe.lr_scheduler_type, optimizer, 1, 10, scheduler_specific_kwargs=recipe.lr_scheduler_kwargs)
    assert load_recipe("cifar10-mini").lr_scheduler_kwargs == {"min_lr": 1e-5}  # kept with the recipe's schedule
    with pytest.raises(ValueError, match=r"\['min_lr'\] are not arguments of lr_scheduler_type 'cosine'.*"):
        load_recipe("cifar10-mini", ["lr_scheduler_type=cosine", "lr_scheduler_kwargs={min_lr: 0.1}"])
