"""Files shipped with the package: model presets (`models/*.json`), training recipes (`recipes/*.yaml`) and
accelerate launch configs (`accelerate/*.yaml`).

The folder is the repository's top-level `configuration/`; `modeling_illama/configuration` links to it, so the
same files are package data of `modeling_illama.configuration` in a source checkout, an editable install and an
installed wheel, and are read through `importlib.resources` in all three.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

KINDS = {"models": ".json", "recipes": ".yaml", "accelerate": ".yaml"}


def configuration_files(kind: str) -> dict[str, Traversable]:
    """`{name: file}` of one kind of shipped configuration ("models", "recipes" or "accelerate"), sorted by name.

    An accelerate config is passed to `accelerate launch --config_file` as `str(configuration_files("accelerate")
    ["multi-gpu-ddp"])` (a real path: the files are never inside a zip).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown configuration kind {kind!r}; expected one of {sorted(KINDS)}")
    folder = resources.files(__name__).joinpath(kind)
    if not folder.is_dir():
        raise FileNotFoundError(f"the package's configuration/{kind} folder is missing (a broken install?)")
    suffix = KINDS[kind]
    found = {item.name[: -len(suffix)]: item for item in folder.iterdir() if item.name.endswith(suffix)}
    return dict(sorted(found.items()))


__all__ = ["configuration_files"]
