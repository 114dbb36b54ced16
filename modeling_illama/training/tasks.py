"""The task registry: `build_training(recipe)` runs `TASK_BUILDERS[(recipe.task, recipe.model_family)]`; another
task or model family registers its builder (recipe -> `TrainingRun`) here."""

from __future__ import annotations

from collections.abc import Callable

from .assembly import TrainingRun
from .classification import build_image_classification
from .recipes import Recipe
from .segmentation import build_segmentation_training
from .vit_frozen_llm import build_vit_frozen_llm_classification

TASK_BUILDERS: dict[tuple[str, str], Callable[[Recipe], TrainingRun]] = {
    ("image-classification", "illama"): build_image_classification,
    ("image-classification", "vit_frozen_llm"): build_vit_frozen_llm_classification,
    ("semantic-segmentation", "illama"): build_segmentation_training,
}


def build_training(recipe: Recipe) -> TrainingRun:
    """Everything `illama-train` needs for `recipe` (its task and model family choose the builder)."""
    key = (recipe.task, recipe.model_family)
    if key not in TASK_BUILDERS:
        raise ValueError(
            f"no trainer for task {key[0]!r} with model family {key[1]!r}; known: {sorted(TASK_BUILDERS)}"
        )
    return TASK_BUILDERS[key](recipe)


__all__ = ["TASK_BUILDERS", "build_training"]
