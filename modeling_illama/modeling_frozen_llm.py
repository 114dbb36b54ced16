"""Frozen LLaMA decoder layer(s) as a visual encoder layer (Pang et al., "Frozen Transformers in Language Models
Are Effective Visual Encoder Layers", arXiv 2310.12973).

Placed after the last vision block and before the final norm:

    Linear(D -> D_llm, no bias) -> frozen LLaMA decoder layer(s), bidirectional, no rotary, no mask
    -> unit-weight RMSNorm (eps 1e-6, never loaded from the LLM) -> Linear(D_llm -> D, no bias)

There is no skip connection around the chain. The LLaMA layers keep their own two RMSNorms and are frozen
(`requires_grad=False`), but gradients flow through them to the adapters and the earlier blocks.

`config.frozen_llm` is a dict:

    llm_config     the LLaMA fields needed to build one decoder layer: hidden_size, intermediate_size,
                   num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps, hidden_act,
                   attention_bias, mlp_bias
    layer_indices  which LLaMA layers, in order (e.g. [31], the last layer of a 7B model)
    source_path    the Hugging Face LLaMA checkpoint folder (safetensors) the layers come from, or None
    source_prefix  the key prefix of the decoder layers in that checkpoint ("model.layers.")
    checksum       "sha256:..." of the source tensors, checked whenever they are read again
    store_weights  True (default): save the frozen tensors with the model (a self-contained folder);
                   False: save only this reference and read the tensors from `source_path` on load
    output_norm_eps  epsilon of the extra unit-weight RMSNorm (1e-6)

This file is copied next to saved weights for `trust_remote_code`: it imports only torch, transformers and
safetensors (a dependency of transformers).
"""

import hashlib
import json
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN

