"""Resuming a run: pick the newest COMPLETE checkpoint, and refuse a changed data set or recipe unless allowed.

A checkpoint is complete when its `trainer_state.json` (Trainer writes it last) parses and its weights are
there; a folder left half-written by a kill or a power loss is skipped with a warning and the previous one is
used. The run's `recipe.json` (recipe + model + data) is compared with the resumed run's: a different data set
or learning rate would silently turn the run into another one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
# recipe fields that change how a run is run or logged, not what it computes
OPERATIONAL_FIELDS = frozenset(
    {
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "report_to",
        "run_name",
        "disable_tqdm",
        "per_device_eval_batch_size",
        "eval_batch_size",
        "eval_strategy",
        "eval_steps",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "project",
        "trackio_space_id",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "logging_nan_inf_filter",
        "skip_memory_metrics",
        "include_num_input_tokens_seen",
        "save_only_model",
        "save_on_each_node",
        "eval_on_start",
        "eval_delay",
        "eval_accumulation_steps",
        "eval_do_concat_batches",
        "batch_eval_metrics",
        "ddp_backend",
        "ddp_timeout",
        "torch_compile",
        "torch_compile_backend",
        "torch_compile_mode",
        "torch_empty_cache_steps",
        "description",  # free text for the model card
    }
)


class RecipeChangedError(ValueError):
    """`--resume` with a data set, model or recipe other than the run's."""


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    folder = Path(folder)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        data = json.loads(state.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"trainer_state.json does not parse ({type(error).__name__}: {error}): truncated by a kill?"
    if not isinstance(data, dict) or "global_step" not in data:
        return "trainer_state.json has no global_step"
    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        return f"no weights (none of {list(WEIGHT_FILES)})"
    from .guards import checkpoint_files_problem

    if damaged := checkpoint_files_problem(folder):  # truncated weights, optimizer, scheduler or RNG state
        return damaged
    if weights == ["model.safetensors.index.json"]:
        try:
            shards = set(json.loads((folder / weights[0]).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"model.safetensors.index.json does not parse ({error})"
        absent = sorted(shard for shard in shards if not (folder / shard).is_file())
        if absent:
            return f"weight shards missing: {absent}"
    return None


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint-* folder of `output_dir` (see `checkpoint_problem`), or None."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        prefix, _, number = name.rpartition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and number.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            steps.append(int(number))
    for step in sorted(steps, reverse=True):
        folder = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("skipping incomplete checkpoint %s (%s)", folder, problem)
    return None


def recipe_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two run records ({field: (saved, current)}), operational ones aside.

    Records hold the fields that differ from the defaults, so a field in one record only is a change.
    """
    changes = {}
    for key in sorted(set(saved) | set(current)):
        if key in OPERATIONAL_FIELDS:
            continue
        old, new = saved.get(key), current.get(key)
        if json.loads(json.dumps(old)) != json.loads(json.dumps(new)):  # tuples vs lists as saved
            changes[key] = (old, new)
    return changes


def check_resume_record(
    output_dir: str | os.PathLike, current: dict[str, Any], allow_changes: bool = False, keep_previous: bool = True
) -> dict:
    """Compare the resumed run's record with the saved `recipe.json`; raise RecipeChangedError on a difference.

    With `allow_changes`, the differences are logged and the saved record is kept as
    `recipe.resumed-<n>.json` (by the process with `keep_previous`; the caller then writes the new
    `recipe.json`). Returns the differences.
    """
    path = Path(output_dir) / RECIPE_FILE
    if not path.is_file():
        logger.warning(
            "%s has no %s: the resumed run's data set and recipe cannot be checked", output_dir, RECIPE_FILE
        )
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecipeChangedError(f"{path} does not parse ({error}); cannot check what the run was") from None
    changes = recipe_changes(saved, current)
    if not changes:
        return {}
    described = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    if not allow_changes:
        raise RecipeChangedError(
            f"--resume with another data set or recipe than the run in {output_dir} ({described}); "
            "pass --allow-changed-recipe to continue anyway, or start a new run in another --output-dir"
        )
    if not keep_previous:
        return changes
    number = 1
    while (Path(output_dir) / f"recipe.resumed-{number}.json").exists():
        number += 1
    os.replace(path, Path(output_dir) / f"recipe.resumed-{number}.json")
    logger.warning(
        "resuming with a changed recipe (%s); the previous one is kept as recipe.resumed-%d.json", described, number
    )
    return changes
