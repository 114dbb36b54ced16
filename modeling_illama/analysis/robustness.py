"""Robustness of an ImageNet-1K classifier, measured as Pang et al. report it (arXiv 2310.12973, Table 1; their
evaluation code is image_classification/main.py and engine.py of github.com/ziqipang/LM4VisualEncoding, taken from
RVT, Mao et al. 2022):

- ImageNet-C: top-1 error on each of the 15 corruptions at severities 1-5; corruption error
  CE_c = mean_s E_{c,s} / E^AlexNet_c, and mCE = mean_c CE_c (Hendrycks & Dietterich, ICLR 2019). Images are
  center-cropped (they are already 224 x 224) and normalised, not resized.
- ImageNet-A and ImageNet-R: top-1 over their 200 classes only: the 1000 logits are restricted to the 200 classes
  (`imagenet_200_class_subsets.json`) before the argmax.
- ImageNet-Sketch: plain 1000-class top-1.
- FGSM and PGD: top-1 on adversarial images. The authors' settings: in [0, 1] pixel units, FGSM is one signed
  gradient step of 1/255 (epsilon 1/255, no random start); PGD takes 5 steps of 0.5/255 inside an L-infinity
  ball of 1/255 from a uniform random start; both keep the image inside [0, 1]. Perturbations are applied to the
  normalised input, scaled per channel by the normalisation std, as theirs.

Datasets are read through `datasets` (`modeling_illama.training.data.load_image_dataset`): a Hub id or a local
folder (ImageFolder layout `<wnid>/<image>`, parquet). Labels map to the model's classes by WordNet id when the
dataset's class names are wnids, else by position (a 1000-class set in ImageNet order, a 200-class set in the
sorted-wnid order of the official folders).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

IMAGENET_C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
IMAGENET_C_SEVERITIES = (1, 2, 3, 4, 5)
# AlexNet's top-1 error per corruption, averaged over the 5 severities: the normaliser of the corruption error
# (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
# ICLR 2019; the same values as `get_ce_alexnet()` in the authors' utils.py).
ALEXNET_ERROR = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
SUBSETS_FILE = "imagenet_200_class_subsets.json"


@dataclass(frozen=True)
class AttackSettings:
    """An L-infinity attack in [0, 1] pixel units: `steps` signed-gradient steps of `step_size`, projected to the
    `epsilon` ball around the image (and to [0, 1]); `random_start` draws the start uniformly in the ball."""

    epsilon: float
    step_size: float
    steps: int
    random_start: bool


FGSM = AttackSettings(epsilon=1 / 255, step_size=1 / 255, steps=1, random_start=False)
PGD = AttackSettings(epsilon=1 / 255, step_size=0.5 / 255, steps=5, random_start=True)
ATTACKS = {"fgsm": FGSM, "pgd": PGD}


# --------------------------------------------------------------------------------------------- label spaces


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K WordNet ids, index = class id (sorted order)."""
    from ..labels import imagenet_classes

    return tuple(synset for synset, _ in imagenet_classes())


@lru_cache(maxsize=1)
def _subsets() -> dict:
    return json.loads(resources.files(__package__).joinpath(SUBSETS_FILE).read_text(encoding="utf-8"))


def subset_wnids(name: str) -> tuple[str, ...]:
    """The 200 wnids of `imagenet-a` or `imagenet-r`, sorted."""
    subsets = _subsets()
    if name not in subsets or name == "source":
        raise ValueError(f"unknown ImageNet subset {name!r}; known: imagenet-a, imagenet-r")
    return tuple(subsets[name])


def subset_class_indices(name: str) -> list[int]:
    """Positions of the subset's 200 classes in the 1000-class head (the `indices_in_1k` of Hendrycks et al.)."""
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    return [index[wnid] for wnid in subset_wnids(name)]


def target_map(label_names: list[str] | None, classes: tuple[str, ...], what: str) -> list[int] | None:
    """Dataset label id -> position in `classes` (wnids). None when the ids already are those positions.

    Class names that are wnids are looked up; otherwise the dataset must have exactly len(classes) classes,
    taken to be in the same (sorted-wnid) order."""
    if label_names and all(name in classes for name in label_names):
        positions = {wnid: i for i, wnid in enumerate(classes)}
        return [positions[name] for name in label_names]
    if label_names and any(name.startswith("n") and name[1:].isdigit() for name in label_names):
        unknown = [name for name in label_names if name not in classes][:5]
        raise ValueError(f"{what}: classes {unknown} are not among the {len(classes)} classes expected")
    if label_names is not None and len(label_names) != len(classes):
        raise ValueError(
            f"{what} has {len(label_names)} classes whose names are not WordNet ids; expected the {len(classes)} "
            "classes in sorted-wnid order (the official folder layout) or wnid-named classes"
        )
    return None


