"""A normal wheel build carries every module and data file the package reads at run time."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_module_and_data_file(tmp_path):
    # build from a clean copy: a stale build/ folder in a working tree would hide a missing package
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
    shutil.copytree(ROOT, source, ignore=ignore)
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
    (wheel,) = tmp_path.glob("illama_transformers-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "modeling_illama").rglob("*.py")}
    missing = sorted(source for source in sources if source not in names)
    assert not missing, f"modules missing from the wheel: {missing}"
    assert "modeling_illama/conversion/imagenet_classes.tsv" in names

    data = {name.split(".data/data/share/illama/", 1)[1] for name in names if ".data/data/share/illama/" in name}
    for folder, pattern in (("models", "*.json"), ("recipes", "*.yaml"), ("accelerate", "*.yaml")):
        shipped = {f"configuration/{folder}/{path.name}" for path in (ROOT / "configuration" / folder).glob(pattern)}
        assert shipped and shipped <= data, f"configuration/{folder} files missing from the wheel"
