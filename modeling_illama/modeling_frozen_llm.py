"""Frozen LLaMA decoder layer(s) as a visual encoder layer (Pang et al., "Frozen Transformers in Language Models
Are Effective Visual Encoder Layers", arXiv 2310.12973).

Placed after the last vision block and before the final norm:

    Linear(D -> D_llm, no bias) -> frozen LLaMA decoder layer(s), bidirectional, no rotary, no mask
    -> unit-weight RMSNorm (eps `output_norm_eps`, never loaded from the LLM) -> Linear(D_llm -> D, no bias)

There is no skip connection around the chain. The LLaMA layers keep their own two RMSNorms and are frozen
(`requires_grad=False`), but gradients flow through them to the adapters and the earlier blocks. The settings
are `config.frozen_llm`, an `ILlamaFrozenLLMConfig` (configuration_frozen_llm.py).

This file is copied next to saved weights for `trust_remote_code`: it imports only torch, transformers and its
single-dot siblings.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm, eager_attention_forward

from .configuration_frozen_llm import ILlamaFrozenLLMConfig
from .frozen_llm_source import copy_source_tensors


class ILlamaFrozenLLMAttention(nn.Module):
    """LLaMA self-attention applied bidirectionally: no rotary embedding, no mask (grouped k/v heads allowed),
    on Transformers' attention function for `config._attn_implementation` (the sub-config's)."""

    def __init__(self, config: ILlamaFrozenLLMConfig):
        super().__init__()
        hidden, bias = config.hidden_size, config.attention_bias
        self.config = config
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(hidden, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, hidden, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(self, query, key, value, None, scaling=self.scaling, is_causal=False)
        return self.o_proj(attn_output.reshape(*hidden_states.shape[:-1], -1))


class ILlamaFrozenLLMLayer(nn.Module):
    """One LLaMA decoder layer (Transformers' LlamaRMSNorm and LlamaMLP; LlamaDecoderLayer's parameter names)."""

    def __init__(self, config: ILlamaFrozenLLMConfig):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = ILlamaFrozenLLMAttention(config)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class ILlamaFrozenLLM(nn.Module):
    """Adapters around frozen LLaMA decoder layer(s) (see the module docstring); `forward(hidden_states)` keeps
    the shape (batch, tokens, D). `config` is the parent model's config; the settings are `config.frozen_llm`."""

    def __init__(self, config):
        super().__init__()
        self.frozen_config = settings = config.frozen_llm
        if settings._attn_implementation is None:  # the parent's backend, unless the sub-config names its own
            settings._attn_implementation_internal = config._attn_implementation
        self.input_projection = nn.Linear(config.hidden_size, settings.hidden_size, bias=False)
        self.layers = nn.ModuleList([ILlamaFrozenLLMLayer(settings) for _ in settings.layer_indices])
        self.output_norm = LlamaRMSNorm(settings.hidden_size, eps=settings.output_norm_eps)
        del self.output_norm.weight  # a unit weight: never trained, saved or loaded
        self.output_norm.register_buffer("weight", torch.ones(settings.hidden_size), persistent=False)
        self.output_projection = nn.Linear(settings.hidden_size, config.hidden_size, bias=False)
        self.freeze()

    # THE save rule (read by PreTrainedModel.post_init of every parent, prefixed with this module's name, and
    # refreshed by `refresh_save_rules` after the module is attached to a built model): with store_weights the
    # frozen tensors are saved with the model; without, only config.frozen_llm's reference (source_path +
    # checksum) is, and loading reads the tensors from source_path again.
    @property
    def _keys_to_ignore_on_save(self) -> set[str]:
        return set() if self.frozen_config.store_weights else set(self.frozen_parameter_names())

    @property
    def _keys_to_ignore_on_load_missing(self) -> list[str]:
        return [] if self.frozen_config.store_weights else [r"frozen_llm\.layers\."]

    def freeze(self) -> None:
        """Exclude the LLaMA layers from training (the adapters stay trainable)."""
        self.layers.requires_grad_(False)

    def frozen_parameter_names(self) -> list[str]:
        """Names (relative to this module) of the frozen LLaMA tensors."""
        return [f"layers.{name}" for name, _ in self.layers.named_parameters()]

    def source_names(self) -> dict[str, str]:
        """{name relative to this module: name in the LLaMA checkpoint}, in checksum order."""
        mapping = {}
        prefix = self.frozen_config.source_prefix
        for position, source_index in enumerate(self.frozen_config.layer_indices):
            for name in sorted(name for name, _ in self.layers[position].named_parameters()):
                mapping[f"layers.{position}.{name}"] = f"{prefix}{source_index}.{name}"
        return mapping

    def load_frozen_weights(self, source_path: str | None = None, only_uninitialized: bool = False) -> str:
        """Read the LLaMA layer tensors one at a time from `source_path` (default: the configured one), copy them
        in (cast to the parameters' dtype) and return their checksum. A configured checksum must match.

        With `only_uninitialized`, tensors that `from_pretrained` already loaded are left alone."""
        settings = self.frozen_config
        return copy_source_tensors(
            dict(self.named_parameters()),
            self.source_names(),
            source_path or settings.source_path,
            settings.source_prefix,
            expected_checksum=settings.checksum,
            only_uninitialized=only_uninitialized,
        )

    @torch.no_grad()
    def _illama_init_weights(self) -> None:
        """Called by the parent's `_init_weights` (fresh model, or after `from_pretrained`): restore the constant
        norm weight, read the LLaMA tensors from `source_path` if the checkpoint did not hold them, re-freeze."""
        self.output_norm.weight.fill_(1.0)
        frozen = list(self.layers.parameters())
        if any(param.device.type == "meta" for param in frozen):
            return
        needs_source = [param for param in frozen if not getattr(param, "_is_hf_initialized", False)]
        if needs_source and self.frozen_config.source_path:
            self.load_frozen_weights(only_uninitialized=True)
        elif needs_source:
            for module in self.layers.modules():
                if isinstance(module, LlamaRMSNorm):
                    init.ones_(module.weight)
        self.freeze()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.input_projection(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.output_projection(self.output_norm(hidden_states))


def refresh_save_rules(model: nn.Module) -> None:
    """Re-collect every PreTrainedModel's save/load key rules from its ILlamaFrozenLLM modules (post_init
    collected them before a module attached later existed)."""
    for submodule in model.modules():
        if not isinstance(submodule, PreTrainedModel):
            continue
        ignore_save = {key for key in submodule._keys_to_ignore_on_save or () if "frozen_llm.layers." not in key}
        ignore_missing = {key for key in submodule._keys_to_ignore_on_load_missing or () if "frozen_llm" not in key}
        for name, module in submodule.named_modules():
            if isinstance(module, ILlamaFrozenLLM):
                ignore_save |= {f"{name}.{key}" for key in module._keys_to_ignore_on_save}
                ignore_missing |= set(module._keys_to_ignore_on_load_missing)
        submodule._keys_to_ignore_on_save = ignore_save
        submodule._keys_to_ignore_on_load_missing = ignore_missing


class FrozenLLMHostMixin:
    """For a PreTrainedModel whose config may hold `frozen_llm` layers (iLLaMA, the ViT variant)."""

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        # the frozen layers' sub-config follows the model's backend; set here, Transformers finds it already
        # set and does not warn that no sub-model (a PreTrainedModel) holds that sub-config
        if self.config.frozen_llm is not None and isinstance(attn_implementation, str):
            self.config.frozen_llm._attn_implementation_internal = attn_implementation
        return super().set_attn_implementation(attn_implementation, *args, **kwargs)

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # Private hook (docs/DESIGN.md, pinned by tests/test_modeling.py): for custom code Transformers skips a
        # module whose own tensors all loaded, which skips ILlamaFrozenLLM (it has none of its own), whose
        # `_illama_init_weights` reads the source tensors and re-freezes the loaded layers. `_init_weights`
        # writes through transformers.initialization, which leaves loaded tensors alone, so the skip is not needed.
        super()._initialize_weights(module, is_custom_code=False)


__all__ = ["FrozenLLMHostMixin", "ILlamaFrozenLLM", "refresh_save_rules"]
