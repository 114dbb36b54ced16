"""PyTorch iLLaMA: a LLaMA-style causal decoder used as a vision transformer (arXiv 2404.06773).

The authors' arithmetic is kept exactly (see docs/DESIGN.md): the class token is appended at the END of the
sequence, rotary embeddings pair dimensions (2i, 2i+1), and the soft mask multiplies the softmax output
without renormalising (`mask_style="post_softmax"`).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import AttentionInterface, PreTrainedModel
from transformers.models.beit.modeling_beit import BeitFPNNeck
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_illama import POST_SOFTMAX_PATHS, ILlamaConfig, to_pair
from .fused_attention_illama import (
    post_softmax_attention_paths,
    release_soft_attention_masks,
    soft_attention_mask,
)
from .fused_elementwise_illama import rms_norm, swiglu
from .modeling_frozen_llm import FrozenLLMHostMixin, ILlamaFrozenLLM


class ILlamaRMSNorm(nn.Module):
    """RMSNorm with Hugging Face's LlamaRMSNorm arithmetic (normalise in fp32, scale in the input dtype).

    The output is bit-identical to `weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)` in every dtype
    (fp32 is exactness-critical: the per-token statistics of a bf16 input are taken in fp32, as the authors'
    code does). With gradients, backward keeps the input and the per-token rsqrt only.

    With `constant_weight` the weight is a non-persistent buffer of ones (never trained, saved or loaded), as the
    extra norm after the frozen LLaMA layers."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, constant_weight: bool = False):
        super().__init__()
        if constant_weight:
            self.register_buffer("weight", torch.ones(hidden_size), persistent=False)
        else:
            self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class ILlamaPatchEmbeddings(nn.Module):
    """Non-overlapping patches -> tokens in raster order, with checks that name what was expected."""

    def __init__(self, config: ILlamaConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = to_pair(config.patch_size)
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, self.patch_size, stride=self.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.num_channels}, height, width), got {tuple(pixel_values.shape)}."
            )
        channels, height, width = pixel_values.shape[1:]
        if channels != self.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels but the model expects {self.num_channels}; convert images "
                "to RGB first (the image processor does this for grayscale, RGBA, CMYK and palette images)."
            )
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"Image size ({height}x{width}) is not a multiple of the patch size "
                f"({self.patch_size[0]}x{self.patch_size[1]})."
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


