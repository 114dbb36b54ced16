"""ImageNet-1K class names in the authors' class order (the 1000 synsets sorted, n01440764 first)."""

from __future__ import annotations

import csv
from collections import Counter
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """`(synset, name)` for the 1000 classes, index = class id."""
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
