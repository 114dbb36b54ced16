"""Class names <-> the config's label fields, data-set classes -> model classes by name, and the ImageNet-1K class
names in the authors' class order (the 1000 synsets sorted, n01440764 first), one way everywhere."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


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


class LabelError(ValueError):
    """A label id that is not a class of the data set (or of the model)."""


def label_mapping(dataset_names: list[str] | None, model_names: list[str] | dict[int, str]) -> np.ndarray | None:
    """Data-set class id -> model class id, matched by class name; None when the ids already agree.

    `model_names` is a list of names or a config's `id2label`. Names that are all different (another naming
    scheme, e.g. WordNet ids against English names) with equal class counts keep the ids as they are, with a
    warning; a partial overlap, or a data-set class the model does not have, is an error.
    """
    if isinstance(model_names, dict):
        model_names = class_names(model_names)
    model_names = [str(name) for name in model_names]
    if not dataset_names:
        return None
    dataset_names = [str(name) for name in dataset_names]
    if dataset_names == model_names:
        return None
    missing = [name for name in dataset_names if name not in model_names]
    if missing:
        if len(missing) == len(dataset_names) == len(model_names):
            logger.warning(
                "no data-set class name is a model class name (%s... against %s...); using class ids as they are",
                dataset_names[:3],
                model_names[:3],
            )
            return None
        raise LabelError(
            f"data-set classes {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)} of "
            f"{len(dataset_names)}) are not classes of the model ({len(model_names)} classes, e.g. {model_names[:5]})"
        )
    index = {name: i for i, name in enumerate(model_names)}
    mapping = np.array([index[name] for name in dataset_names], dtype=np.int64)
    if not np.array_equal(mapping, np.arange(len(mapping))):
        logger.info("data-set class ids mapped onto the model's by name (%d classes)", len(mapping))
    return mapping


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """`(synset, name)` for the 1000 classes, index = class id (the package's `imagenet_classes.tsv`)."""
    text = resources.files(__package__).joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    classes = tuple((row["synset"], row["name"]) for row in sorted(rows, key=lambda row: int(row["index"])))
    if len(classes) != 1000 or [synset for synset, _ in classes] != sorted(synset for synset, _ in classes):
        raise RuntimeError("imagenet_classes.tsv must list the 1000 ImageNet-1K synsets in sorted order")
    return classes


def imagenet_id2label() -> dict[int, str]:
    """Readable, unique label names ("great white shark"); the two names WordNet repeats get their synset."""
    names = [name.replace("_", " ") for _, name in imagenet_classes()]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    return {
        index: f"{name} ({synset})" if name in repeated else name
        for index, ((synset, _), name) in enumerate(zip(imagenet_classes(), names))
    }


def default_id2label(num_labels: int) -> dict[int, str]:
    """ImageNet-1K names for a 1000-way head, generic LABEL_i otherwise."""
    if num_labels == 1000:
        return imagenet_id2label()
    return {index: f"LABEL_{index}" for index in range(num_labels)}