# --------------------------------------------------------------------------------------------- metrics


def corruption_errors(top1: dict[str, dict[int, float]]) -> dict:
    """{corruption: {severity: top-1 accuracy in [0, 1]}} -> per-corruption error and CE, and the mCE (in [0, 1]
    units; the paper prints 100 x). mCE averages the corruptions given; `complete` says whether all 15 with all
    five severities were."""
    unknown = sorted(set(top1) - set(ALEXNET_ERROR))
    if unknown:
        raise ValueError(f"unknown ImageNet-C corruptions {unknown}; expected names among {IMAGENET_C_CORRUPTIONS}")
    if not top1:
        raise ValueError("no ImageNet-C corruption was evaluated")
    errors, ces = {}, {}
    for corruption, by_severity in top1.items():
        if not by_severity:
            raise ValueError(f"ImageNet-C {corruption}: no severity evaluated")
        errors[corruption] = sum(1.0 - accuracy for accuracy in by_severity.values()) / len(by_severity)
        ces[corruption] = errors[corruption] / ALEXNET_ERROR[corruption]
    complete = set(top1) == set(IMAGENET_C_CORRUPTIONS) and all(
        set(by_severity) == set(IMAGENET_C_SEVERITIES) for by_severity in top1.values()
    )
    return {
        "error": errors,
        "corruption_error": ces,
        "mce": sum(ces.values()) / len(ces),
        "mean_top1": 1.0 - sum(errors.values()) / len(errors),
        "complete": complete,
    }


def _logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    logits = model(pixel_values=pixel_values).logits
    return logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32, float64 kept


def _batches(loader, device, targets: list[int] | None):
    for batch in loader:
        if batch["pixel_values"].shape[0] == 0:
            continue
        labels = batch["labels"]
        if targets is not None:
            labels = torch.as_tensor(targets)[labels]
        yield batch["pixel_values"].to(device), labels.to(device)


@torch.no_grad()
def top1_accuracy(model, loader, device="cpu", classes: list[int] | None = None, targets=None) -> tuple[float, int]:
    """(top-1, images) over `loader` (batches of pixel_values / labels). `classes` restricts the logits to those
    head indices (labels are then positions in `classes`); `targets` maps dataset label ids first."""
    model.eval()
    correct = total = 0
    for pixel_values, labels in _batches(loader, device, targets):
        logits = _logits(model, pixel_values)
        if classes is not None:
            logits = logits[:, classes]
        correct += int((logits.argmax(dim=-1) == labels).sum())
        total += len(labels)
    if not total:
        raise ValueError("no image could be evaluated (empty dataset or every image undecodable)")
    return correct / total, total