def interpolate_position_table(
    position_embeddings: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a (1, P + 1, D) table whose LAST row is the class token's, as the authors do for 224 -> 384:
    the patch rows are reshaped to the grid, resized bicubically (align_corners=False, no antialias),
    flattened, and the class row is appended again."""
    if tuple(old_grid) == tuple(new_grid):
        return position_embeddings
    dim = position_embeddings.shape[-1]
    patch_rows, cls_row = position_embeddings[:, :-1], position_embeddings[:, -1:]
    grid = patch_rows.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    patch_rows = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(position_embeddings.dtype)
    return torch.cat((patch_rows, cls_row), dim=1)


class ILlamaEmbeddings(nn.Module):
    """Patch tokens, then the class token APPENDED at the end, then the learned absolute position table."""

    def __init__(self, config: ILlamaConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = ILlamaPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        embeddings = self.patch_embeddings(pixel_values)
        height, width = pixel_values.shape[-2:]
        patch_h, patch_w = self.patch_embeddings.patch_size
        grid = (height // patch_h, width // patch_w)
        position_embeddings = self.position_embeddings
        if grid != self.config.grid_size:
            if not interpolate_pos_encoding:
                expected = to_pair(self.config.image_size)
                raise ValueError(
                    f"Input image size ({height}x{width}) doesn't match the model ({expected[0]}x{expected[1]}). "
                    "Resize the image, or pass interpolate_pos_encoding=True to resize the position embeddings."
                )
            position_embeddings = interpolate_position_table(position_embeddings, self.config.grid_size, grid)
        cls_tokens = self.cls_token.expand(embeddings.shape[0], -1, -1)
        embeddings = torch.cat((embeddings, cls_tokens), dim=1)
        return self.dropout(embeddings + position_embeddings)


def rotary_angles(num_tokens: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of t * theta^(-2i/d) for positions t = 0..N-1 and pairs i = 0..d/2-1, in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(num_tokens, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def _as_complex_pairs(states: torch.Tensor) -> torch.Tensor:
    """View the pairs (2i, 2i + 1) of the last dimension as complex numbers (float32), copying only if the
    strides do not allow a view (never for the q/k views of the fused qkv output: head_dim is even)."""
    pairs = states.float().unflatten(-1, (-1, 2))
    if not torch.compiler.is_compiling() and (pairs.storage_offset() % 2 or any(s % 2 for s in pairs.stride()[:-1])):
        pairs = pairs.clone(memory_format=torch.contiguous_format)  # offset 0 (contiguous() may keep an odd one)
    return torch.view_as_complex(pairs)


def apply_interleaved_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (2i, 2i + 1) of each head (Meta's pairing, not Transformers' rotate_half).

    states: (batch, heads, tokens, head_dim); cos, sin: (tokens, head_dim / 2). Computed in float32, as one
    complex multiplication (x_2i + i x_2i+1) * (cos + i sin): the same products and sums as the real form
    (even * cos - odd * sin, even * sin + odd * cos) in a single kernel, about 20x faster on CPU than
    four strided multiplications and a stack. Under torch.compile the real form, which inductor fuses.
    """
    if torch.compiler.is_compiling():
        # inductor generates no code for complex operators (it would fall back to eager kernels); the real form
        # in fp32 is what it fuses into one kernel with the casts around it
        even, odd = states.float().unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = cos.float(), sin.float()
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(states.dtype)
    rotated = torch.view_as_real(_as_complex_pairs(states) * torch.complex(cos.float(), sin.float()))
    return rotated.flatten(-2).to(states.dtype)


class ILlamaRotaryEmbedding(nn.Module):
    """1-D rotary table over the N = P + 1 sequence positions (class token at position P), in float32.

    The table of the configured resolution is one non-persistent int32 buffer holding the float32 bit patterns of
    (cos, sin) (restored by `_init_weights` after meta-device loading); `cos` / `sin` are float32 views of it.
    Casting the module (`model.to(torch.bfloat16)`, `.half()`, ...) touches floating-point tensors only, so the
    authors' float32 angles survive every cast and round trip with no hook on the cast, while device moves carry
    the table along. Other sequence lengths are computed on the fly.
    """

    def __init__(self, config: ILlamaConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.theta = float(config.rope_parameters["rope_theta"])
        self.set_table(*rotary_angles(config.num_patches + 1, self.head_dim, self.theta))

    @staticmethod
    def table_bits_of(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """(2, N, head_dim / 2) int32: the float32 bit patterns of cos and sin, the stored form of the table."""
        return torch.stack((cos, sin)).to(torch.float32).view(torch.int32)

    def set_table(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.register_buffer("table_bits", self.table_bits_of(cos, sin), persistent=False)

    @property
    def cos(self) -> torch.Tensor:
        return self.table_bits[0].view(torch.float32)

    @property
    def sin(self) -> torch.Tensor:
        return self.table_bits[1].view(torch.float32)

    def forward(self, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        # traced graphs (torch.compile, torch.export / ONNX) compute the table: a dtype view is not exportable
        if num_tokens == self.table_bits.shape[1] and not torch.compiler.is_compiling():
            return self.cos, self.sin
        return rotary_angles(num_tokens, self.head_dim, self.theta, device=self.table_bits.device)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, soft_mask_rate=1.0, **kwargs):
    """The reference arithmetic, returning the weights: softmax(QK^T * scale) * M (mask_style "post_softmax",
    the authors') or softmax(QK^T * scale + log M) ("renormalized"), M built from r; no padding mask."""
    style = module.config.mask_style
    mask = soft_attention_mask(key.shape[-2], soft_mask_rate, style, query.dtype, query.device)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None and style == "renormalized":
        attn_weights = attn_weights + mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    if mask is not None and style == "post_softmax":
        attn_weights = attn_weights * mask
    return torch.matmul(attn_weights, value).transpose(1, 2).contiguous(), attn_weights


def sdpa_attention_forward(module, query, key, value, attention_mask, scaling, soft_mask_rate=1.0, **kwargs):
    """The fastest exact path, no weights: for the post-softmax style at r < 1 the path
    `config.post_softmax_path` of fused_attention_illama.py ("auto": the measured rule table); otherwise SDPA
    (its causal kernel at r = 0, log M as its float mask for 0 < r < 1, no mask at r = 1)."""
    if soft_mask_rate < 1.0 and module.config.mask_style == "post_softmax":
        path = module.config.post_softmax_path
        attn_output = post_softmax_attention_paths(query, key, value, soft_mask_rate, scaling, path)
    else:
        rate, tokens = soft_mask_rate, key.shape[-2]
        mask = soft_attention_mask(tokens, rate, "renormalized", query.dtype, query.device) if rate > 0 else None
        attn_output = F.scaled_dot_product_attention(query, key, value, mask, is_causal=rate == 0.0, scale=scaling)
    return attn_output.transpose(1, 2).contiguous(), None


class ILlamaAttentionInterface(AttentionInterface):
    """Transformers' AttentionInterface with iLLaMA's functions only (each takes r as `soft_mask_rate`); "eager" is
    `eager_attention_forward`. Add a backend with `ILlamaAttentionInterface.register(name, function)`."""

    _global_mapping = {"sdpa": sdpa_attention_forward}


ALL_ATTENTION_FUNCTIONS = ILlamaAttentionInterface()


class ILlamaAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection ([q heads | k heads | v heads] rows) and rotary q, k.

    `soft_mask_rate` is r; with `last_token_only` only the last (class) token queries, and since M's last row is
    all ones that is plain attention (r = 1)."""

    def __init__(self, config: ILlamaConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(self, hidden_states, position_embeddings, soft_mask_rate=1.0, last_token_only=False, **kwargs):
        batch_size, num_tokens, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        cos, sin = position_embeddings
        key = apply_interleaved_rotary(key, cos, sin)
        if last_token_only:
            query, cos, sin, soft_mask_rate = query[:, :, -1:], cos[-1:], sin[-1:], 1.0
        query = apply_interleaved_rotary(query, cos, sin)

        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, query, key, value, None, scaling=self.scaling, soft_mask_rate=soft_mask_rate, **kwargs
        )
        return self.o_proj(attn_output.reshape(batch_size, query.shape[2], -1)), attn_weights


class ILlamaMLP(nn.Module):
    """SwiGLU without biases: down(silu(gate x) * up x). gate/up/down are the authors' fc1/fc3/fc2.

    With gradients the activation keeps gate x and up x only for backward (see `swiglu`)."""

    def __init__(self, config: ILlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(swiglu(self.gate_proj(hidden_states), self.up_proj(hidden_states)))


class ILlamaDropPath(nn.Module):
    """Stochastic depth (timm's `DropPath`): zero a residual branch for a whole sample with probability
    `drop_prob` during training, scaling the kept samples by 1 / (1 - drop_prob). Also used by the ViT variant."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self):
        return f"p={self.drop_prob}"


class ILlamaLayer(GradientCheckpointingLayer):
    """Pre-norm decoder block: x + DropPath(Attn(RMSNorm x)), then x + DropPath(SwiGLU(RMSNorm x))."""

    def __init__(self, config: ILlamaConfig, layer_idx: int):
        super().__init__()
        drop_rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu").tolist()
        self.input_layernorm = ILlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = ILlamaAttention(config, layer_idx)
        self.post_attention_layernorm = ILlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = ILlamaMLP(config)
        self.drop_path = ILlamaDropPath(drop_rates[layer_idx])

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        last_token_only: bool = False,
        **kwargs,
    ) -> torch.Tensor:
        """With `last_token_only`, keys and values come from every token but only the last (class) token is
        updated and returned, shape (batch, 1, D). `soft_mask_rate` (in kwargs) is r, for the attention."""
        attn_output, _ = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, last_token_only=last_token_only, **kwargs
        )
        if last_token_only:
            hidden_states = hidden_states[:, -1:]
        hidden_states = hidden_states + self.drop_path(attn_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.post_attention_layernorm(hidden_states)))
        return hidden_states


class ILlamaPreTrainedModel(FrozenLLMHostMixin, PreTrainedModel):
    config: ILlamaConfig
    config_class = ILlamaConfig
    base_model_prefix = "illama"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ILlamaEmbeddings", "ILlamaLayer"]
    # what every configuration runs: "eager" and "sdpa" (ILlamaAttentionInterface); no flash / flex kernel
    # computes the post-softmax mask of the default mask_style
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_record_outputs = {"hidden_states": ILlamaLayer, "attentions": ILlamaAttention}

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            # PyTorch's default Conv2d init, as in the authors' code
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, ILlamaRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, ILlamaEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
        elif isinstance(module, ILlamaRotaryEmbedding):
            cos, sin = rotary_angles(module.table_bits.shape[1], module.head_dim, module.theta)
            init.copy_(module.table_bits, module.table_bits_of(cos, sin))
        elif hasattr(module, "_illama_init_weights"):
            module._illama_init_weights()

    @property
    def soft_mask_rate(self) -> float:
        """The soft-mask rate r every layer uses now (training state, held by the base model). It starts at
        `config.soft_mask_rate`, the deployed value, which training never changes."""
        return self.base_model._soft_mask_rate

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`save_pretrained`, with `auto_map` entries for AutoModel and AutoBackbone besides the saved class's, so
        that every folder (trained, converted, hand-saved) also loads as a feature extractor through remote code
        (`AutoModel.from_pretrained(dir, trust_remote_code=True)`, `pipeline("image-feature-extraction")`)."""
        if self._auto_class is not None:  # registered: the modeling file is copied next to the weights
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": "modeling_illama.ILlamaModel",
                "AutoBackbone": "modeling_illama.ILlamaBackbone",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_soft_mask_rate(self, rate: float):
        """Set the soft-mask rate r (1 = bidirectional, 0 = causal) used by every layer from the next forward.
        The config keeps the deployed value: a model saved mid-training still loads at `config.soft_mask_rate`."""
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"soft mask rate must lie in [0, 1], got {rate}.")
        self.base_model._soft_mask_rate = rate

    def reset_soft_mask_rate(self):
        """Back to the deployed rate, `config.soft_mask_rate`."""
        self.set_soft_mask_rate(self.config.soft_mask_rate)

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides 1-D ones (timm convention): position table, class token."""
        return {name for name, _ in self.named_parameters() if name.endswith(("position_embeddings", "cls_token"))}

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by depth (timm convention, for layer-wise lr decay): embeddings, one group per layer
        with the final norm in the last one (timm's "previous group" ordinal), the unmatched classifier on top.
        `coarse` is accepted for timm's API."""
        prefix = "" if self.base_model is self else rf"{self.base_model_prefix}\."
        blocks = [(rf"^{prefix}layers\.(\d+)", None), (rf"^{prefix}norm", (99999,))]
        return {"stem": rf"^{prefix}embeddings", "blocks": blocks}

    def set_post_softmax_path(self, path: str):
        """Force how the "sdpa" backend computes the post-softmax mask: "auto" (default: the fastest exact path
        for the device, dtype, sequence length and grad mode), "materialised", "fused" or "recompute"."""
        if path not in POST_SOFTMAX_PATHS:
            raise ValueError(f"post_softmax_path must be one of {POST_SOFTMAX_PATHS}, got {path!r}.")
        self.config.post_softmax_path = path

    def resize_position_embeddings(self, image_size: int | tuple[int, int]):
        """Permanently change the resolution: bicubic resize of the patch rows of the position table (class row
        kept aside) and a new rotary table for the new sequence length. Updates `config.image_size`."""
        base = self.base_model
        new_size = to_pair(image_size)
        patch = to_pair(self.config.patch_size)
        if new_size[0] % patch[0] or new_size[1] % patch[1]:
            raise ValueError(f"image_size {new_size} must be a multiple of patch_size {patch}.")
        new_grid = (new_size[0] // patch[0], new_size[1] // patch[1])
        table = base.embeddings.position_embeddings
        resized = interpolate_position_table(table.data, self.config.grid_size, new_grid)
        base.embeddings.position_embeddings = nn.Parameter(resized, requires_grad=table.requires_grad)
        self.config.image_size = new_size if new_size[0] != new_size[1] else new_size[0]
        cos, sin = rotary_angles(resized.shape[1], base.rotary_emb.head_dim, base.rotary_emb.theta, table.device)
        base.rotary_emb.set_table(cos, sin)


class ILlamaModel(ILlamaPreTrainedModel):
    """The iLLaMA backbone. `pooler_output` is the final-normed LAST token (the class token)."""

    def __init__(self, config: ILlamaConfig):
        super().__init__(config)
        self.embeddings = ILlamaEmbeddings(config)
        self.rotary_emb = ILlamaRotaryEmbedding(config)
        self.layers = nn.ModuleList([ILlamaLayer(config, i) for i in range(config.num_hidden_layers)])
        self.frozen_llm = ILlamaFrozenLLM(config) if config.frozen_llm else None
        self.norm = ILlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self._soft_mask_rate = float(config.soft_mask_rate)  # see ILlamaPreTrainedModel.soft_mask_rate
        self.post_init()

    def get_input_embeddings(self) -> ILlamaPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        pooled_only: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        interpolate_pos_encoding (`bool`, *optional*):
            Resize the position table (and recompute the rotary table) for inputs of another resolution.
        pooled_only (`bool`, defaults to `False`):
            Compute the last block for the class token only (keys and values still come from every token).
            Exact for `pooler_output`; `last_hidden_state` then holds just that token.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required.")
        if (
            kwargs.get("output_attentions", self.config.output_attentions)
            and self.config._attn_implementation != "eager"
        ):
            raise ValueError(
                f"output_attentions=True needs the 'eager' attention backend (this model uses "
                f"{self.config._attn_implementation!r}, which returns no weights): call "
                "model.set_attn_implementation('eager') or load with attn_implementation='eager'."
            )
        expected_dtype = self.embeddings.patch_embeddings.projection.weight.dtype
        if pixel_values.dtype != expected_dtype:
            pixel_values = pixel_values.to(expected_dtype)

        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        position_embeddings = self.rotary_emb(hidden_states.shape[1])
        pooled_only = pooled_only and self.frozen_llm is None
        for index, layer in enumerate(self.layers):
            last_token_only = pooled_only and index == len(self.layers) - 1
            hidden_states = layer(
                hidden_states, position_embeddings, last_token_only, soft_mask_rate=self._soft_mask_rate, **kwargs
            )
        if self.frozen_llm is not None:
            hidden_states = self.frozen_llm(hidden_states)
        release_soft_attention_masks(keep_tokens=self.config.num_patches + 1)  # M at other sizes is not kept

        sequence_output = self.norm(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=sequence_output[:, -1])


class ILlamaForImageClassification(ILlamaPreTrainedModel):
    """iLLaMA with a linear head on the pooled class token. `num_labels=0` returns the pooled features as logits."""

    def __init__(self, config: ILlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.illama = ILlamaModel(config)
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
        labels (`torch.LongTensor` of shape `(batch_size,)` or float `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot floats (multi-label) or targets (regression, `num_labels == 1`),
            following `config.problem_type`.
        """
        wants_all_tokens = any(
            kwargs.get(flag, getattr(self.config, flag, False))
            for flag in ("output_hidden_states", "output_attentions")
        )
        outputs = self.illama(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=not wants_all_tokens, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)

        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)

        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class ILlamaBackbone(BackboneMixin, ILlamaPreTrainedModel):
    """iLLaMA as a Transformers backbone (`AutoBackbone`, e.g. inside `UperNetForSemanticSegmentation`).

    Stages are `stem` (the embeddings) and `stage1 .. stageL` (the output of each block, before the final
    norm). A feature map is a stage's PATCH tokens, the class token (the LAST token) dropped, laid out as
    `(batch, hidden_size, height / patch, width / patch)`. Any input whose sides are multiples of the patch
    works: the position table is interpolated and the rotary table recomputed for it.

    Attention uses the config's soft-mask rate, the deployed r = 0 of a trained model: causal, so the patch
    in row-major position i sees only patches 0..i (the top-left patch sees itself only). Set r = 1 with
    `backbone.set_soft_mask_rate(1.0)` (or `soft_mask_rate=1.0` in the config) for bidirectional attention,
    where every patch sees the whole image; a classifier trained to r = 0 then computes different features,
    so choose r = 1 when the backbone is trained (or fine-tuned) with it.

    With `config.add_fpn` the four selected maps go through BEiT's neck and come out at 4x, 2x, 1x and 0.5x
    their resolution (strides patch/4, patch/2, patch, 2 patch), the pyramid UperNet expects.
    """

    def __init__(self, config: ILlamaConfig):
        super().__init__(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.illama = ILlamaModel(config)
        self.fpn = BeitFPNNeck(config) if config.add_fpn else nn.Identity()
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (nn.ConvTranspose2d, nn.BatchNorm2d)):  # the neck: Transformers' default init
            PreTrainedModel._init_weights(self, module)
        else:
            super()._init_weights(module)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BackboneOutput:
        outputs = self.illama(pixel_values, interpolate_pos_encoding=True, **kwargs)
        patch_h, patch_w = self.illama.embeddings.patch_embeddings.patch_size
        grid = (pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w)
        feature_maps = tuple(
            hidden_state[:, :-1].transpose(1, 2).reshape(hidden_state.shape[0], -1, *grid)
            for stage, hidden_state in zip(self.stage_names, outputs.hidden_states)
            if stage in self.out_features
        )
        return BackboneOutput(
            feature_maps=self.fpn(feature_maps), hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "ILlamaBackbone",
    "ILlamaForImageClassification",
    "ILlamaModel",
    "ILlamaPreTrainedModel",
    "interpolate_position_table",
]
