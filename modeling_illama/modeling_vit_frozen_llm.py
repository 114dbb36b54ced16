"""Transformers' ViT (and DeiT checkpoints of the ViT architecture) with frozen LLaMA layer(s) between the last
block and the final LayerNorm: the setting of Pang et al. (arXiv 2310.12973). See `modeling_frozen_llm.py`.

The parameter names are those of `ViTForImageClassification` plus `vit.frozen_llm.*`, so a ViT/DeiT checkpoint's
state dict loads into this model unchanged. This file is copied next to saved weights for `trust_remote_code`.
"""

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.vit.modeling_vit import ViTEmbeddings, ViTLayer, ViTPooler, ViTPreTrainedModel
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_vit_frozen_llm import ViTWithFrozenLLMConfig
from .modeling_frozen_llm import FrozenLLMHostMixin, ILlamaFrozenLLM
from .modeling_illama import ILlamaDropPath


class ViTWithFrozenLLMLayer(ViTLayer):
    """`ViTLayer` (same parameters and names) with stochastic depth on its attention and MLP branches."""

    def __init__(self, config: ViTWithFrozenLLMConfig, drop_path: float = 0.0):
        super().__init__(config)
        self.drop_path = ILlamaDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(self.dropout(attention_output))
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        return hidden_states + self.drop_path(self.dropout(mlp_output))


def drop_path_rates(config: ViTWithFrozenLLMConfig) -> list[float]:
    """Per-block drop probabilities, `torch.linspace(0, rate, depth)` as in timm's VisionTransformer."""
    return torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu").tolist()


class ViTWithFrozenLLMPreTrainedModel(FrozenLLMHostMixin, ViTPreTrainedModel):
    config: ViTWithFrozenLLMConfig
    config_class = ViTWithFrozenLLMConfig
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides 1-D ones (timm / DeiT convention): position table, class
        token."""
        return {name for name, _ in self.named_parameters() if name.endswith(("position_embeddings", "cls_token"))}

    @torch.no_grad()
    def _init_weights(self, module):
        if hasattr(module, "_illama_init_weights"):
            module._illama_init_weights()
        else:
            super()._init_weights(module)


class ViTWithFrozenLLMModel(ViTWithFrozenLLMPreTrainedModel):
    """`ViTModel` (same submodules and names) whose final LayerNorm is preceded by the frozen-LLM chain."""

    def __init__(self, config: ViTWithFrozenLLMConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([ViTWithFrozenLLMLayer(config, rate) for rate in drop_path_rates(config)])
        self.frozen_llm = ILlamaFrozenLLM(config) if config.frozen_llm else None
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if pixel_values is None:
            raise ValueError("pixel_values is required.")
        expected_dtype = self.embeddings.patch_embeddings.projection.weight.dtype
        if pixel_values.dtype != expected_dtype:
            pixel_values = pixel_values.to(expected_dtype)
        hidden_states = self.embeddings(
            pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding
        )
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        if self.frozen_llm is not None:
            hidden_states = self.frozen_llm(hidden_states)
        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


class ViTWithFrozenLLMForImageClassification(ViTWithFrozenLLMPreTrainedModel):
    """`ViTForImageClassification` (class token -> linear head) with the frozen-LLM chain before the final norm."""

    def __init__(self, config: ViTWithFrozenLLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTWithFrozenLLMModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices (or targets, following
            `config.problem_type`).
        """
        outputs = self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(outputs.last_hidden_state[:, 0, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "ViTWithFrozenLLMForImageClassification",
    "ViTWithFrozenLLMModel",
    "ViTWithFrozenLLMPreTrainedModel",
]
