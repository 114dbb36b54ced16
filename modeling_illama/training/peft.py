"""LoRA fine-tuning from a recipe (PEFT): the `peft:` settings, the wrapped model, the saved adapter and its card.

    peft: {r: 16, lora_alpha: 16, lora_dropout: 0.1}    # recipe; on the command line: --peft.r 16

LoRA matrices go on the attention projections of every iLLaMA block (`qkv_proj`, `o_proj`; `mlp: true` adds the
MLP's linears), never on frozen LLaMA layers; the task's new head is trained in full (`modules_to_save`: the
classifier, or UperNet's decode and auxiliary heads). The defaults are those of PEFT's image-classification guide
(r 16, alpha 16, dropout 0.1).

The run's output folder is the adapter (`adapter_config.json`, `adapter_model.safetensors`, the image processor,
`labels.json`, README.md naming the base model); Transformers loads it through its PEFT integration
(`pipeline(model=folder)`, `AutoModelForImageClassification.from_pretrained(folder)`), with `**adapter_labels(
folder)` when the adapter's classes differ from the base model's. `save_merged: true` also writes the merged full
model into `merged/` (semantic segmentation always does: its base is not a saved model).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

from torch import nn

from .output_dir import MERGED_FOLDER

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.json"


def target_names(model: nn.Module, settings: dict[str, Any]) -> list[str]:
    """Leaf names of the linears that get LoRA matrices: `target_modules` (+ the MLP's linears with `mlp`)."""
    names = set(settings["target_modules"])
    if settings["mlp"]:
        names |= {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and ".mlp." in f".{name}" and "frozen_llm" not in name
        }
    return sorted(names)


def lora_config(model: nn.Module, settings: dict[str, Any]):
    """PEFT's LoraConfig for `model`: a regex over the target linears outside frozen LLaMA layers."""
    from peft import LoraConfig

    names = target_names(model, settings)
    pattern = rf"^(?!.*frozen_llm\.).*\.({'|'.join(names)})$"
    found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in names]
    found = [n for n in found if "frozen_llm." not in n]
    if not found:
        raise ValueError(f"peft.target_modules {names} match no linear layer of {type(model).__name__}")
    children = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    heads = [head for head in settings["modules_to_save"] if head in children]
    missing = sorted(set(settings["modules_to_save"]) - set(heads))
    if missing and not (heads and set(missing) <= {"auxiliary_head"}):  # a UperNet without auxiliary head
        raise ValueError(f"peft.modules_to_save {missing}: no such module in {type(model).__name__}")
    return LoraConfig(
        r=settings["r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=settings["lora_dropout"],
        target_modules=pattern,
        modules_to_save=heads,
    )


def base_model_reference(model: str) -> str:
    """What the adapter names as its base: a local folder as an absolute path (loads from anywhere), a Hub id
    as given."""
    return os.path.abspath(model) if os.path.isdir(model) else model


def apply_peft(run, recipe) -> nn.Module:
    """Wrap the run's model in a PeftModel (LoRA per `recipe.peft`) before training; returns the wrapped model."""
    try:
        from peft import get_peft_model
    except ImportError:
        raise ValueError(
            "the recipe asks for LoRA (peft) but the peft package is not installed: pip install "
            "'illama-transformers[train]' (or pip install peft)"
        ) from None

    from .model_card import is_hub_id
    from .models import is_model_dir

    if recipe.layer_decay:
        raise ValueError("peft and layer_decay do not combine (LoRA trains the adapters at one rate): drop one")
    if recipe.model_ema:
        raise ValueError("peft and model_ema do not combine: set model_ema=false")
    model = run.trainer.model
    if recipe.task == "image-classification" and not (is_model_dir(recipe.model) or is_hub_id(recipe.model)):
        raise ValueError(
            f"peft adapts a trained model: --model must be a model folder or Hub id, got {recipe.model!r}"
        )
    config = lora_config(model, recipe.peft)
    wrapped = get_peft_model(model, config)
    if recipe.task == "image-classification":
        wrapped.peft_config["default"].base_model_name_or_path = base_model_reference(recipe.model)
    run.trainer.model = run.trainer.model_wrapped = wrapped
    trainable, total = wrapped.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d alpha=%s on %s, full: %s; %s of %s parameters trainable (%.2f%%)",
        recipe.peft["r"],
        recipe.peft["lora_alpha"],
        target_names(model, recipe.peft),
        config.modules_to_save,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return wrapped


def save_adapter(run, recipe) -> None:
    """The adapter (+ processor, labels) into the output folder; the merged model into `merged/` when asked."""
    output_dir = recipe.output_dir
    run.trainer.save_model(output_dir)  # PeftModel.save_pretrained: adapter_config.json, adapter_model.safetensors
    if not run.trainer.is_world_process_zero():
        return
    wrapped = run.trainer.model
    base = wrapped.get_base_model()
    labels = {"id2label": {str(k): v for k, v in base.config.id2label.items()}, "label2id": base.config.label2id}
    with open(os.path.join(output_dir, LABELS_FILE), "w", encoding="utf-8") as handle:
        json.dump(labels, handle, indent=2)
    warn_if_base_preprocesses_otherwise(recipe.model, run.trainer.processing_class)
    if recipe.peft["save_merged"] or recipe.task != "image-classification":
        merged = merged_model(wrapped)
        merged.save_pretrained(os.path.join(output_dir, MERGED_FOLDER))
        run.trainer.processing_class.save_pretrained(os.path.join(output_dir, MERGED_FOLDER))
        logger.info("merged model: %s", os.path.join(output_dir, MERGED_FOLDER))


def warn_if_base_preprocesses_otherwise(base: str, processor) -> None:
    """`pipeline(model=adapter)` takes the image processor of the base model (Transformers loads the components
    from `base_model_name_or_path`): say so when it differs from the run's."""
    path = os.path.join(str(base), "preprocessor_config.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    ours = processor.to_dict()
    differ = sorted(
        k for k in ("crop_pct", "size", "image_mean", "image_std") if k in saved and saved[k] != ours.get(k)
    )
    if differ:
        logger.warning(
            "the base model's image processor differs from this run's in %s; pipeline(model=<adapter>) uses the "
            "base's: pass image_processor=<adapter folder> to preprocess as in training",
            differ,
        )


def merged_model(wrapped) -> nn.Module:
    """A copy of the PeftModel with the LoRA products added into the base weights (the trained model unchanged)."""
    return copy.deepcopy(wrapped).merge_and_unload()


def adapter_labels(folder: str) -> dict[str, Any]:
    """The adapter's label fields for `from_pretrained` / `pipeline(model_kwargs=...)`: `id2label`, `label2id` and
    `ignore_mismatched_sizes` (the base's head of another class count is replaced by the adapter's)."""
    with open(os.path.join(folder, LABELS_FILE), encoding="utf-8") as handle:
        labels = json.load(handle)
    return {
        "id2label": {int(k): v for k, v in labels["id2label"].items()},
        "label2id": labels["label2id"],
        "ignore_mismatched_sizes": True,
    }


def write_adapter_card(run, recipe) -> None:
    """Turn the run's README.md into the adapter's card: PEFT metadata, the base model and how to load it."""
    path = os.path.join(recipe.output_dir, "README.md")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    base = base_model_reference(recipe.model) if recipe.model else None
    name = os.path.basename(os.path.normpath(recipe.output_dir))
    settings = recipe.peft
    front, _, body = text.partition("\n---\n")
    front = front.replace("library_name: transformers", "library_name: peft")
    front = front.replace("tags:\n", "tags:\n- lora\n- peft\n", 1)
    if "base_model:" not in front and base and not os.path.isabs(base):
        front += f"\nbase_model: {base}"
    lines = [
        "",
        f"**LoRA adapter** (r {settings['r']}, alpha {settings['lora_alpha']}, dropout {settings['lora_dropout']}, "
        f"on {', '.join(target_names(run.trainer.model.get_base_model(), settings))}; trained in full: "
        f"{', '.join(settings['modules_to_save'])}) of the base model `{base}`.",
        "",
        "```python",
        "from transformers import pipeline",
        "import modeling_illama",
        "from modeling_illama.training.peft import adapter_labels",
        "",
        f'classifier = pipeline("image-classification", model="{name}", model_kwargs=adapter_labels("{name}"))',
        "```",
        "",
        "`adapter_labels` gives the adapter's classes (the base model's head has others); with the base model's "
        f'classes `pipeline(model="{name}")` is enough.'
        + (f" The merged full model is in `{MERGED_FOLDER}/`." if settings["save_merged"] else ""),
    ]
    start = body.find("```python")
    end = body.find("```", start + len("```python")) + len("```")
    body = body[:start] + "\n".join(lines).strip() + body[end:]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(front + "\n---\n" + body)
