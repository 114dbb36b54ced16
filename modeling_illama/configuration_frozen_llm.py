"""Configuration of the frozen LLaMA layer(s) inserted after the last vision block (Pang et al., "Frozen
Transformers in Language Models Are Effective Visual Encoder Layers", arXiv 2310.12973).

A sub-config, nested as `frozen_llm` in `ILlamaConfig` and `ViTWithFrozenLLMConfig` (like the `text_config` of a
Transformers vision-language model); `config.json` may also hold the older untyped form
`{"llm_config": {...LLaMA layer fields...}, "layer_indices": [...], ...}`, which loads into the same class.
"""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

# the LlamaConfig fields that describe one decoder layer
LLAMA_LAYER_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
)
_LEGACY_KEYS = ("llm_config", "layer_indices", "source_path", "source_prefix", "checksum", "store_weights")


@strict
class ILlamaFrozenLLMConfig(PreTrainedConfig):
    r"""
    Frozen LLaMA decoder layer(s) between the last vision block and the final norm. The defaults are a 7B LLaMA's
    shapes (those of Transformers' `LlamaConfig`, the same for LLaMA-1 and -2 7B), its last layer (31) and eps
    1e-6: Pang et al.'s setting (layer 31 of LLaMA-1 7B, docs/LM4VE.md).

    Args:
        hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, head_dim, hidden_act,
        attention_bias, mlp_bias: the LLaMA layer's fields, as in `LlamaConfig` (`num_key_value_heads` defaults to
            `num_attention_heads`, `head_dim` to `hidden_size // num_attention_heads`).
        rms_norm_eps (`float`): epsilon of the LLaMA layer's own two RMSNorms.
        layer_indices (`list[int]`): which LLaMA layers, in order.
        source_path (`str`, *optional*): the Hugging Face LLaMA checkpoint folder (safetensors) the layers come from.
        source_prefix (`str`): key prefix of the decoder layers in that checkpoint.
        checksum (`str`, *optional*): `"sha256:..."` of the source tensors, checked whenever they are read again.
        store_weights (`bool`): True: the frozen tensors are saved with the model (a self-contained folder);
            False: only this reference is saved and the tensors are read from `source_path` on load.
        output_norm_eps (`float`): epsilon of the extra unit-weight RMSNorm after the LLaMA layers.
    """

    model_type = "illama_frozen_llm"
    base_config_key = "frozen_llm"

    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    layer_indices: list[int] | tuple[int, ...] = (31,)
    source_path: str | None = None
    source_prefix: str = "model.layers."
    checksum: str | None = None
    store_weights: bool = True
    output_norm_eps: float = 1e-6

    def __post_init__(self, **kwargs):
        legacy_layer = kwargs.pop("llm_config", None)
        if legacy_layer is not None:  # the older untyped form nested the LLaMA fields in "llm_config"
            missing = [key for key in LLAMA_LAYER_FIELDS if key not in legacy_layer]
            if missing:
                raise ValueError(
                    f"config.frozen_llm['llm_config'] lacks {missing} (expected fields: {list(LLAMA_LAYER_FIELDS)})"
                )
            for key in LLAMA_LAYER_FIELDS:
                setattr(self, key, legacy_layer[key])
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.layer_indices = list(self.layer_indices)
        super().__post_init__(**kwargs)

    @classmethod
    def from_llama_config(cls, llama_config: dict, **fields) -> "ILlamaFrozenLLMConfig":
        """From a LLaMA `config.json` (dict): its layer fields (this class's defaults for absent optional ones)."""
        missing = [
            key for key in ("hidden_size", "intermediate_size", "num_attention_heads") if key not in llama_config
        ]
        if missing:
            raise ValueError(f"the LLaMA config lacks {missing}; it must describe a LlamaForCausalLM / LlamaModel.")
        layer = {key: llama_config[key] for key in LLAMA_LAYER_FIELDS if llama_config.get(key) is not None}
        return cls(**layer, **fields)

    def validate_architecture(self):
        """Checked at construction and on save (huggingface_hub `@strict`)."""
        indices = self.layer_indices
        if not indices or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
            raise ValueError(
                f"config.frozen_llm.layer_indices must be a non-empty list of layer numbers, got {indices!r}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"config.frozen_llm: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        for name in ("rms_norm_eps", "output_norm_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config.frozen_llm.{name} must be positive, got {getattr(self, name)}")
        if not self.store_weights and not self.source_path:
            raise ValueError(
                "config.frozen_llm: store_weights=False needs a source_path to read the LLaMA layers from"
            )


def frozen_llm_config_from_dict(value):
    """`config.frozen_llm` as given (None, an ILlamaFrozenLLMConfig, or a dict of either form) -> the sub-config.
    The older form must name both 'llm_config' and 'layer_indices' and no other keys than it had."""
    if value is None or isinstance(value, ILlamaFrozenLLMConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"config.frozen_llm must be a dict or ILlamaFrozenLLMConfig, got {type(value).__name__}")
    if "llm_config" in value:
        unknown = set(value) - set(_LEGACY_KEYS) - {"output_norm_eps"}
        if unknown:
            raise ValueError(f"unknown config.frozen_llm keys {sorted(unknown)}")
        if "layer_indices" not in value:
            raise ValueError("config.frozen_llm needs 'llm_config' (the LLaMA layer fields) and 'layer_indices'")
    return ILlamaFrozenLLMConfig(**value)


__all__ = ["ILlamaFrozenLLMConfig"]
