"""Attach frozen LLaMA decoder layer(s) (Pang et al.) to an iLLaMA or ViT model and load their tensors.

    model = ILlamaForImageClassification(load_preset("illama-tiny-224"))
    attach_frozen_llm(model, "/path/to/Llama-2-7b-hf")              # the last layer (31), stored with the model
    vit = vit_with_frozen_llm(ViTForImageClassification.from_pretrained(...), "/path/to/Llama-2-7b-hf")

The LLaMA folder is a Hugging Face checkpoint (config.json + safetensors, any LLaMA version) or Meta's original
format (params.json + consolidated.*.pth; LLaMA-1 7B layer 31 is the paper's setting). Only the chosen layers'
tensors are read, one at a time. The layers' RMSNorm epsilon is the authors' 1e-6 unless `rms_norm_eps` says
otherwise (None: the checkpoint's own value, e.g. 1e-5 for LLaMA-2).
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from ..configuration_frozen_llm import ILlamaFrozenLLMConfig
from ..frozen_llm_source import update_checksum
from ..modeling_frozen_llm import ILlamaFrozenLLM, refresh_save_rules
from .meta_checkpoint import MetaLlamaCheckpoint, is_meta_checkpoint
from .safetensors_index import SafetensorsCheckpoint, find_layer_prefix, read_llama_config

AUTHORS_RMS_NORM_EPS = 1e-6  # hard-coded in the authors' LLaMA layer (LM4VisualEncoding), whatever the checkpoint


class HuggingFaceLlamaLayers:
    """Decoder-layer tensors of a Hugging Face LLaMA folder (config.json + safetensors), by (layer, name)."""

    format = "huggingface"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._config = read_llama_config(self.path)
        self.checkpoint = SafetensorsCheckpoint(self.path)
        self.prefix = find_layer_prefix(self.checkpoint)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.checkpoint.close()

    @property
    def num_layers(self) -> int | None:
        return self._config.get("num_hidden_layers")

    def llama_config(self) -> dict:
        return self._config

    def key(self, layer: int, name: str) -> str:
        return f"{self.prefix}{layer}.{name}"

    def __contains__(self, item: tuple[int, str]) -> bool:
        return self.key(*item) in self.checkpoint

    def shape(self, layer: int, name: str) -> tuple[int, ...]:
        return self.checkpoint.shape(self.key(layer, name))

    def get_tensor(self, layer: int, name: str) -> torch.Tensor:
        return self.checkpoint.get_tensor(self.key(layer, name))


class MetaLlamaLayers(MetaLlamaCheckpoint):
    """Decoder-layer tensors of a Meta-format LLaMA folder (params.json + consolidated.*.pth), by (layer, name)."""

    format = "meta"
    prefix = "layers."


def open_llama_layers(path: str | os.PathLike):
    """The layer reader for a LLaMA folder in either format (Meta's if it holds params.json + consolidated.*.pth)."""
    path = os.path.abspath(os.fspath(path))
    if is_meta_checkpoint(path):
        return MetaLlamaLayers(path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        found = sorted(os.listdir(path))[:20] if os.path.isdir(path) else "no such folder"
        raise FileNotFoundError(
            f"{path!r} is neither a Hugging Face LLaMA folder (config.json + safetensors) nor a Meta-format one "
            f"(params.json + consolidated.00.pth); found: {found}"
        )
    return HuggingFaceLlamaLayers(path)


def frozen_llm_config(
    llama_dir: str | os.PathLike,
    layer_indices: list[int] | None = None,
    store_weights: bool = True,
    rms_norm_eps: float | None = AUTHORS_RMS_NORM_EPS,
) -> ILlamaFrozenLLMConfig:
    """The `config.frozen_llm` sub-config for layers of a LLaMA checkpoint (default: its last layer), after checking
    that every tensor of those layers is present with the shape its config implies (errors name them).

    `llama_dir` is a Hugging Face folder or a Meta-format folder. `rms_norm_eps` sets the epsilon of the LLaMA
    layers' RMSNorms: the authors' 1e-6 by default (their code hard-codes it; LLaMA-2 checkpoints say 1e-5);
    None takes the checkpoint's own value."""
    llama_dir = os.path.abspath(os.fspath(llama_dir))
    with open_llama_layers(llama_dir) as source:
        llama_config = dict(source.llama_config())
        if rms_norm_eps is not None:
            if not rms_norm_eps > 0:
                raise ValueError(f"rms_norm_eps must be > 0 (or None for the checkpoint's value), got {rms_norm_eps}")
            llama_config["rms_norm_eps"] = float(rms_norm_eps)
        layer = ILlamaFrozenLLMConfig.from_llama_config(llama_config)
        num_layers = source.num_layers
        if layer_indices is None:
            if not num_layers:
                raise ValueError(f"{llama_dir} does not say its number of layers; pass layer_indices explicitly")
            layer_indices = [num_layers - 1]
        layer_indices = [int(index) for index in layer_indices]
        out_of_range = [index for index in layer_indices if index < 0 or (num_layers and index >= num_layers)]
        if out_of_range:
            raise ValueError(
                f"layer indices {out_of_range} out of range for a {num_layers}-layer LLaMA at {llama_dir}"
            )
        if not store_weights and source.format != "huggingface":
            raise ValueError(
                "store_weights=False (a reference to the LLaMA folder) needs a Hugging Face safetensors checkpoint; "
                f"{llama_dir} is in Meta's format: store the layers with the model, or convert the checkpoint"
            )
        check_frozen_layers(source, layer_indices, layer)
        prefix = source.prefix
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


def check_frozen_layers(source, layer_indices: list[int], layer: ILlamaFrozenLLMConfig) -> None:
    """Refuse missing or mis-shaped layer tensors, naming each one (reads only headers / mapped metadata)."""
    missing, wrong = [], []
    for index in layer_indices:
        for name, shape in expected_layer_shapes(layer).items():
            key = f"{source.prefix}{index}.{name}"
            if (index, name) not in source:
                missing.append(key)
            elif source.shape(index, name) != shape:
                wrong.append(f"{key} {source.shape(index, name)} (expected {shape})")
    if missing:
        raise ValueError(f"the LLaMA checkpoint at {source.path!r} lacks {', '.join(missing)}")
    if wrong:
        raise ValueError(f"mis-shaped tensors in the LLaMA checkpoint at {source.path!r}: {'; '.join(wrong)}")


@torch.no_grad()
def load_frozen_layers(module: ILlamaFrozenLLM, source) -> str:
    """Copy the configured LLaMA layers from `source` into `module`, one tensor at a time, and return their
    checksum (the same digest `ILlamaFrozenLLM.load_frozen_weights` recomputes from a Hugging Face folder)."""
    digest = hashlib.sha256()
    for position, index in enumerate(module.frozen_config.layer_indices):
        parameters = dict(module.layers[position].named_parameters())
        for name in sorted(parameters):
            tensor = source.get_tensor(index, name)
            update_checksum(digest, f"{index}.{name}", tensor)
            parameters[name].copy_(tensor.to(dtype=parameters[name].dtype, device=parameters[name].device))
            del tensor
    return "sha256:" + digest.hexdigest()


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def attach_frozen_llm(
    model,
    llama_dir: str | os.PathLike,
    layer_indices: list[int] | None = None,
    store_weights: bool = True,
    rms_norm_eps: float | None = AUTHORS_RMS_NORM_EPS,
) -> ILlamaFrozenLLM:
    """Insert frozen LLaMA layer(s) into `model` (an iLLaMA or ViTWithFrozenLLM model, base or classifier),
    read their tensors, record the reference and checksum in `model.config.frozen_llm`, and return the module.

    `llama_dir`: a Hugging Face LLaMA folder or Meta's format (params.json + consolidated.*.pth). `rms_norm_eps`:
    see `frozen_llm_config`. With `store_weights=False`, `save_pretrained` leaves the frozen tensors out and
    `from_pretrained` reads them again from `llama_dir` (checking the checksum)."""
    base = model.base_model
    if not hasattr(base, "frozen_llm"):
        raise TypeError(f"{type(base).__name__} has no frozen_llm slot; use an iLLaMA or ViTWithFrozenLLM model")
    settings = frozen_llm_config(llama_dir, layer_indices, store_weights, rms_norm_eps)
    model.config.frozen_llm = settings
    device, dtype = _model_device_dtype(model)
    with torch.device(device):
        module = ILlamaFrozenLLM(model.config).to(dtype)
    for adapter in (module.input_projection, module.output_projection):
        nn.init.trunc_normal_(adapter.weight, std=model.config.initializer_range)
    with open_llama_layers(settings.source_path) as source:
        settings.checksum = load_frozen_layers(module, source)
    module._is_hf_initialized = True
    base.frozen_llm = module
    refresh_save_rules(model)
    return module


def vit_to_frozen_llm_model(vit_model, **config_changes):
    """A `ViTWithFrozenLLMForImageClassification` (no frozen layer yet) holding the weights of `vit_model`, a
    Transformers ViTForImageClassification (e.g. a DeiT checkpoint of the ViT architecture). `config_changes`
    (e.g. `drop_path_rate=0.1`) are set on the new config."""
    from ..modeling_vit_frozen_llm import ViTWithFrozenLLMConfig, ViTWithFrozenLLMForImageClassification

    fields = vit_model.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        fields.pop(key, None)
    config = ViTWithFrozenLLMConfig(**{**fields, **config_changes})
    config._attn_implementation = vit_model.config._attn_implementation
    device, dtype = _model_device_dtype(vit_model)
    model = ViTWithFrozenLLMForImageClassification(config).to(device=device, dtype=dtype)
    missing, unexpected = model.load_state_dict(vit_model.state_dict(), strict=False)
    if unexpected or missing:
        raise ValueError(
            f"{type(vit_model).__name__} does not match ViTWithFrozenLLM: missing {missing}, unexpected {unexpected}"
        )
    return model


def vit_with_frozen_llm(
    vit_model,
    llama_dir: str | os.PathLike,
    layer_indices: list[int] | None = None,
    store_weights: bool = True,
    rms_norm_eps: float | None = AUTHORS_RMS_NORM_EPS,
):
    """A `ViTWithFrozenLLMForImageClassification` holding the weights of `vit_model` (a Transformers
    ViTForImageClassification, e.g. a DeiT checkpoint of the ViT architecture) plus frozen LLaMA layer(s)."""
    model = vit_to_frozen_llm_model(vit_model)
    attach_frozen_llm(model, llama_dir, layer_indices, store_weights, rms_norm_eps)
    return model
