"""The model card (README.md with Hub metadata) written into every folder `illama-train` saves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .output_dir import CARD_MARKER

PAPER_URL = "https://arxiv.org/abs/2404.06773"
LICENSE = "apache-2.0"  # this package's license; converted weights keep their own card's terms


def is_hub_id(name: str | None) -> bool:
    """`owner/name` that is not a local path (local folders and presets do not go into Hub metadata)."""
    return bool(name) and not os.path.exists(name) and name.count("/") == 1 and not name.startswith((".", "/"))


def _base_model(model: str | None) -> str | None:
    """A Hub id as given, or the `base_model` a local folder's own card declares."""
    if is_hub_id(model):
        return model
    card = Path(str(model)) / "README.md"
    if card.is_file():
        base = ModelCard.load(card).data.to_dict().get("base_model")
        if isinstance(base, str) and base:
            return base
    return None


def _eval_results(metrics: dict[str, float], dataset: str, split: str | None) -> list[EvalResult]:
    results = []
    for key, name in (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy")):
        value = metrics.get(f"eval_{key}", metrics.get(key))
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type="image-classification",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split,
                metric_type="accuracy",
                metric_name=name,
                metric_value=round(100 * float(value), 2),
            )
        )
    return results


def _evaluation_table(log_history: list[dict[str, Any]]) -> list[str]:
    rows = [e for e in log_history if "eval_top1" in e]
    if not rows:
        return []
    lines = ["| epoch | step | eval loss | top-1 (%) | top-5 (%) |", "|---|---|---|---|---|"]
    for e in rows:
        lines.append(
            f"| {e.get('epoch', float('nan')):.2f} | {e.get('step', '')} | {e.get('eval_loss', float('nan')):.4f} "
            f"| {100 * e['eval_top1']:.2f} | {100 * e.get('eval_top5', float('nan')):.2f} |"
        )
    return lines


LM4VE_PAPER_URL = "https://arxiv.org/abs/2310.12973"


def _family_tags(recipe: dict[str, Any]) -> list[str]:
    if recipe.get("model_family", "illama") == "vit_frozen_llm":
        return ["vit"] + (["frozen-llm"] if recipe.get("frozen_llm") else [])
    return ["illama"]


def _family_description(recipe: dict[str, Any]) -> str:
    """What the model is, by the recipe's model family (and, for the ViT family, whether it holds LLaMA layers)."""
    if recipe.get("model_family", "illama") == "vit_frozen_llm":
        if recipe.get("frozen_llm"):
            return (
                "A ViT/DeiT image classifier with frozen LLaMA layer(s) ([Frozen Transformers in Language Models Are "
                f"Effective Visual Encoder Layers]({LM4VE_PAPER_URL}))"
            )
        return "A ViT/DeiT image classifier (the baseline of the frozen-LLaMA-layer recipes)"
    return f"An iLLaMA image classifier ([Adapting LLaMA Decoder to Vision Transformer]({PAPER_URL}))"


def render_training_card(
    model_name: str,
    recipe: dict[str, Any],
    metrics: dict[str, float],
    log_history: list[dict[str, Any]],
    model: str | None,
    dataset: str,
    eval_split: str | None,
    curves: str | None = "training_curves.png",
    from_scratch: bool = True,
) -> str:
    """README.md text: YAML front matter (library, pipeline, license, data sets, base model, model-index) + body."""
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=LICENSE,
        tags=["image-classification", "vision", *_family_tags(recipe)],
        datasets=[dataset] if is_hub_id(dataset) else None,
        base_model=None if from_scratch else _base_model(model),
        metrics=["accuracy"],
        model_name=model_name,
        eval_results=_eval_results(metrics, dataset, eval_split) or None,
    )
    origin = f"trained from scratch from the preset `{model}`" if from_scratch else f"fine-tuned from `{model}`"
    shown = {k: v for k, v in metrics.items() if k.startswith("eval_") or k.startswith("train_")}
    lines = _usage(model_name, f"{_family_description(recipe)} {origin} on `{dataset}` with `illama-train`.")
    lines += _results(shown, log_history, eval_split, curves)
    lines += _recipe_and_metrics(recipe, shown)
    # the marker tells the next run into the folder that this card is its to replace (training/output_dir.py)
    return f"---\n{data.to_yaml()}\n---\n\n{CARD_MARKER}\n\n" + "\n".join(lines) + "\n"


def _usage(model_name: str, description: str) -> list[str]:
    return [
        f"# {model_name}",
        "",
        description,
        "",
        "```python",
        "from transformers import pipeline",
        "",
        "# the folder holds the model code: trust_remote_code=True loads it, with or without the package installed",
        f'classifier = pipeline("image-classification", model="{model_name}", trust_remote_code=True)',
        "```",
        "",
    ]


def _results(shown: dict[str, float], log_history, eval_split: str | None, curves: str | None) -> list[str]:
    lines = ["## Results", ""]
    if "eval_top1" in shown:
        split = f" (`{eval_split}` split)" if eval_split else ""
        lines.append(
            f"Final evaluation{split}: top-1 **{100 * shown['eval_top1']:.2f}%**, "
            f"top-5 {100 * shown.get('eval_top5', float('nan')):.2f}%."
        )
        lines.append("")
    lines += _evaluation_table(log_history)
    if curves:
        lines += ["", f"![training curves]({curves})"]
    return lines


def _recipe_and_metrics(recipe: dict[str, Any], shown: dict[str, float]) -> list[str]:
    return [
        "",
        "## Training recipe",
        "",
        "Every field that differs from the defaults of `ILlamaTrainingArguments` (a `TrainingArguments` subclass):",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=True).rstrip(),
        "```",
        "",
        "## Metrics",
        "",
        "```yaml",
        yaml.safe_dump(
            {k: float(v) for k, v in shown.items() if isinstance(v, (int, float))}, sort_keys=True
        ).rstrip(),
        "```",
    ]
