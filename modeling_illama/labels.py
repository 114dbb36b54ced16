"""Class names <-> the config's label fields, built one way everywhere."""

from __future__ import annotations

from typing import Any


def label_fields(names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`num_labels`, `id2label` and `label2id` for classes named in id order (config keyword arguments).

    `label2id` is included because `from_pretrained(..., id2label=...)` sets attributes on an already-built config
    and would otherwise keep the saved folder's `label2id`.
    """
    id2label = dict(enumerate(names))
    return {"num_labels": len(id2label), "id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}


def class_names(id2label: dict[int, str] | None) -> list[str]:
    """The class names of a config's `id2label`, in class-id order (empty when there is none)."""
    return [id2label[i] for i in sorted(id2label)] if id2label else []
