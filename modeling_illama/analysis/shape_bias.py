"""Shape bias on the cue-conflict stimuli of Geirhos et al. (ICLR 2019), as reported in the iLLaMA paper (Table 8).

Each stimulus has the shape of one of 16 categories and the texture of another (or the same). Folder layout, as in
the authors' texture-vs-shape repository (512 px PNG) or a resized JPEG copy: `<shape>/<shape>N-<texture>M.<ext>`.
Protocol (Geirhos et al., and their model-vs-human toolbox):
- the 1,000 ImageNet-1K probabilities are reduced to 16 by taking, for each category, the MEAN probability of its
  ImageNet classes (`cue_conflict_categories.tsv`, the WordNet mapping of the study); the decision is the argmax;
- images whose shape and texture category agree are excluded;
- shape bias = shape decisions / (shape decisions + texture decisions); decisions that are neither do not count.
Per category (grouped by the image's shape category) the same fractions are reported.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..utils.figures import pyplot, save_figure

logger = logging.getLogger(__name__)

CATEGORIES_FILE = Path(__file__).with_name("cue_conflict_categories.tsv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGENET_NUM_CLASSES = 1000
_STIMULUS_NAME = re.compile(r"^(?P<shape>[a-z]+)\d+-(?P<texture>[a-z]+)\d+$")


def load_categories(path: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """{category: its ImageNet-1K class indices} from a two-column TSV (category, comma-separated indices)."""
    path = Path(path) if path else CATEGORIES_FILE
    categories = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if number == 1 and fields[0] == "category" or not line.strip():
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected `category<TAB>index,index,...`, got {line!r}")
            indices = [int(index) for index in fields[1].split(",")]
            if any(not 0 <= index < IMAGENET_NUM_CLASSES for index in indices):
                raise ValueError(f"{path}:{number}: ImageNet-1K indices must lie in [0, 1000), got {indices}")
            categories[fields[0]] = indices
    if not categories:
        raise ValueError(f"{path} holds no category")
    return categories


@dataclass(frozen=True)
class CueConflictImage:
    path: str
    shape: str
    texture: str


def list_stimuli(folder: str | os.PathLike, categories: dict[str, list[int]]) -> list[CueConflictImage]:
    """Every `<shape>/<shape>N-<texture>M.<png|jpg>` under `folder`, sorted; the shape is the folder's name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"cue-conflict folder {folder} does not exist")
    stimuli = []
    for shape_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(shape_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            match = _STIMULUS_NAME.match(file.stem)
            if not match or match["shape"] != shape_dir.name:
                raise ValueError(f"{file}: expected a name like {shape_dir.name}3-cat7{file.suffix} in {shape_dir}")
            for category in (match["shape"], match["texture"]):
                if category not in categories:
                    raise ValueError(f"{file}: category {category!r} is not one of {sorted(categories)}")
            stimuli.append(CueConflictImage(str(file), match["shape"], match["texture"]))
    if not stimuli:
        raise ValueError(f"no `<shape>/<shape>N-<texture>M.png|jpg` stimulus found under {folder}")
    return stimuli


def category_probabilities(probabilities: torch.Tensor, categories: dict[str, list[int]]) -> torch.Tensor:
    """(B, 1000) ImageNet probabilities -> (B, K): per category the mean probability of its ImageNet classes."""
    columns = [probabilities[:, indices].mean(dim=1) for indices in categories.values()]
    return torch.stack(columns, dim=1)


def check_imagenet_classifier(model) -> None:
    """Shape bias needs the 1,000 ImageNet-1K classes (in the sorted-synset order of the released checkpoints)."""
    num_labels = getattr(model.config, "num_labels", None)
    if num_labels != IMAGENET_NUM_CLASSES:
        raise ValueError(
            f"shape bias needs an ImageNet-1K classifier with 1000 classes (the cue-conflict categories are sets "
            f"of ImageNet-1K class indices); this model has {num_labels} classes"
        )


def shape_bias_from_decisions(stimuli: list[CueConflictImage], decisions: list[str]) -> dict:
    """Shape bias overall and per shape category, from each stimulus's 16-way decision."""
    if len(stimuli) != len(decisions):
        raise ValueError(f"{len(stimuli)} stimuli but {len(decisions)} decisions")

    def fractions(pairs):
        shape = sum(decision == image.shape for image, decision in pairs)
        texture = sum(decision == image.texture for image, decision in pairs)
        hits = shape + texture
        return {
            "images": len(pairs),
            "shape_decisions": shape,
            "texture_decisions": texture,
            "shape_bias": shape / hits if hits else None,
            "shape_fraction": shape / len(pairs) if pairs else None,
            "texture_fraction": texture / len(pairs) if pairs else None,
        }

    conflicting = [(image, decision) for image, decision in zip(stimuli, decisions) if image.shape != image.texture]
    report = fractions(conflicting)
    report["excluded_same_category"] = len(stimuli) - len(conflicting)
    categories = sorted({image.shape for image, _ in conflicting})
    report["per_category"] = {c: fractions([p for p in conflicting if p[0].shape == c]) for c in categories}
    return report


@torch.no_grad()
def measure_shape_bias(
    model,
    image_processor,
    folder: str | os.PathLike,
    categories: dict[str, list[int]] | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> dict:
    """Classify every stimulus under `folder` and return the shape-bias report (and each image's decision)."""
    check_imagenet_classifier(model)
    categories = categories or load_categories()
    stimuli = list_stimuli(folder, categories)
    names = list(categories)
    model.eval().to(device)
    decisions = []
    for start in tqdm(range(0, len(stimuli), batch_size), desc="shape bias", unit="batch"):
        batch = stimuli[start : start + batch_size]
        images = [Image.open(image.path).convert("RGB") for image in batch]
        pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        probabilities = model(pixel_values=pixel_values).logits.float().softmax(dim=-1).cpu()
        decisions += [names[i] for i in category_probabilities(probabilities, categories).argmax(dim=1).tolist()]
    report = shape_bias_from_decisions(stimuli, decisions)
    report["decisions"] = {os.path.relpath(image.path, folder): d for image, d in zip(stimuli, decisions)}
    return report


def describe_shape_bias(value: float | None) -> str:
    """ "41.45%", or why there is no value: no image was decided as its shape or its texture category."""
    return "n/a (no shape or texture decision)" if value is None else f"{100 * value:.2f}%"


def draw_shape_bias(reports: dict[str, dict], path: str | os.PathLike, title: str | None = None) -> str:
    """The usual cue-conflict plot: one row per category, the fraction of shape decisions (bottom axis, 1 at the
    left) and of texture decisions (top axis), one marker per model, a vertical line at each model's mean."""
    plt = pyplot()

    categories = sorted({c for report in reports.values() for c in report["per_category"]})
    figure, axis = plt.subplots(figsize=(6, 0.38 * len(categories) + 2), constrained_layout=True)
    markers = "oDs^vP*X"
    for index, (label, report) in enumerate(reports.items()):
        color = f"C{index}"
        values = [report["per_category"].get(c, {}).get("shape_bias") for c in categories]
        values = [np.nan if v is None else v for v in values]
        axis.plot(
            values,
            range(len(categories)),
            markers[index % len(markers)],
            color=color,
            markersize=7,
            label=f"{label}: {describe_shape_bias(report['shape_bias'])}",
        )
        if report["shape_bias"] is not None:
            axis.axvline(report["shape_bias"], color=color, linestyle="--", linewidth=1)
    axis.set_yticks(range(len(categories)), categories)
    axis.set_ylim(len(categories) - 0.5, -0.5)
    axis.set_xlim(1.02, -0.02)  # shape at the left, as in Geirhos et al.
    axis.set_xlabel("fraction of 'shape' decisions")
    top = axis.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("fraction of 'texture' decisions")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, -0.35 - 0.05 * len(reports)), frameon=False)
    if title:
        axis.set_title(title)
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


__all__ = [
    "CueConflictImage",
    "category_probabilities",
    "check_imagenet_classifier",
    "describe_shape_bias",
    "draw_shape_bias",
    "list_stimuli",
    "load_categories",
    "measure_shape_bias",
    "shape_bias_from_decisions",
]
