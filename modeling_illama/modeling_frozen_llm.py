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
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN

from .configuration_frozen_llm import ILlamaFrozenLLMConfig
from .frozen_llm_source import copy_source_tensors
from .modeling_illama import ILlamaRMSNorm


class ILlamaFrozenLLMAttention(nn.Module):
    """LLaMA self-attention applied bidirectionally: no rotary embedding, no mask (grouped k/v heads allowed)."""

    def __init__(self, config: ILlamaFrozenLLMConfig):
        super().__init__()
        hidden, bias = config.hidden_size, config.attention_bias
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, num_tokens, _ = hidden_states.shape
        shape = (batch_size, num_tokens, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        groups = self.num_heads // self.num_key_value_heads
        if groups > 1:
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
        attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False)
        attn_output = attn_output.transpose(1, 2).reshape(batch_size, num_tokens, -1)
        return self.o_proj(attn_output)


class ILlamaFrozenLLMMLP(nn.Module):
    """LLaMA's gated MLP: down(act(gate x) * up x)."""

    def __init__(self, config: ILlamaFrozenLLMConfig):
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class ILlamaFrozenLLMLayer(nn.Module):
    """One LLaMA decoder layer, with the parameter names of transformers' LlamaDecoderLayer."""

    def __init__(self, config: ILlamaFrozenLLMConfig):
        super().__init__()
        self.input_layernorm = ILlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = ILlamaFrozenLLMAttention(config)
        self.post_attention_layernorm = ILlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = ILlamaFrozenLLMMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class ILlamaFrozenLLM(nn.Module):
    """Adapters around frozen LLaMA decoder layer(s) (see the module docstring); `forward(hidden_states)` keeps
    the shape (batch, tokens, D). `config` is the parent model's config; the settings are `config.frozen_llm`."""

    def __init__(self, config):
        super().__init__()
        self.frozen_config = settings = config.frozen_llm
        self.input_projection = nn.Linear(config.hidden_size, settings.hidden_size, bias=False)
        self.layers = nn.ModuleList([ILlamaFrozenLLMLayer(settings) for _ in settings.layer_indices])
        self.output_norm = ILlamaRMSNorm(settings.hidden_size, eps=settings.output_norm_eps, constant_weight=True)
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
                if isinstance(module, ILlamaRMSNorm):
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


__all__ = ["ILlamaFrozenLLM", "refresh_save_rules"]
