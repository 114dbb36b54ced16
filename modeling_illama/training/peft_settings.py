"""The recipe's `peft` field: LoRA settings, their iLLaMA defaults and their checks (read by the recipe,
applied by training/peft.py)."""

from __future__ import annotations

import difflib
from typing import Any

PEFT_METHODS = ("lora",)
PEFT_DEFAULTS: dict[str, Any] = {
    "method": "lora",
    "r": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "target_modules": ["qkv_proj", "o_proj"],
    "mlp": False,
    "modules_to_save": None,  # None: the task's head (TASK_HEADS)
    "save_merged": False,
}
TASK_HEADS = {"image-classification": ["classifier"], "semantic-segmentation": ["decode_head", "auxiliary_head"]}


def check_peft_settings(settings: dict[str, Any], task: str) -> dict[str, Any]:
    """The recipe's `peft` mapping with the defaults filled in; ValueError naming a wrong key or value."""
    if not isinstance(settings, dict):
        raise ValueError(f"recipe field 'peft' must be a mapping such as {{r: 16}}, got {settings!r}")
    unknown = sorted(set(settings) - set(PEFT_DEFAULTS))
    if unknown:
        hints = {key: difflib.get_close_matches(key, PEFT_DEFAULTS, n=1) for key in unknown}
        hint = "; ".join(f"{key!r}: did you mean {close[0]!r}?" for key, close in hints.items() if close)
        raise ValueError(
            f"unknown peft setting(s) {unknown}" + (f" ({hint})" if hint else "") + f"; known: {list(PEFT_DEFAULTS)}"
        )
    merged = {**PEFT_DEFAULTS, **settings}
    if merged["method"] not in PEFT_METHODS:
        raise ValueError(f"peft.method must be one of {PEFT_METHODS}, got {merged['method']!r}")
    if not isinstance(merged["r"], int) or isinstance(merged["r"], bool) or merged["r"] < 1:
        raise ValueError(f"peft.r (the LoRA rank) must be a positive integer, got {merged['r']!r}")
    if not isinstance(merged["lora_alpha"], (int, float)) or merged["lora_alpha"] <= 0:
        raise ValueError(f"peft.lora_alpha must be a positive number, got {merged['lora_alpha']!r}")
    if not isinstance(merged["lora_dropout"], (int, float)) or not 0 <= merged["lora_dropout"] < 1:
        raise ValueError(f"peft.lora_dropout must be in [0, 1), got {merged['lora_dropout']!r}")
    for key in ("target_modules", "modules_to_save"):
        value = merged[key]
        if isinstance(value, str):
            merged[key] = value = [value]
        if value is not None and (not value or not all(isinstance(v, str) for v in value)):
            raise ValueError(f"peft.{key} must be a list of module names, got {value!r}")
    if merged["modules_to_save"] is None:
        if task not in TASK_HEADS:
            raise ValueError(f"peft: no default head for task {task!r}; set peft.modules_to_save")
        merged["modules_to_save"] = list(TASK_HEADS[task])
    return merged
