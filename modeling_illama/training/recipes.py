"""Training recipes: the YAML files in `configuration/recipes/` (package data) loaded into a typed `Recipe`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..configuration import configuration_files
from ..image_processing_illama import EVAL_CROP_PCT

SOFT_MASK_SCHEDULES = ("none", "constant", "linear")


def check_soft_mask_schedule(schedule: str, what: str = "soft-mask schedule") -> None:
    """The one check of a soft-mask schedule name (recipes, the rate function and the callback use it)."""
    if schedule not in SOFT_MASK_SCHEDULES:
        raise ValueError(f"{what} must be one of {SOFT_MASK_SCHEDULES}, got {schedule!r}")


@dataclass
class Recipe:
    """Every knob of a training run. Epoch-based fields are converted to optimizer steps by the trainer."""

    # model
    model: str | None = None  # default --model (preset name or folder)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # config fields set on a preset
    init_from_llama: str | None = None  # folder of a Hugging Face LLaMA checkpoint (weight selection)
    drop_path_rate: float = 0.0
    image_size: int | None = None  # training resolution; None keeps the model's

    # data
    train_split: str = "train"
    eval_split: str | None = "validation"
    image_column: str | None = None
    label_column: str | None = None
    shuffle_buffer: int = 10_000  # streaming only
    train_examples: int | None = None  # streaming: epoch length when the dataset has no __len__
    dataloader_num_workers: int = 4

    # augmentation (timm)
    crop_padding: int = 0  # > 0: pad + random crop instead of RandomResizedCrop (small images)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float | None = None
    random_erasing: float = 0.25
    interpolation: str = "bicubic"
    eval_crop_pct: float = EVAL_CROP_PCT
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1

    # optimisation
    epochs: float = 300
    max_steps: int = -1  # > 0 overrides epochs (required for streaming data of unknown length)
    batch_size: int = 4096  # global batch = per_device_batch_size * processes * accumulation
    per_device_batch_size: int = 128
    eval_batch_size: int | None = None
    learning_rate: float = 4e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 5
    warmup_steps: int | None = None  # overrides warmup_epochs
    weight_decay: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 0.0  # 0 = no clipping (the paper)
    bf16: bool = False
    fp16: bool = False

    # soft mask (docs/DESIGN.md, training recipes)
    soft_mask: str = "constant"
    soft_mask_cutoff_epochs: float = 50
    soft_mask_cutoff_steps: int | None = None  # overrides soft_mask_cutoff_epochs

    # bookkeeping
    seed: int = 0
    logging_steps: int = 50
    eval_strategy: str = "epoch"
    eval_steps: int | None = None
    save_strategy: str = "epoch"
    save_steps: int | None = None
    save_total_limit: int | None = 2

    def __post_init__(self):
        # YAML reads a bare `no` as false
        for name in ("eval_strategy", "save_strategy"):
            if getattr(self, name) is False:
                setattr(self, name, "no")
        if self.soft_mask is False or self.soft_mask is None:
            self.soft_mask = "none"
        self._coerce_numbers()
        for name in ("crop_scale", "crop_ratio", "adam_betas"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"recipe field {name!r} must be a pair of numbers, got {value!r}")
            setattr(self, name, tuple(float(v) for v in value))
        check_soft_mask_schedule(self.soft_mask, "recipe field 'soft_mask'")
        if self.bf16 and self.fp16:
            raise ValueError("recipe fields 'bf16' and 'fp16' are exclusive; set at most one to true")
        if self.batch_size % self.per_device_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of per_device_batch_size "
                f"({self.per_device_batch_size})"
            )
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"recipe field 'model_overrides' must be a mapping, got {self.model_overrides!r}")

    def _coerce_numbers(self) -> None:
        """YAML 1.1 reads `4e-3` (no dot) as a string: convert numeric fields, with a clear error if impossible."""
        for f in dataclasses.fields(self):
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            value = getattr(self, f.name)
            if value is None or isinstance(value, bool) or kind.split(" | ")[0] not in ("float", "int"):
                continue
            try:
                number = float(value)
                setattr(self, f.name, number if kind.startswith("float") else int(number))
            except (TypeError, ValueError):
                raise ValueError(f"recipe field {f.name!r} must be a number, got {value!r}") from None

    def gradient_accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step so that the global batch equals `batch_size`."""
        per_step = self.per_device_batch_size * num_processes
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by per_device_batch_size "
                f"{self.per_device_batch_size} x {num_processes} processes; change one of them"
            )
        return self.batch_size // per_step

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def list_recipes() -> list[str]:
    return list(configuration_files("recipes"))


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Load a recipe by name (`cifar10-mini`) or YAML path, then apply `key=value` overrides."""
    path = Path(name_or_path)
    if not path.is_file():
        named = configuration_files("recipes")
        if str(name_or_path) not in named:
            raise FileNotFoundError(
                f"no recipe {str(name_or_path)!r}: not a file and not one of the named recipes {list(named)}"
            )
        path = named[str(name_or_path)]
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping of field: value, got {type(data).__name__}")
    data.pop("description", None)
    data = merge_overrides(data, parse_overrides(overrides))
    return recipe_from_dict(data, source=str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown recipe field(s) {unknown} in {source}; valid fields: {sorted(known)}")
    return Recipe(**data)


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`["lr=1e-3", "model_overrides.depth=6"]` -> dict; values are parsed as YAML (numbers, lists, null)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value (e.g. epochs=10)")
        value = yaml.safe_load(value)
        if "." in key:
            outer, inner = key.split(".", 1)
            parsed.setdefault(outer, {})[inner] = value
        else:
            parsed[key] = value
    return parsed


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recipe dict with overrides applied; nested mappings (model_overrides) are merged, not replaced."""
    merged = dict(data)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
