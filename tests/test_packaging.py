"""A normal wheel build carries every module and data file the package reads at run time, and a wheel installed
with `pip install --user` finds its presets, recipes and accelerate configs from any working directory."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (("models", "*.json"), ("recipes", "*.yaml"), ("accelerate", "*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # build from a clean copy (links kept, as in a checkout): a stale build/ folder would hide a missing package
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        "outputs",
        "runs",
        "data",
        "tests",
        "benchmarks",
        "model_cards",
    )
    shutil.copytree(ROOT, source, ignore=ignore, symlinks=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = tmp_path.glob("illama_transformers-*.whl")
    return built


def test_wheel_contains_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())

    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "modeling_illama").rglob("*.py")}
    missing = sorted(source for source in sources if source not in names)
    assert not missing, f"modules missing from the wheel: {missing}"
    assert "modeling_illama/imagenet_classes.tsv" in names
    assert "modeling_illama/configuration/__init__.py" in names

    for folder, pattern in SHIPPED:
        shipped = {
            f"modeling_illama/configuration/{folder}/{p.name}" for p in (ROOT / "configuration" / folder).glob(pattern)
        }
        assert shipped and shipped <= names, f"configuration/{folder} files missing from the wheel"
    assert not any(name.startswith("configuration/") or ".data/" in name for name in names)  # no stray top level


def test_user_install_finds_presets_and_recipes_from_any_directory(wheel, tmp_path):
    # a fresh venv that sees this interpreter's packages (torch, transformers, ...) but not this checkout, so
    # `pip install --user` is allowed and the package can only come from the user site
    venv = tmp_path / "venv"
    subprocess.run(
        [sys._base_executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(purelib, "outer_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    user_base = tmp_path / "userbase"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    env.update(PYTHONUSERBASE=str(user_base), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = [python, "-m", "pip", "install", "--user", "--no-deps", "--no-build-isolation", "-q", str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]

    expected = {
        folder: sorted(p.stem for p in (ROOT / "configuration" / folder).glob(pattern)) for folder, pattern in SHIPPED
    }
    tiny = json.loads((ROOT / "configuration" / "models" / "illama-tiny-224.json").read_text())
    check = """
import json, os, sys
import modeling_illama
from modeling_illama import list_presets, load_preset
from modeling_illama.configuration import configuration_files
from modeling_illama.training.recipes import list_recipes, load_recipe
config = load_preset("illama-tiny-224")
recipe = load_recipe("cifar10-mini")
json.dump({
    "package": modeling_illama.__file__,
    "presets": list_presets(),
    "recipes": list_recipes(),
    "accelerate": list(configuration_files("accelerate")),
    "ddp_exists": os.path.isfile(str(configuration_files("accelerate")["multi-gpu-ddp"])),
    "tiny": [config.hidden_size, config.num_hidden_layers],
    "recipe_model": recipe.model,
}, sys.stdout)
"""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = subprocess.run([python, "-c", check], capture_output=True, text=True, env=env, cwd=outside, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(user_base), found["package"]
    assert found["presets"] == expected["models"] and found["recipes"] == expected["recipes"]
    assert found["accelerate"] == expected["accelerate"] and found["ddp_exists"]
    assert found["tiny"] == [tiny["hidden_size"], tiny["num_hidden_layers"]]
    assert (
        found["recipe_model"]
        == yaml.safe_load((ROOT / "configuration" / "recipes" / "cifar10-mini.yaml").read_text())["model"]
    )
