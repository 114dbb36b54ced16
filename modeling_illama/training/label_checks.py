"""Label ids checked against the classes before they are used, and eval splits mapped by class name.

Used by training (train and eval splits, before the first step; streamed examples as they arrive) and by
`illama-eval`, so that a bad label id (-1, 1-based ids, an id >= the number of classes) stops the run with
the row that holds it instead of an IndexError at the first batch that contains it, hours in.
"""

from __future__ import annotations

import numpy as np

from ..labels import LabelError, label_mapping


def describe_label(label, num_labels: int, where: str) -> str:
    """Why `label` is not a class id in 0..num_labels-1, as one sentence naming `where` it is."""
    if label is None:
        return f"{where} has no label (None); expected a class id in 0..{num_labels - 1}"
    if label == -1:
        return f"{where} has label -1 (no label, as in unlabelled test splits); expected a class id in 0..{num_labels - 1}"
    return f"{where} has label {label}, not a class id in 0..{num_labels - 1} ({num_labels} classes)"


def check_label_ids(labels, num_labels: int, split: str, source: str) -> None:
    """Raise a LabelError naming the first row whose label is not in 0..num_labels-1 (labels of a whole split)."""
    values = list(labels)
    if not values:
        return
    if any(v is None for v in values):
        row = next(i for i, v in enumerate(values) if v is None)
        raise LabelError(describe_label(None, num_labels, f"row {row} of split {split!r} of {source}"))
    try:
        ids = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise LabelError(f"labels of split {split!r} of {source} are not integer class ids") from None
    bad = np.flatnonzero((ids < 0) | (ids >= num_labels))
    if bad.size:
        row = int(bad[0])
        message = describe_label(int(ids[row]), num_labels, f"row {row} of split {split!r} of {source}")
        distinct = np.unique(ids)
        hint = ""
        if distinct.min() == 1 and distinct.max() == num_labels:
            hint = "; the ids run 1..N: labels must be 0-based"
        shown = distinct[:10].tolist() + (["..."] if distinct.size > 10 else [])
        raise LabelError(f"{message}; {bad.size} such row(s){hint}; the split's distinct ids: {shown}")


class StreamingLabelCheck:
    """Checks each streamed example's label as it arrives (a streamed split cannot be read ahead)."""

    def __init__(self, num_labels: int, split: str, source: str):
        self.num_labels, self.split, self.source = num_labels, split, source

    def __call__(self, label, index: int, image_value=None) -> int:
        if label is None or not 0 <= int(label) < self.num_labels:
            where = f"streamed row {index} of split {self.split!r} of {self.source}"
            path = image_value.get("path") if isinstance(image_value, dict) else None
            raise LabelError(describe_label(label, self.num_labels, where + (f" (image {path})" if path else "")))
        return int(label)


def validate_training_labels(train, evaluation, train_source: str, eval_source: str, train_split: str, eval_split):
    """Check the labels of a training run before its first step; return `(train_check, eval_map)`.

    `train` and `evaluation` are `data.ImageDataset`s. A map-style train split is checked whole; a streamed
    one gets a `StreamingLabelCheck` for its transform. The eval split is checked whole and mapped by class
    name onto the train split's classes (the model's), so evaluation during training scores the same classes
    as `illama-eval`.
    """
    num_labels = len(train.label_names)
    train_check = None
    if train.streaming:
        train_check = StreamingLabelCheck(num_labels, train_split, train_source)
    else:
        check_label_ids(train.dataset[train.label_column], num_labels, train_split, train_source)
    eval_map = None
    if evaluation is not None:
        check_label_ids(
            evaluation.dataset[evaluation.label_column], len(evaluation.label_names), eval_split, eval_source
        )
        eval_map = label_mapping(evaluation.label_names, train.label_names)
    return train_check, eval_map
