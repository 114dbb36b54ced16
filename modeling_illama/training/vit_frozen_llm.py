"""The `vit_frozen_llm` model family of `illama-train`: a ViT/DeiT, optionally with frozen LLaMA layer(s) after its
last block (Pang et al., arXiv 2310.12973), built from scratch or from a saved ViT/DeiT folder."""

from __future__ import annotations

import logging
from typing import Any

from ..labels import class_names, label_fields
from ..llm.frozen import attach_frozen_llm, vit_to_frozen_llm_model
from ..modeling_vit_frozen_llm import ViTWithFrozenLLMConfig, ViTWithFrozenLLMForImageClassification
from .classification import build_image_classification
from .models import is_model_dir, load_classifier_folder
from .recipes import Recipe

logger = logging.getLogger(__name__)

# DeiT's sizes (Touvron et al. 2021, Table 1; timm's vit_{tiny,small,base}_patch16_224), which Pang et al. train
VIT_SIZES = {
    "vit-tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
    "vit-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    "vit-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
# timm's VisionTransformer defaults: patch 16 at 224 px, qkv bias, LayerNorm eps 1e-6, GELU, no dropout
VIT_DEFAULTS = {
    "image_size": 224,
    "patch_size": 16,
    "qkv_bias": True,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
}


def build_vit_frozen_llm_model(model: str, recipe: Recipe, label_names: list[str]):
    """`model` is a size name (`vit-tiny`, `vit-small`, `vit-base`: from scratch) or a saved folder of a ViT/DeiT
    (`model_type` "vit") or of this family. `recipe.frozen_llm` (a LLaMA folder, Hugging Face or Meta format)
    adds the frozen layer(s); `recipe.drop_path_rate` sets stochastic depth; the head follows the labels."""
    if is_model_dir(model):
        net = load_vit_folder(model, recipe, label_names)
    elif model in VIT_SIZES:
        fields = {**VIT_DEFAULTS, **VIT_SIZES[model], **recipe.model_overrides}
        if recipe.image_size:
            fields["image_size"] = recipe.image_size
        config = ViTWithFrozenLLMConfig(**fields, drop_path_rate=recipe.drop_path_rate, **label_fields(label_names))
        net = ViTWithFrozenLLMForImageClassification(config)
    else:
        raise ValueError(
            f"model {model!r} is neither a saved folder nor a ViT size of model_family vit_frozen_llm "
            f"({', '.join(VIT_SIZES)})"
        )
    if recipe.frozen_llm:
        attach_frozen_llm(
            net,
            recipe.frozen_llm,
            recipe.frozen_llm_layers,
            recipe.frozen_llm_store_weights,
            recipe.frozen_llm_rms_norm_eps,
        )
        settings = net.config.frozen_llm
        logger.info(
            "frozen LLaMA layers %s from %s (rms_norm_eps %g)",
            settings.layer_indices,
            settings.source_path,
            settings.rms_norm_eps,
        )
    return net


def load_vit_folder(model: str, recipe: Recipe, label_names: list[str]):
    """A saved ViT/DeiT folder (turned into this family) or a folder of this family, head following the labels."""
    from transformers import AutoConfig, ViTForImageClassification

    saved = AutoConfig.from_pretrained(model)
    if saved.model_type == "vit":
        model_class = ViTForImageClassification
    elif saved.model_type == ViTWithFrozenLLMConfig.model_type:
        model_class = ViTWithFrozenLLMForImageClassification
    else:
        raise ValueError(
            f"{model} is a {saved.model_type!r} model; model_family vit_frozen_llm takes a ViT/DeiT folder "
            "(model_type 'vit') or a vit_frozen_llm folder"
        )
    kwargs: dict[str, Any] = {}
    if class_names(saved.id2label) != list(label_names):
        kwargs.update(label_fields(label_names), ignore_mismatched_sizes=True)
    if model_class is ViTWithFrozenLLMForImageClassification:
        kwargs["drop_path_rate"] = recipe.drop_path_rate
    net = load_classifier_folder(model_class, model, label_names, **kwargs)
    if model_class is ViTForImageClassification:
        net = vit_to_frozen_llm_model(net, drop_path_rate=recipe.drop_path_rate)
    elif net.config.frozen_llm and recipe.frozen_llm:
        raise ValueError(f"{model} already holds frozen LLaMA layers; drop `frozen_llm` from the recipe")
    if recipe.image_size and recipe.image_size != net.config.image_size:
        raise ValueError(
            f"{model} was trained at {net.config.image_size} px; changing the resolution (image_size="
            f"{recipe.image_size}) is not supported for this family"
        )
    return net


def build_vit_frozen_llm_classification(recipe: Recipe):
    """The image-classification run of a ViT/DeiT with frozen LLaMA layer(s): the iLLaMA run with this family's model."""
    return build_image_classification(recipe, build_vit_frozen_llm_model)
