"""Model presets: `configuration/models/<name>.json` -> ILlamaConfig."""

import json
import sys
from pathlib import Path

from .configuration_illama import ILlamaConfig


def preset_directories() -> list[Path]:
    """Where presets live: the source checkout, then the data files installed by a wheel."""
    return [
        Path(__file__).resolve().parent.parent / "configuration" / "models",
        Path(sys.prefix) / "share" / "illama" / "configuration" / "models",
    ]


def _preset_files() -> dict[str, Path]:
    for directory in preset_directories():
        if directory.is_dir():
            return {path.stem: path for path in sorted(directory.glob("*.json"))}
    raise FileNotFoundError(f"no preset directory found; looked in {[str(d) for d in preset_directories()]}")


def list_presets() -> list[str]:
    return sorted(_preset_files())


def load_preset(name: str, **overrides) -> ILlamaConfig:
    """The config of a preset (e.g. "illama-tiny-224"), with any field overridden by keyword."""
    files = _preset_files()
    if name not in files:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(sorted(files))}.")
    fields = json.loads(files[name].read_text())
    if "id2label" in overrides or "label2id" in overrides:
        fields.pop("num_labels", None)  # the user's label set decides the number of classes
    fields.update(overrides)
    return ILlamaConfig(**fields)


__all__ = ["list_presets", "load_preset", "preset_directories"]
