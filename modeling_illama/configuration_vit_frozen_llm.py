"""Configuration of Transformers' ViT with frozen LLaMA layer(s) before the final LayerNorm (Pang et al., arXiv
2310.12973); the model is `modeling_vit_frozen_llm.py`. Copied next to saved weights for `trust_remote_code`."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import SubConfigSpec
from transformers.models.vit.configuration_vit import ViTConfig

from .configuration_frozen_llm import ILlamaFrozenLLMConfig, frozen_llm_config_from_dict


@strict
class ViTWithFrozenLLMConfig(ViTConfig):
    r"""
    A `ViTConfig` plus `frozen_llm` (an `ILlamaFrozenLLMConfig`, or a dict of its fields; without it the model is a
    plain ViT) and `drop_path_rate` (stochastic depth, as timm's ViT: block i drops its two residual branches
    with probability `linspace(0, drop_path_rate, num_hidden_layers)[i]`; DeiT and Pang et al. train with 0.1).
    """

    model_type = "vit_frozen_llm"
    sub_configs_defaults = {"frozen_llm": SubConfigSpec(ILlamaFrozenLLMConfig, optional=True)}

    frozen_llm: dict | ILlamaFrozenLLMConfig | None = None
    drop_path_rate: float | int = 0.0

    def __post_init__(self, **kwargs):
        self.frozen_llm = frozen_llm_config_from_dict(self.frozen_llm)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        super().validate_architecture()
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"ViTWithFrozenLLMConfig.drop_path_rate must lie in [0, 1), got {self.drop_path_rate}.")


__all__ = ["ViTWithFrozenLLMConfig"]
