"""Model presets: `configuration/models/<name>.json` -> ILlamaConfig."""

import json

from .configuration import configuration_files
from .configuration_illama import ILlamaConfig
from .labels import imagenet_id2label, label_fields


def list_presets() -> list[str]:
    return list(configuration_files("models"))


def load_preset(name: str, **overrides) -> ILlamaConfig:
    """The config of a preset (e.g. "illama-tiny-224"), with any field overridden by keyword. A 1000-class head
    without `id2label` gets the ImageNet-1K class names (the authors' sorted-synset order)."""
    files = configuration_files("models")
    if name not in files:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(sorted(files))}.")
    fields = json.loads(files[name].read_text())
    if "id2label" in overrides or "label2id" in overrides:
        fields.pop("num_labels", None)  # the user's label set decides the number of classes
    fields.update(overrides)
    if fields.get("num_labels") == 1000 and "id2label" not in fields:
        fields.update(label_fields([name for _, name in sorted(imagenet_id2label().items())]))
    return ILlamaConfig(**fields)


__all__ = ["list_presets", "load_preset"]
