"""Training recipes: `TrainingArguments` plus the iLLaMA fields, read from YAML with `HfArgumentParser`.

A recipe file (`configuration/recipes/NAME.yaml`, package data) may set any `TrainingArguments` field (`report_to`, `optim`,
`push_to_hub`, `torch_compile`, ...) next to the fields below; `key=value` overrides on the command line go
through the same parser.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..configuration import configuration_files
from ..image_processing_illama import EVAL_CROP_PCT
from .qat import QUANTIZATION_SCHEMES as QAT_SCHEMES

SOFT_MASK_SCHEDULES = ("none", "constant", "linear")
LR_SCHEDULE_UNITS = ("step", "epoch")
# numeric fields -> (lowest, highest, rule): None = no bound; a field may also be null where its type allows
NUMERIC_RULES: dict[str, tuple[float | None, float | None, str]] = {
    "learning_rate": (0.0, None, "> 0"),
    "num_train_epochs": (0.0, None, "> 0 (or set max_steps > 0)"),
    "weight_decay": (0.0, None, ">= 0"),
    "adam_beta1": (0.0, 1.0, "in [0, 1)"),
    "adam_beta2": (0.0, 1.0, "in [0, 1)"),
    "adam_epsilon": (0.0, None, "> 0"),
    "max_grad_norm": (0.0, None, ">= 0 (0 turns clipping off)"),
    "warmup_epochs": (0.0, None, ">= 0"),
    "warmup_lr": (0.0, None, ">= 0"),
    "drop_path_rate": (0.0, 1.0, "in [0, 1)"),
    "label_smoothing": (0.0, 1.0, "in [0, 1)"),
    "hflip": (0.0, 1.0, "in [0, 1]"),
    "random_erasing": (0.0, 1.0, "in [0, 1]"),
    "mixup": (0.0, None, ">= 0 (0 turns it off)"),
    "cutmix": (0.0, None, ">= 0 (0 turns it off)"),
    "mixup_prob": (0.0, 1.0, "in [0, 1]"),
    "mixup_switch_prob": (0.0, 1.0, "in [0, 1]"),
    "eval_crop_pct": (0.0, 1.0, "in (0, 1]"),
    "color_jitter": (0.0, None, ">= 0"),
    "model_ema_decay": (0.0, 1.0, "in (0, 1)"),
    "soft_mask_cutoff_epochs": (0.0, None, ">= 0"),
    "soft_mask_cutoff_steps": (0.0, None, ">= 0"),
    "crop_padding": (0.0, None, ">= 0"),
    "repeated_augmentation": (0.0, None, ">= 0"),
    "dataloader_num_workers": (0.0, None, ">= 0"),
    "per_device_train_batch_size": (1.0, None, ">= 1"),
    "per_device_eval_batch_size": (1.0, None, ">= 1"),
    "gradient_accumulation_steps": (1.0, None, ">= 1"),
    "global_batch_size": (1.0, None, ">= 1 (null: per_device_train_batch_size x processes)"),
    "train_examples": (1.0, None, ">= 1"),
    "shuffle_buffer": (1.0, None, ">= 1"),
    "image_size": (1.0, None, ">= 1 (null keeps the model's)"),
    "save_total_limit": (1.0, None, ">= 1 (null keeps every checkpoint)"),
    "logging_steps": (0.0, None, "> 0"),
    "eval_steps": (0.0, None, "> 0 (null: logging_steps)"),
    "save_steps": (0.0, None, "> 0"),
}
# rules whose lower bound itself is refused (strictly greater) / whose upper bound is refused (strictly lower)
_STRICT_LOW = {"learning_rate", "num_train_epochs", "adam_epsilon", "eval_crop_pct", "model_ema_decay"}
_STRICT_LOW |= {"logging_steps", "eval_steps", "save_steps"}
_STRICT_HIGH = {"adam_beta1", "adam_beta2", "drop_path_rate", "label_smoothing", "model_ema_decay"}


def check_numeric_fields(recipe) -> None:
    """Every numeric recipe field in its range (`NUMERIC_RULES`), finite, and not a bool: one error naming the
    field, the value and the rule."""
    for name, (low, high, rule) in NUMERIC_RULES.items():
        value = getattr(recipe, name, None)
        if value is None:
            continue
        if name == "num_train_epochs" and getattr(recipe, "max_steps", -1) > 0:
            continue  # max_steps decides the length
        if name in ("eval_steps", "save_steps") and not value:
            continue  # unused with the epoch / no strategies
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"recipe field {name!r} must be a finite number {rule}, got {value!r}")
        too_low = low is not None and (value <= low if name in _STRICT_LOW else value < low)
        too_high = high is not None and (value >= high if name in _STRICT_HIGH else value > high)
        if too_low or too_high:
            raise ValueError(f"recipe field {name!r} must be {rule}, got {value!r}")
    if recipe.max_steps is not None and recipe.max_steps == 0:
        raise ValueError("recipe field 'max_steps' must be > 0 (or -1: num_train_epochs decides), got 0")
    low, high = recipe.crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"recipe field 'crop_scale' must be (low, high) with 0 < low <= high <= 1, got {recipe.crop_scale}"
        )
    low, high = recipe.crop_ratio
    if not 0 < low <= high:
        raise ValueError(
            f"recipe field 'crop_ratio' must be (low, high) with 0 < low <= high, got {recipe.crop_ratio}"
        )


def model_config_class(model_family: str):
    """The config class `model_overrides` are fields of."""
    if model_family == "vit_frozen_llm":
        from ..modeling_vit_frozen_llm import ViTWithFrozenLLMConfig

        return ViTWithFrozenLLMConfig
    from ..configuration_illama import ILlamaConfig

    return ILlamaConfig


def check_model_overrides(overrides: dict[str, Any], model_family: str) -> None:
    """`model_overrides` keys must be fields of the model's config (a typo would be stored in config.json and
    ignored): an error with the closest names."""
    config_class = model_config_class(model_family)
    known = set(config_class().to_dict()) | {"out_features", "out_indices", "num_labels", "id2label", "label2id"}
    known -= {"transformers_version", "architectures", "auto_map", "model_type", "_name_or_path"}
    name = config_class.__name__
    check_known(overrides, known, "model_overrides field(s)", f" for {name}", f"valid fields are those of {name}")


def check_known(names, known: set[str], label: str, where: str, valid: str) -> None:
    """ValueError for the `names` not in `known`: `unknown <label> [names]<where>`, the closest known names, then
    `valid`."""
    unknown = sorted(set(names) - known)
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=3) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {v}?" for k, v in hints.items() if v)
        raise ValueError(f"unknown {label} {unknown}{where}" + (f" ({hint})" if hint else "") + f"; {valid}")


def check_soft_mask_schedule(schedule: str, what: str = "soft-mask schedule") -> None:
    """The one check of a soft-mask schedule name (recipes, the rate function and the callback use it)."""
    if schedule not in SOFT_MASK_SCHEDULES:
        raise ValueError(f"{what} must be one of {SOFT_MASK_SCHEDULES}, got {schedule!r}")


@dataclass
class ILlamaTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the model, data, augmentation, soft-mask, EMA and layer-decay fields of a recipe.

    Epoch-based iLLaMA fields (`warmup_epochs`, `soft_mask_cutoff_epochs`) are turned into optimizer steps once the
    data set is loaded. Defaults that differ from `TrainingArguments` are the ones image training needs
    (`remove_unused_columns=False`, `label_names=["labels"]`, `logging_first_step=True`).
    """

    description: str | None = field(default=None, metadata={"help": "Free text shown in the model card."})

    # what to build
    # what to build: `tasks.TASK_BUILDERS[(task, model_family)]` assembles the run
    task: str = field(default="image-classification", metadata={"help": "e.g. image-classification"})
    model_family: str = field(default="illama", metadata={"help": "e.g. illama"})
    model: str | None = field(default=None, metadata={"help": "Preset name (from scratch) or saved folder."})
    model_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "Config fields set on a preset."})
    init_from_llama: str | None = field(default=None, metadata={"help": "LLaMA checkpoint for weight selection."})
    backbone: str | None = field(
        default=None,
        metadata={"help": "semantic-segmentation: iLLaMA folder (trained or converted) the backbone starts from."},
    )
    segmentation: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "semantic-segmentation: the training.segmentation.SegmentationSettings fields."},
    )
    peft: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "LoRA fine-tuning of --model (training/peft.py): method, r, lora_alpha, lora_dropout, ..."},
    )
    drop_path_rate: float = 0.0
    image_size: int | None = field(default=None, metadata={"help": "Training resolution; None keeps the model's."})

    # data
    dataset: str | None = field(default=None, metadata={"help": "Default data set: Hub id, folder or parquet."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation data when it lives elsewhere."})
    streaming: bool = False
    train_split: str = "train"
    eval_split: str | None = "validation"
    image_column: str | None = None
    label_column: str | None = None
    shuffle_buffer: int = 10_000  # streaming only
    train_examples: int | None = field(default=None, metadata={"help": "Epoch length of streamed data."})

    # augmentation (timm)
    crop_padding: int = field(default=0, metadata={"help": "> 0: pad + random crop instead of RandomResizedCrop."})
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

    # optimisation beyond TrainingArguments
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Images per optimizer step over all processes; sets gradient_accumulation_steps."},
    )
    warmup_epochs: float | None = field(default=None, metadata={"help": "Overrides warmup_steps when set."})
    layer_decay: float | None = field(default=None, metadata={"help": "Layer-wise lr decay (timm), e.g. 0.75."})
    model_ema: bool = field(default=False, metadata={"help": "Keep an EMA of the weights (timm ModelEmaV3)."})
    model_ema_decay: float = 0.9999
    model_ema_warmup: bool = field(default=False, metadata={"help": "timm's EMA decay warm-up."})
    model_ema_eval: bool = field(default=False, metadata={"help": "Evaluate with the EMA weights."})
    model_ema_save: bool = field(default=False, metadata={"help": "Save the EMA weights as the final model."})

    # model family vit_frozen_llm: a ViT/DeiT with frozen LLaMA layer(s) (Pang et al., docs/LM4VE.md)
    frozen_llm: str | None = field(
        default=None, metadata={"help": "LLaMA folder (Hugging Face or Meta format) of the frozen layer(s)."}
    )
    frozen_llm_layers: list[int] | None = field(default=None, metadata={"help": "LLaMA layers; default: the last."})
    frozen_llm_rms_norm_eps: float | None = field(
        default=1e-6, metadata={"help": "Their RMSNorm eps (the authors' 1e-6); null: the checkpoint's."}
    )
    frozen_llm_store_weights: bool = field(default=True, metadata={"help": "False: save a reference (path + sha256)."})
    repeated_augmentation: int = field(default=0, metadata={"help": "> 1: timm RepeatAugSampler repeats (DeiT: 3)."})
    lr_schedule_unit: str = field(
        default="step",
        metadata={
            "help": "step: lr_scheduler_type; epoch: DeiT's timm cosine stepped per epoch from warmup_lr to "
            "lr_scheduler_kwargs.min_lr over warmup_epochs"
        },
    )
    warmup_lr: float = field(default=0.0, metadata={"help": "Start lr of the epoch schedule's warm-up (DeiT 1e-6)."})

    # soft mask (docs/DESIGN.md, "soft mask")
    soft_mask: str = field(default="constant", metadata={"help": f"One of {SOFT_MASK_SCHEDULES}."})
    soft_mask_cutoff_epochs: float = 50
    soft_mask_cutoff_steps: int | None = field(default=None, metadata={"help": "Overrides the cutoff in epochs."})

    # quantization-aware training (training/qat.py)
    qat: str | None = field(
        default=None,
        metadata={"help": f"Train with fake-quantized int8 linears, one of {QAT_SCHEMES}; saved as plain weights."},
    )

    # TrainingArguments defaults changed for image training
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])
    logging_first_step: bool = True
    restore_callback_states_from_checkpoint: bool = True
    ddp_find_unused_parameters: bool | None = False
    dataloader_pin_memory: bool = field(default_factory=torch.cuda.is_available)

    def __post_init__(self):
        if self.soft_mask is False or self.soft_mask is None:  # YAML reads a bare `no` as false
            self.soft_mask = "none"
        check_soft_mask_schedule(self.soft_mask, "recipe field 'soft_mask'")
        if self.lr_schedule_unit not in LR_SCHEDULE_UNITS:
            raise ValueError(
                f"recipe field 'lr_schedule_unit' must be one of {LR_SCHEDULE_UNITS}, got {self.lr_schedule_unit!r}"
            )
        if self.model_family == "vit_frozen_llm" and self.soft_mask != "none":
            raise ValueError(f"model family {self.model_family!r} has no soft mask: set soft_mask: none")
        if self.frozen_llm and self.model_family != "vit_frozen_llm":
            raise ValueError(
                "recipe field 'frozen_llm' needs model_family: vit_frozen_llm (for an iLLaMA, attach the layers with "
                "illama-attach-frozen-llm and pass the saved folder as --model)"
            )
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"recipe field {name!r} must be a pair of numbers, got {value!r}")
            setattr(self, name, tuple(float(v) for v in value))
        if self.qat is not None and self.qat not in QAT_SCHEMES:
            raise ValueError(f"recipe field 'qat' must be null or one of {QAT_SCHEMES}, got {self.qat!r}")
        if self.peft:
            from .peft_settings import check_peft_settings

            self.peft = check_peft_settings(self.peft, self.task)
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"recipe field 'model_overrides' must be a mapping, got {self.model_overrides!r}")
        check_model_overrides(self.model_overrides, self.model_family)
        check_numeric_fields(self)
        if self.global_batch_size is not None and self.global_batch_size % self.per_device_train_batch_size:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of per_device_train_batch_size "
                f"({self.per_device_train_batch_size})"
            )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"recipe field 'layer_decay' must be in (0, 1], got {self.layer_decay}")
        if (self.backbone or self.segmentation) and self.task != "semantic-segmentation":
            raise ValueError(
                f"recipe fields 'backbone' / 'segmentation' (--backbone) are for task semantic-segmentation; "
                f"this recipe's task is {self.task!r}"
            )
        if (self.model_ema_eval or self.model_ema_save) and not self.model_ema:
            raise ValueError("model_ema_eval / model_ema_save need model_ema=true")
        super().__post_init__()
        if self.lr_schedule_unit == "step":  # the epoch schedule reads min_lr itself
            check_scheduler_kwargs(self.lr_scheduler_type, self.lr_scheduler_kwargs)

    def step_counts(self, num_processes: int) -> dict[str, int]:
        """`gradient_accumulation_steps` for `num_processes`, and `max_steps` of streamed data (no length) from
        `train_examples` per epoch: fields for `dataclasses.replace` (the recipe itself is left as it is)."""
        counts = {"gradient_accumulation_steps": self.gradient_accumulation_for(num_processes)}
        if self.streaming and self.max_steps <= 0:
            if not self.train_examples:
                raise ValueError(
                    "streaming data has no length: set max_steps=N or train_examples=N (images per epoch)"
                )
            per_step = self.per_device_train_batch_size * num_processes * counts["gradient_accumulation_steps"]
            counts["max_steps"] = math.ceil(self.num_train_epochs * max(self.train_examples // per_step, 1))
        return counts

    def gradient_accumulation_for(self, num_processes: int) -> int:
        """Micro-batches per optimizer step so that one step sees `global_batch_size` images."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        per_step = self.per_device_train_batch_size * num_processes
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not divisible by per_device_train_batch_size "
                f"{self.per_device_train_batch_size} x {num_processes} processes; change one of them"
            )
        return self.global_batch_size // per_step

    def recipe_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what the recipe and overrides set), for logs and model cards.

        Compared with the declared defaults: building a default instance would re-run the device setup and reset
        the accelerate state of a live Trainer."""
        changed = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name.startswith("_") or f.name in _NOT_RECIPE_FIELDS:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = _plain(getattr(self, f.name))
            unset = default in (None, "none") and value in (
                None,
                False,
                [],
                "none",
                ["none"],
            )  # filled in by post_init
            if value != _plain(default) and not unset:
                changed[f.name] = value
        return changed


_NOT_RECIPE_FIELDS = ("output_dir", "logging_dir", "hub_token", "use_cpu", "accelerator_config", "do_eval", "debug")


Recipe = ILlamaTrainingArguments  # the short name used across the package


def _plain(value):
    """JSON/YAML-safe copy (enums -> their value)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    return value


def run_on_cpu() -> bool:
    """CPU training when there is no GPU (or `accelerate launch --cpu`): several processes then use gloo.

    accelerate only detects multi-process CPU runs when asked for the CPU explicitly, so every place that
    creates the (shared) distributed state passes this (recipes set `use_cpu` from it unless given).
    """
    from transformers.utils import strtobool

    return not torch.cuda.is_available() or bool(strtobool(os.environ.get("ACCELERATE_USE_CPU", "false")))


# --------------------------------------------------------------------------------------------- files


def list_recipes() -> list[str]:
    return list(configuration_files("recipes"))


def recipe_path(name_or_path: str | os.PathLike):
    """A YAML file as given, or the named recipe shipped with the package."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = configuration_files("recipes")
    if str(name_or_path) not in named:
        raise FileNotFoundError(
            f"no recipe {str(name_or_path)!r}: not a file and not one of the named recipes {list(named)}"
        )
    return named[str(name_or_path)]


def load_recipe(
    name_or_path: str | os.PathLike,
    overrides: list[str] | dict[str, Any] | None = None,
    output_dir: str | None = None,
) -> ILlamaTrainingArguments:
    """Load a recipe by name (`cifar10-mini`) or YAML path, then apply `key=value` overrides (command line)."""
    path = recipe_path(name_or_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping of field: value, got {type(data).__name__}")
    check_fields(data, f"recipe file {path}")
    given = parse_overrides(overrides)
    check_fields(given, "the command-line overrides")
    merged = merge_overrides(data, given)
    if output_dir is not None:
        merged["output_dir"] = output_dir
    return recipe_from_dict(merged, source=str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> ILlamaTrainingArguments:
    """Typed recipe from a mapping through `HfArgumentParser.parse_dict` (YAML strings such as `4e-3` coerced)."""
    check_fields(data, source)
    data = {"use_cpu": run_on_cpu(), **data}  # TrainingArguments checks bf16 against the device while parsing
    try:
        (recipe,) = HfArgumentParser(ILlamaTrainingArguments).parse_dict(_coerce(data))
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid recipe ({source}): {error}") from error
    return recipe


def check_fields(data: dict[str, Any], source: str) -> None:
    """Unknown keys -> an error naming where they came from and the closest valid names."""
    known = {f.name for f in dataclasses.fields(ILlamaTrainingArguments) if f.init}
    valid = "valid fields are the iLLaMA fields of ILlamaTrainingArguments and every TrainingArguments field"
    check_known(data, known, "recipe field(s)", f" in {source}", valid)


_STRATEGY_FIELDS = ("eval_strategy", "save_strategy", "logging_strategy", "hub_strategy")


_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # a string in YAML 1.1, a float in 1.2


def _coerce(data: dict[str, Any]) -> dict[str, Any]:
    """YAML 1.1 reads `4e-3` (no dot) as a string and a bare `no` as false: fix numeric and strategy fields."""
    hints = typing.get_type_hints(ILlamaTrainingArguments)
    out = dict(data)
    for name, value in data.items():
        if name in _STRATEGY_FIELDS and value is False:
            out[name] = "no"
            continue
        if isinstance(value, dict):  # lr_scheduler_kwargs: {min_lr: 1e-5}, model_overrides: {rms_norm_eps: 1e-6}
            out[name] = {k: float(v) if _EXPONENT_NUMBER.match(str(v)) else v for k, v in value.items()}
            continue
        if value is None or isinstance(value, bool) or not isinstance(value, str):
            continue
        kinds = set(typing.get_args(hints[name])) or {hints[name]}
        if str in kinds:
            continue
        for kind in (int, float):
            if kind in kinds:
                try:
                    out[name] = kind(float(value)) if kind is int else float(value)
                except ValueError:
                    raise ValueError(f"recipe field {name!r} must be a number, got {value!r}") from None
                break
    return out


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`["learning_rate=1e-3", "model_overrides.depth=6"]` -> dict; values are parsed as YAML (numbers, lists, null)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value (e.g. num_train_epochs=10)")
        value = yaml.safe_load(value)
        if "." in key:
            outer, inner = key.split(".", 1)
            parsed.setdefault(outer, {})[inner] = value
        else:
            parsed[key] = value
    return parsed


def check_scheduler_kwargs(scheduler_type, kwargs) -> None:
    """`lr_scheduler_kwargs` must be arguments of the chosen schedule (Trainer would fail at its first step)."""
    import inspect

    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    function = TYPE_TO_SCHEDULER_FUNCTION.get(SchedulerType(scheduler_type))
    if not kwargs or not isinstance(kwargs, dict) or function is None:
        return
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = sorted(set(parameters) - {"optimizer", "num_warmup_steps", "num_training_steps"})
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        name = SchedulerType(scheduler_type).value
        raise ValueError(
            f"lr_scheduler_kwargs {unknown} are not arguments of lr_scheduler_type {name!r} (it takes {accepted}); "
            f"pass lr_scheduler_kwargs={{}} or the arguments of {name!r}"
        )


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recipe dict with overrides applied; nested mappings (model_overrides) are merged, not replaced.

    Another `lr_scheduler_type` drops the recipe's `lr_scheduler_kwargs` unless they are overridden too: they are
    the keywords of the recipe's schedule (`min_lr` of cosine_with_min_lr is an error for the plain cosine)."""
    merged = dict(data)
    new_schedule = overrides.get("lr_scheduler_type", data.get("lr_scheduler_type"))
    if new_schedule != data.get("lr_scheduler_type") and "lr_scheduler_kwargs" not in overrides:
        merged.pop("lr_scheduler_kwargs", None)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
