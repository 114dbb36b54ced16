"""Image-classification data through `datasets`: Hub ids, local image folders and parquet files, streaming.

Images are decoded here (not by `datasets`) so that an undecodable file becomes a skipped example,
counted in the training log, instead of an exception hours into a run.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from datasets import ClassLabel
from datasets import Image as ImageFeature
from datasets.distributed import split_dataset_by_node
from PIL import Image

from ..image_processing_illama import to_rgb_image
from ..utils.writing import writing_to

logger = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "pixel_values")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "cls", "class", "target")
PARQUET_SPLIT_PATTERNS = (
    "{split}.parquet",
    "{split}-*.parquet",
    "{split}_*.parquet",
    "{split}/*.parquet",
    "data/{split}-*.parquet",
    "data/{split}/*.parquet",
)


@dataclass
class ImageDataset:
    """A loaded split with the columns the rest of the pipeline needs."""

    dataset: datasets.Dataset | datasets.IterableDataset
    image_column: str
    label_column: str
    label_names: list[str] | None
    streaming: bool

    @property
    def num_labels(self) -> int | None:
        return len(self.label_names) if self.label_names else None


def _parquet_files(folder: str, split: str) -> list[str]:
    for pattern in PARQUET_SPLIT_PATTERNS:
        files = sorted(glob.glob(os.path.join(folder, pattern.format(split=split))))
        if files:
            return files
    return []


def available_splits(source: str) -> list[str] | None:
    """Split names of a local folder (parquet files or image sub-folders); None for a Hub id or a file."""
    if not os.path.isdir(source):
        return None
    names = set()
    for split in ("train", "validation", "val", "test"):
        if _parquet_files(source, split) or os.path.isdir(os.path.join(source, split)):
            names.add(split)
    return sorted(names) or ["train"]


def load_dataset_kwargs(source: str, split: str) -> dict[str, Any]:
    """Arguments of datasets.load_dataset for a Hub id, a parquet file/glob, or a local folder."""
    if source.endswith(".parquet") or (("*" in source) and "parquet" in source):
        files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(f"no parquet file matches {source!r}")
        return {"path": "parquet", "data_files": {split: _readable_parquet(files)}}
    if os.path.isdir(source):
        files = _parquet_files(source, split)
        if files:
            return {"path": "parquet", "data_files": {split: _readable_parquet(files)}}
        if glob.glob(os.path.join(source, "*.parquet")) or glob.glob(os.path.join(source, "*", "*.parquet")):
            raise ValueError(
                f"no parquet file for split {split!r} in {source}; expected a name like {split}.parquet or "
                f"{split}-00000-of-00001.parquet; found splits {available_splits(source)}"
            )
        if not _holds_a_file(source):
            raise ValueError(
                f"{source} is an empty folder: expected parquet files ({split}.parquet, ...) or image files in one "
                "sub-folder per class"
            )
        return {"path": "imagefolder", "data_dir": source}
    if os.path.exists(source):
        raise ValueError(f"{source} is a file but not a .parquet file; give a parquet file, a folder or a Hub id")
    if _looks_local(source):
        raise FileNotFoundError(f"no such folder or file: {source}")
    return {"path": source}


def _holds_a_file(folder: str) -> bool:
    """True once any file is found under `folder` (stops at the first)."""
    return any(files for _, _, files in os.walk(folder))


def _looks_local(source: str) -> bool:
    """A path that cannot be a Hub id ("name" or "org/name"), or whose first folder exists here."""
    parts = source.replace(os.sep, "/").split("/")
    return (
        source.startswith((".", "/", "~"))
        or len(parts) > 2
        or os.path.splitext(source)[1] in (".parquet", ".arrow", ".csv", ".json", ".jsonl")
        or (len(parts) == 2 and os.path.exists(parts[0]))
    )


def _readable_parquet(files: list[str]) -> list[str]:
    """The files, after checking that each one is a parquet file with rows (pyarrow reads only the footer)."""
    import pyarrow.parquet as pq

    for file in files:
        if os.path.getsize(file) == 0:
            raise ValueError(f"{file} is empty (0 bytes), not a parquet file")
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except Exception as error:  # pyarrow raises ArrowInvalid / OSError for anything that is not parquet
            raise ValueError(f"{file} is not a readable parquet file ({type(error).__name__}: {error})") from None
        if rows == 0:
            raise ValueError(f"{file} holds no rows")
    return files


def detect_columns(
    features: datasets.Features | None,
    column_names: list[str],
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[str, str]:
    """The image column (an Image feature, else a usual name) and the label column (a ClassLabel, else a usual name)."""
    for given, kind in ((image_column, "image"), (label_column, "label")):
        if given is not None and given not in column_names:
            raise ValueError(f"{kind} column {given!r} is not in the dataset; its columns are {column_names}")
    features = features or {}
    if image_column is None:
        image_column = _detect_column("image", ImageFeature, IMAGE_COLUMN_NAMES, column_names, features)
    if label_column is None:
        label_column = _detect_column("label", ClassLabel, LABEL_COLUMN_NAMES, column_names, features)
    return image_column, label_column


def _detect_column(kind: str, feature_type: type, usual_names, column_names: list[str], features: dict) -> str:
    """The first column typed `feature_type`, else the first with a usual name."""
    typed = [name for name, feat in features.items() if isinstance(feat, feature_type)]
    named = [name for name in usual_names if name in column_names]
    if not (typed or named):
        raise ValueError(f"no {kind} column found among {column_names}; pass --{kind}-column")
    return (typed or named)[0]


def open_split(source: str, split: str, streaming: bool = False):
    """`datasets.load_dataset` of one split of a Hub id, folder or file, its failures as one clear error (a split
    not found, an unreachable Hub, an unreadable file; a full disk names the Arrow cache)."""
    kwargs = load_dataset_kwargs(str(source), split)
    try:
        with writing_to(kwargs.get("cache_dir") or datasets.config.HF_DATASETS_CACHE):  # the Arrow cache
            return datasets.load_dataset(**kwargs, split=split, streaming=streaming)
    except ValueError as error:
        if "Unknown split" in str(error) or "split" in str(error).lower():
            raise ValueError(f"split {split!r} not found in {source}: {error}") from error
        raise
    except ConnectionError as error:  # not a local path, and the Hub cannot be reached
        raise FileNotFoundError(
            f"{source} is no local folder or file, and the Hub data set {source!r} cannot be reached ({error})"
        ) from None
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise ValueError(f"cannot read split {split!r} of {source}: {type(cause).__name__}: {cause}") from None


def load_image_dataset(
    source: str,
    split: str,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> ImageDataset:
    """Load one split. Streaming data is shuffled through a buffer and split across processes by node."""
    dataset = open_split(source, split, streaming)
    column_names = list(dataset.column_names or (dataset.features or {}).keys())
    image_column, label_column = detect_columns(dataset.features, column_names, image_column, label_column)
    features = dataset.features or {}
    names = features[label_column].names if isinstance(features.get(label_column), ClassLabel) else None
    if isinstance(features.get(image_column), ImageFeature):
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    extra = [c for c in column_names if c not in (image_column, label_column)]
    if extra:
        dataset = dataset.remove_columns(extra)
    if streaming:
        if shuffle:
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if names is None and not streaming:
        names = integer_class_names(set(dataset[label_column]), label_column, split)
    return ImageDataset(dataset, image_column, label_column, names, streaming)


def integer_class_names(ids: set, label_column: str, split: str) -> list[str]:
    """Class names "0".."max" for plain integer labels (a label is its class id); ids absent from the split are
    reported, since 1-based labels or a class missing from the split show up that way."""
    if any(not isinstance(v, int) or isinstance(v, bool) for v in ids):
        raise ValueError(f"label column {label_column!r} must hold integer class ids or be a ClassLabel")
    count = max(ids) + 1 if ids else 0
    absent = sorted(set(range(count)) - ids)
    if absent:
        logger.warning(
            "split %r has no example of class id(s) %s%s (classes are the ids 0..%d)",
            split,
            absent[:10],
            " (1-based labels?)" if absent == [0] else "",
            count - 1,
        )
    return [str(i) for i in range(count)]


def decode_image(value: Any) -> Image.Image | None:
    """PIL RGB image from a datasets image value ({bytes, path}, a PIL image, an array or a path), decoded by
    `to_rgb_image` (the image processor's and the pipeline's decoding); None if undecodable."""
    try:
        if isinstance(value, dict):
            value = value["bytes"] if value.get("bytes") is not None else value["path"]
        return to_rgb_image(value)
    except Exception as error:  # any decoder failure: the example is skipped and counted
        logger.warning("skipping an undecodable image (%s: %s)", type(error).__name__, error)
        return None


class ExampleTransform:
    """datasets transform: decode + image transform -> {"pixel_values", "labels"} (pixel_values None if bad).

    `label_map` (data-set id -> model id, see labels.label_mapping) renumbers the labels; `label_check`
    validates streamed labels as they arrive (whole splits are checked before training).
    """

    def __init__(
        self, image_transform: Callable, image_column: str, label_column: str, label_map=None, label_check=None
    ):
        self.image_transform = image_transform
        self.image_column = image_column
        self.label_column = label_column
        self.label_map = label_map
        self.label_check = label_check

    def _one(self, value):
        image = decode_image(value)
        return None if image is None else self.image_transform(image)

    def _label(self, label):
        return label if self.label_map is None else int(self.label_map[label])

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {
            "pixel_values": [self._one(v) for v in batch[self.image_column]],
            "labels": [self._label(label) for label in batch[self.label_column]],
        }

    def example(self, example: dict, index: int | None = None) -> dict:
        label = example[self.label_column]
        if self.label_check is not None:
            label = self.label_check(label, index, example[self.image_column])
        return {"pixel_values": self._one(example[self.image_column]), "labels": self._label(label)}


def with_transform(data: ImageDataset, image_transform: Callable, label_map=None, label_check=None):
    """The dataset yielding {"pixel_values": tensor | None, "labels": int} per example."""
    transform = ExampleTransform(image_transform, data.image_column, data.label_column, label_map, label_check)
    if isinstance(data.dataset, datasets.IterableDataset):
        return data.dataset.map(
            transform.example, with_indices=True, remove_columns=[data.image_column, data.label_column]
        )
    return data.dataset.with_transform(transform)


def collate_images(examples: list[dict]) -> dict[str, Any]:
    """Stack decoded examples; drop undecodable ones and report their number as `num_undecodable`."""
    kept = [e for e in examples if e["pixel_values"] is not None]
    if kept:
        pixel_values = torch.stack([e["pixel_values"] for e in kept])
    else:
        pixel_values = torch.empty(0)
    labels = torch.tensor([int(e["labels"]) for e in kept], dtype=torch.long)
    return {"pixel_values": pixel_values, "labels": labels, "num_undecodable": len(examples) - len(kept)}