def attack(
    model,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    settings: AttackSettings,
    mean,
    std,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial version of normalised `pixel_values` (B, C, H, W) that raises the cross-entropy of `labels`."""
    mean = torch.as_tensor(mean, dtype=pixel_values.dtype, device=pixel_values.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=pixel_values.dtype, device=pixel_values.device).view(1, -1, 1, 1)
    epsilon, step = settings.epsilon / std, settings.step_size / std
    lower, upper = (0 - mean) / std, (1 - mean) / std
    original = pixel_values.detach()
    adversarial = original.clone()
    if settings.random_start:
        noise = torch.rand(original.shape, generator=generator, dtype=original.dtype).to(original.device)
        adversarial = adversarial + (2 * noise - 1) * epsilon
    adversarial = torch.maximum(torch.minimum(adversarial, upper), lower)
    model.eval()
    for _ in range(settings.steps):
        adversarial.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(_logits(model, adversarial), labels)
            (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step * gradient.sign()
        adversarial = torch.maximum(torch.minimum(adversarial, original + epsilon), original - epsilon)
        adversarial = torch.maximum(torch.minimum(adversarial, upper), lower)
    return adversarial.detach()


def adversarial_top1(
    model, loader, settings: AttackSettings, mean, std, device="cpu", targets=None, seed: int = 0
) -> tuple[float, int]:
    """(top-1 on attacked images, images); the random starts come from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    correct = total = 0
    for pixel_values, labels in _batches(loader, device, targets):
        adversarial = attack(model, pixel_values, labels, settings, mean, std, generator)
        with torch.no_grad():
            correct += int((_logits(model, adversarial).argmax(dim=-1) == labels).sum())
        total += len(labels)
    if not total:
        raise ValueError("no image could be evaluated (empty dataset or every image undecodable)")
    return correct / total, total


# --------------------------------------------------------------------------------------------- datasets


def image_loader(source: str, split: str, transform, batch_size: int = 64, limit: int | None = None):
    """(DataLoader of {pixel_values, labels}, class names) for one split of a Hub id or local folder."""
    from torch.utils.data import DataLoader

    from ..training.data import collate_images, load_image_dataset, with_transform

    data = load_image_dataset(source, split, shuffle=False)
    if limit:
        data.dataset = data.dataset.select(range(min(limit, len(data.dataset))))
    loader = DataLoader(with_transform(data, transform), batch_size=batch_size, collate_fn=collate_images)
    return loader, data.label_names


def center_crop_transform(image_size: int, mean, std):
    """ImageNet-C preprocessing of the authors: center crop (no resize), to tensor, normalise."""
    from torchvision import transforms as T

    return T.Compose([T.CenterCrop(image_size), T.ToTensor(), T.Normalize(mean, std)])


def evaluate_imagenet_c(
    model, root: str, transform, device="cpu", batch_size: int = 64, limit: int | None = None, corruptions=None
) -> dict:
    """Top-1 per corruption and severity from `root/<corruption>/<severity>/<wnid>/*`, then `corruption_errors`.
    Only the corruptions present under `root` (or those named) are evaluated."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"ImageNet-C root {root!r} not found (expected <corruption>/<severity>/<wnid>/)")
    corruptions = corruptions or [name for name in IMAGENET_C_CORRUPTIONS if os.path.isdir(os.path.join(root, name))]
    if not corruptions:
        raise ValueError(f"{root!r} holds none of the ImageNet-C corruption folders {IMAGENET_C_CORRUPTIONS}")
    top1: dict[str, dict[int, float]] = {}
    for corruption in corruptions:
        top1[corruption] = {}
        for severity in IMAGENET_C_SEVERITIES:
            folder = os.path.join(root, corruption, str(severity))
            if not os.path.isdir(folder):
                logger.warning("ImageNet-C: %s missing, skipped", folder)
                continue
            loader, names = image_loader(folder, "train", transform, batch_size, limit)
            targets = target_map(names, imagenet_wnids(), f"ImageNet-C {corruption}/{severity}")
            top1[corruption][severity], _ = top1_accuracy(model, loader, device, targets=targets)
            logger.info("ImageNet-C %s severity %d: top-1 %.4f", corruption, severity, top1[corruption][severity])
    result = corruption_errors(top1)
    if not result["complete"]:
        logger.warning("ImageNet-C incomplete (%d corruptions): the mCE is not comparable to papers", len(top1))
    return {"top1": top1, **result}


def evaluate_subset(
    model, source: str, split: str, subset: str | None, transform, device="cpu", batch_size=64, limit=None
) -> dict:
    """Top-1 on ImageNet-A / -R (`subset` "imagenet-a" / "imagenet-r": 200-class logits) or -Sketch (None)."""
    loader, names = image_loader(source, split, transform, batch_size, limit)
    if subset is None:
        targets = target_map(names, imagenet_wnids(), source)
        accuracy, images = top1_accuracy(model, loader, device, targets=targets)
    else:
        targets = target_map(names, subset_wnids(subset), source)
        accuracy, images = top1_accuracy(model, loader, device, subset_class_indices(subset), targets)
    return {"top1": accuracy, "images": images}


def evaluate_attacks(
    model,
    source: str,
    split: str,
    transform,
    mean,
    std,
    attacks=("fgsm", "pgd"),
    device="cpu",
    batch_size: int = 64,
    limit: int | None = None,
    seed: int = 0,
) -> dict:
    """Clean and adversarial top-1 (the authors' FGSM / PGD settings) on an ImageNet-1K split."""
    loader, names = image_loader(source, split, transform, batch_size, limit)
    targets = target_map(names, imagenet_wnids(), source)
    clean, images = top1_accuracy(model, loader, device, targets=targets)
    result = {"clean_top1": clean, "images": images}
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
        result[f"{name}_top1"], _ = adversarial_top1(model, loader, ATTACKS[name], mean, std, device, targets, seed)
        settings = ATTACKS[name]
        result[f"{name}_settings"] = {
            "epsilon_255": settings.epsilon * 255,
            "step_size_255": settings.step_size * 255,
            "steps": settings.steps,
            "random_start": settings.random_start,
        }
    return result


__all__ = [
    "ALEXNET_ERROR",
    "ATTACKS",
    "FGSM",
    "IMAGENET_C_CORRUPTIONS",
    "PGD",
    "AttackSettings",
    "adversarial_top1",
    "attack",
    "corruption_errors",
    "evaluate_attacks",
    "evaluate_imagenet_c",
    "evaluate_subset",
    "subset_class_indices",
    "target_map",
    "top1_accuracy",
]