LLM_CONFIG_FIELDS = (
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
FROZEN_LLM_DEFAULTS = {
    "source_path": None,
    "source_prefix": "model.layers.",
    "checksum": None,
    "store_weights": True,
    "output_norm_eps": 1e-6,
}


def llm_layer_config(llama_config: dict) -> dict:
    """The decoder-layer fields of a LLaMA `config.json` (dict), with LLaMA's defaults for absent ones."""
    missing = [key for key in ("hidden_size", "intermediate_size", "num_attention_heads") if key not in llama_config]
    if missing:
        raise ValueError(f"the LLaMA config lacks {missing}; it must describe a LlamaForCausalLM / LlamaModel.")
    heads = llama_config["num_attention_heads"]
    return {
        "hidden_size": llama_config["hidden_size"],
        "intermediate_size": llama_config["intermediate_size"],
        "num_attention_heads": heads,
        "num_key_value_heads": llama_config.get("num_key_value_heads") or heads,
        "head_dim": llama_config.get("head_dim") or llama_config["hidden_size"] // heads,
        "rms_norm_eps": llama_config.get("rms_norm_eps", 1e-6),
        "hidden_act": llama_config.get("hidden_act", "silu"),
        "attention_bias": bool(llama_config.get("attention_bias", False)),
        "mlp_bias": bool(llama_config.get("mlp_bias", False)),
    }


def frozen_llm_settings(frozen_llm: dict) -> dict:
    """Validate `config.frozen_llm` and fill its defaults; errors name the offending key."""
    if not isinstance(frozen_llm, dict):
        raise TypeError(f"config.frozen_llm must be a dict, got {type(frozen_llm).__name__}")
    unknown = set(frozen_llm) - set(FROZEN_LLM_DEFAULTS) - {"llm_config", "layer_indices"}
    if unknown:
        raise ValueError(f"unknown config.frozen_llm keys {sorted(unknown)}")
    if "llm_config" not in frozen_llm or "layer_indices" not in frozen_llm:
        raise ValueError("config.frozen_llm needs 'llm_config' (the LLaMA layer fields) and 'layer_indices'")
    llm_config = dict(frozen_llm["llm_config"])
    missing = [key for key in LLM_CONFIG_FIELDS if key not in llm_config]
    if missing:
        raise ValueError(
            f"config.frozen_llm['llm_config'] lacks {missing} (expected fields: {list(LLM_CONFIG_FIELDS)})"
        )
    indices = frozen_llm["layer_indices"]
    if (
        not isinstance(indices, (list, tuple))
        or not indices
        or not all(isinstance(i, int) and i >= 0 for i in indices)
    ):
        raise ValueError(
            f"config.frozen_llm['layer_indices'] must be a non-empty list of layer numbers, got {indices!r}"
        )
    if llm_config["num_attention_heads"] % llm_config["num_key_value_heads"]:
        raise ValueError("llm_config: num_attention_heads must be a multiple of num_key_value_heads")
    settings = {**FROZEN_LLM_DEFAULTS, **frozen_llm, "llm_config": llm_config, "layer_indices": list(indices)}
    if not settings["store_weights"] and not settings["source_path"]:
        raise ValueError("config.frozen_llm: store_weights=False needs a source_path to read the LLaMA layers from")
    return settings


def rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm arithmetic: normalise in float32, cast back, then scale."""
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hidden_states.to(input_dtype)


class ILlamaFrozenLLMRMSNorm(nn.Module):
    """The LLaMA layer's own RMSNorm (its weight comes from the checkpoint)."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)


class ILlamaFrozenLLMAttention(nn.Module):
    """LLaMA self-attention applied bidirectionally: no rotary embedding, no mask (grouped k/v heads allowed)."""

    def __init__(self, llm_config: dict):
        super().__init__()
        hidden, bias = llm_config["hidden_size"], llm_config["attention_bias"]
        self.num_heads = llm_config["num_attention_heads"]
        self.num_key_value_heads = llm_config["num_key_value_heads"]
        self.head_dim = llm_config["head_dim"]
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

    def __init__(self, llm_config: dict):
        super().__init__()
        hidden, inner, bias = llm_config["hidden_size"], llm_config["intermediate_size"], llm_config["mlp_bias"]
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act_fn = ACT2FN[llm_config["hidden_act"]]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class ILlamaFrozenLLMLayer(nn.Module):
    """One LLaMA decoder layer, with the parameter names of transformers' LlamaDecoderLayer."""

    def __init__(self, llm_config: dict):
        super().__init__()
        eps = llm_config["rms_norm_eps"]
        self.input_layernorm = ILlamaFrozenLLMRMSNorm(llm_config["hidden_size"], eps)
        self.self_attn = ILlamaFrozenLLMAttention(llm_config)
        self.post_attention_layernorm = ILlamaFrozenLLMRMSNorm(llm_config["hidden_size"], eps)
        self.mlp = ILlamaFrozenLLMMLP(llm_config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


def _open_source(source_path: str):
    """{tensor name: shard file} of a safetensors checkpoint folder (sharded via its index json, or single)."""
    index_path = os.path.join(source_path, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as handle:
            return {name: os.path.join(source_path, shard) for name, shard in json.load(handle)["weight_map"].items()}
    single = os.path.join(source_path, "model.safetensors")
    if os.path.isfile(single):
        with safe_open(single, framework="pt") as handle:
            return dict.fromkeys(handle.keys(), single)
    raise FileNotFoundError(f"no model.safetensors(.index.json) in the frozen-LLM source folder {source_path!r}")


def iter_source_tensors(source_path: str, names: list[str]):
    """Yield `(name, tensor)` for each name, reading one tensor at a time from the (sharded) checkpoint."""
    if not source_path or not os.path.isdir(source_path):
        raise FileNotFoundError(
            f"frozen-LLM source folder {source_path!r} not found. The frozen LLaMA weights of this model are not "
            "stored with it (frozen_llm.store_weights=False): point config.frozen_llm['source_path'] at the LLaMA "
            "checkpoint, or save the model with store_weights=True."
        )
    files = _open_source(source_path)
    absent = [name for name in names if name not in files]
    if absent:
        raise KeyError(f"the LLaMA checkpoint at {source_path!r} lacks {absent}")
    handles = {}
    for name in names:
        if files[name] not in handles:
            try:  # pread (safetensors >= 0.8) keeps the bytes read out of this process's mappings
                handles[files[name]] = safe_open(files[name], framework="pt", backend="pread")
            except TypeError:
                handles[files[name]] = safe_open(files[name], framework="pt")
        yield name, handles[files[name]].get_tensor(name)


def update_checksum(digest, name: str, tensor: torch.Tensor) -> None:
    """Feed one tensor (name, dtype, shape, raw bytes) into a sha256 digest."""
    digest.update(f"{name}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
    digest.update(memoryview(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))


class ILlamaFrozenLLM(nn.Module):
    """Adapters around frozen LLaMA decoder layer(s) (see the module docstring); `forward(hidden_states)` keeps
    the shape (batch, tokens, D)."""

    def __init__(self, config):
        super().__init__()
        settings = frozen_llm_settings(config.frozen_llm)
        self.settings = settings
        llm_config = settings["llm_config"]
        llm_hidden = llm_config["hidden_size"]
        self.input_projection = nn.Linear(config.hidden_size, llm_hidden, bias=False)
        self.layers = nn.ModuleList([ILlamaFrozenLLMLayer(llm_config) for _ in settings["layer_indices"]])
        # the extra unit-weight RMSNorm: a constant, never loaded or trained
        self.register_buffer("output_norm_weight", torch.ones(llm_hidden), persistent=False)
        self.output_norm_eps = settings["output_norm_eps"]
        self.output_projection = nn.Linear(llm_hidden, config.hidden_size, bias=False)
        self.freeze()
        if not settings["store_weights"]:
            # read by PreTrainedModel.post_init of the parent (prefixed with this module's name)
            self._keys_to_ignore_on_save = set(self.frozen_parameter_names())
            self._keys_to_ignore_on_load_missing = [r"frozen_llm\.layers\."]

    def freeze(self) -> None:
        """Exclude the LLaMA layers from training (the adapters stay trainable)."""
        self.layers.requires_grad_(False)

    def frozen_parameter_names(self) -> list[str]:
        """Names (relative to this module) of the frozen LLaMA tensors."""
        return [f"layers.{name}" for name, _ in self.layers.named_parameters()]

    def source_names(self) -> dict[str, str]:
        """{name relative to this module: name in the LLaMA checkpoint}, in checksum order."""
        mapping = {}
        prefix = self.settings["source_prefix"]
        for position, source_index in enumerate(self.settings["layer_indices"]):
            for name in sorted(name for name, _ in self.layers[position].named_parameters()):
                mapping[f"layers.{position}.{name}"] = f"{prefix}{source_index}.{name}"
        return mapping

    @torch.no_grad()
    def load_frozen_weights(self, source_path: str | None = None, only_uninitialized: bool = False) -> str:
        """Read the LLaMA layer tensors one at a time from `source_path` (default: the configured one), copy them
        in (cast to the parameters' dtype) and return their checksum. A configured checksum must match.

        With `only_uninitialized`, tensors that `from_pretrained` already loaded are left alone."""
        source_path = source_path or self.settings["source_path"]
        parameters = dict(self.named_parameters())
        mapping = self.source_names()
        shapes_wrong, digest = [], hashlib.sha256()
        for (local_name, source_name), (_, tensor) in zip(
            mapping.items(), iter_source_tensors(source_path, list(mapping.values()))
        ):
            target = parameters[local_name]
            if tuple(tensor.shape) != tuple(target.shape):
                shapes_wrong.append(f"{source_name} {tuple(tensor.shape)} (expected {tuple(target.shape)})")
                continue
            update_checksum(digest, source_name.removeprefix(self.settings["source_prefix"]), tensor)
            value = tensor.to(dtype=target.dtype, device=target.device)
            if only_uninitialized:
                init.copy_(target, value)
            else:
                target.copy_(value)
        if shapes_wrong:
            raise ValueError(f"mis-shaped frozen-LLM tensors in {source_path!r}: {'; '.join(shapes_wrong)}")
        checksum = "sha256:" + digest.hexdigest()
        expected = self.settings["checksum"]
        if expected and checksum != expected:
            raise ValueError(
                f"the frozen-LLM tensors read from {source_path!r} have checksum {checksum}, but the model was built "
                f"with {expected}: the checkpoint at that path is not the one this model was trained with."
            )
        return checksum

    @torch.no_grad()
    def _illama_init_weights(self) -> None:
        """Called by the parent's `_init_weights` (fresh model, or after `from_pretrained`): restore the constant
        norm weight, read the LLaMA tensors from `source_path` if the checkpoint did not hold them, re-freeze."""
        self.output_norm_weight.fill_(1.0)
        frozen = list(self.layers.parameters())
        if any(param.device.type == "meta" for param in frozen):
            return
        needs_source = [param for param in frozen if not getattr(param, "_is_hf_initialized", False)]
        if needs_source and self.settings["source_path"]:
            self.load_frozen_weights(only_uninitialized=True)
        elif needs_source:
            for module in self.layers.modules():
                if isinstance(module, ILlamaFrozenLLMRMSNorm):
                    init.ones_(module.weight)
        self.freeze()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.input_projection(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        hidden_states = rms_norm(hidden_states, self.output_norm_weight, self.output_norm_eps)
        return self.output_projection(hidden_states)


__all__ = ["ILlamaFrozenLLM", "frozen_llm_settings", "llm_layer_config"]
