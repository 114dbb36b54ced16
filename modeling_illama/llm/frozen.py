"""Attach frozen LLaMA decoder layer(s) (Pang et al.) to an iLLaMA or ViT model and load their tensors.

    model = ILlamaForImageClassification(load_preset("illama-tiny-224"))
    attach_frozen_llm(model, "/path/to/Llama-2-7b-hf")              # the last layer (31), stored with the model
    vit = vit_with_frozen_llm(ViTForImageClassification.from_pretrained(...), "/path/to/Llama-2-7b-hf")

Only the chosen layers' tensors are read, one at a time, from the (sharded) safetensors checkpoint.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..configuration_frozen_llm import ILlamaFrozenLLMConfig
from ..modeling_frozen_llm import ILlamaFrozenLLM, refresh_save_rules
from .safetensors_index import SafetensorsCheckpoint, find_layer_prefix, read_llama_config


def frozen_llm_config(
    llama_dir: str | os.PathLike, layer_indices: list[int] | None = None, store_weights: bool = True
) -> ILlamaFrozenLLMConfig:
    """The `config.frozen_llm` sub-config for layers of a LLaMA checkpoint (default: its last layer), after checking
    that every tensor of those layers is present with the shape its config implies (errors name them)."""
    llama_dir = os.path.abspath(os.fspath(llama_dir))
    llama_config = read_llama_config(llama_dir)
    layer = ILlamaFrozenLLMConfig.from_llama_config(llama_config)
    num_layers = llama_config.get("num_hidden_layers")
    if layer_indices is None:
        if not num_layers:
            raise ValueError(f"{llama_dir}/config.json has no num_hidden_layers; pass layer_indices explicitly")
        layer_indices = [num_layers - 1]
    layer_indices = [int(index) for index in layer_indices]
    out_of_range = [index for index in layer_indices if index < 0 or (num_layers and index >= num_layers)]
    if out_of_range:
        raise ValueError(f"layer indices {out_of_range} out of range for a {num_layers}-layer LLaMA at {llama_dir}")
    with SafetensorsCheckpoint(llama_dir) as checkpoint:
        prefix = find_layer_prefix(checkpoint)
        check_frozen_layers(checkpoint, prefix, layer_indices, layer)
    return ILlamaFrozenLLMConfig.from_llama_config(
        llama_config,
        layer_indices=layer_indices,
        source_path=llama_dir,
        source_prefix=prefix,
        store_weights=bool(store_weights),
    )


def expected_layer_shapes(layer: ILlamaFrozenLLMConfig) -> dict[str, tuple[int, ...]]:
    """{name inside a decoder layer: shape} implied by the LLaMA layer fields."""
    hidden, inner = layer.hidden_size, layer.intermediate_size
    q_rows = layer.num_attention_heads * layer.head_dim
    kv_rows = layer.num_key_value_heads * layer.head_dim
    shapes = {
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_rows, hidden),
        "self_attn.k_proj.weight": (kv_rows, hidden),
        "self_attn.v_proj.weight": (kv_rows, hidden),
        "self_attn.o_proj.weight": (hidden, q_rows),
        "mlp.gate_proj.weight": (inner, hidden),
        "mlp.up_proj.weight": (inner, hidden),
        "mlp.down_proj.weight": (hidden, inner),
    }
    if layer.attention_bias:
        shapes.update({f"self_attn.{n}_proj.bias": (r,) for n, r in zip("qkv", (q_rows, kv_rows, kv_rows))})
        shapes["self_attn.o_proj.bias"] = (hidden,)
    if layer.mlp_bias:
        shapes.update({"mlp.gate_proj.bias": (inner,), "mlp.up_proj.bias": (inner,), "mlp.down_proj.bias": (hidden,)})
    return shapes


def check_frozen_layers(
    checkpoint: SafetensorsCheckpoint, prefix: str, layer_indices: list[int], layer: ILlamaFrozenLLMConfig
):
    """Refuse missing or mis-shaped layer tensors, naming each one (reads only the shard headers)."""
    missing, wrong = [], []
    for index in layer_indices:
        for name, shape in expected_layer_shapes(layer).items():
            key = f"{prefix}{index}.{name}"
            if key not in checkpoint:
                missing.append(key)
            elif checkpoint.shape(key) != shape:
                wrong.append(f"{key} {checkpoint.shape(key)} (expected {shape})")
    if missing:
        raise ValueError(f"the LLaMA checkpoint at {checkpoint.path!r} lacks {', '.join(missing)}")
    if wrong:
        raise ValueError(f"mis-shaped tensors in the LLaMA checkpoint at {checkpoint.path!r}: {'; '.join(wrong)}")


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def attach_frozen_llm(
    model, llama_dir: str | os.PathLike, layer_indices: list[int] | None = None, store_weights: bool = True
) -> ILlamaFrozenLLM:
    """Insert frozen LLaMA layer(s) into `model` (an iLLaMA or ViTWithFrozenLLM model, base or classifier),
    read their tensors, record the reference and checksum in `model.config.frozen_llm`, and return the module.

    With `store_weights=False`, `save_pretrained` leaves the frozen tensors out and `from_pretrained` reads them
    again from `llama_dir` (checking the checksum)."""
    base = model.base_model
    if not hasattr(base, "frozen_llm"):
        raise TypeError(f"{type(base).__name__} has no frozen_llm slot; use an iLLaMA or ViTWithFrozenLLM model")
    settings = frozen_llm_config(llama_dir, layer_indices, store_weights)
    model.config.frozen_llm = settings
    device, dtype = _model_device_dtype(model)
    with torch.device(device):
        module = ILlamaFrozenLLM(model.config).to(dtype)
    for adapter in (module.input_projection, module.output_projection):
        nn.init.trunc_normal_(adapter.weight, std=model.config.initializer_range)
    settings.checksum = module.load_frozen_weights()
    module._is_hf_initialized = True
    base.frozen_llm = module
    refresh_save_rules(model)
    return module


def vit_with_frozen_llm(
    vit_model, llama_dir: str | os.PathLike, layer_indices: list[int] | None = None, store_weights: bool = True
):
    """A `ViTWithFrozenLLMForImageClassification` holding the weights of `vit_model` (a Transformers
    ViTForImageClassification, e.g. a DeiT checkpoint of the ViT architecture) plus frozen LLaMA layer(s)."""
    from ..modeling_vit_frozen_llm import ViTWithFrozenLLMConfig, ViTWithFrozenLLMForImageClassification

    fields = vit_model.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        fields.pop(key, None)
    config = ViTWithFrozenLLMConfig(**fields)
    config._attn_implementation = vit_model.config._attn_implementation
    device, dtype = _model_device_dtype(vit_model)
    model = ViTWithFrozenLLMForImageClassification(config).to(device=device, dtype=dtype)
    missing, unexpected = model.load_state_dict(vit_model.state_dict(), strict=False)
    if unexpected or missing:
        raise ValueError(
            f"{type(vit_model).__name__} does not match ViTWithFrozenLLM: missing {missing}, unexpected {unexpected}"
        )
    attach_frozen_llm(model, llama_dir, layer_indices, store_weights)
    return model
