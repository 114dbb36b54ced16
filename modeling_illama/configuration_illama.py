"""iLLaMA model configuration.

This file is copied next to saved models for `trust_remote_code` and is the first of them Transformers imports:
it checks the installed transformers version before importing anything that older releases lack.
"""

import math

import transformers
from packaging.version import Version

TRANSFORMERS_MIN_VERSION = "5.20.0"  # the oldest release the package's tests pass on (`make test-oldest`)


def check_transformers_version(installed: str | None = None):
    """One-line ImportError when the installed transformers is older than `TRANSFORMERS_MIN_VERSION` or not 5.x."""
    installed = installed or transformers.__version__
    if not Version(TRANSFORMERS_MIN_VERSION) <= Version(installed) < Version("6"):
        raise ImportError(
            f"iLLaMA needs transformers>={TRANSFORMERS_MIN_VERSION},<6 but transformers {installed} is installed: "
            f"pip install 'transformers>={TRANSFORMERS_MIN_VERSION},<6'"
        )


check_transformers_version()

from huggingface_hub.dataclasses import strict  # noqa: E402
from transformers.backbone_utils import BackboneConfigMixin  # noqa: E402
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec  # noqa: E402

from .configuration_frozen_llm import ILlamaFrozenLLMConfig, frozen_llm_config_from_dict  # noqa: E402

MASK_STYLES = ("post_softmax", "renormalized")
POST_SOFTMAX_PATHS = ("auto", "materialised", "fused", "recompute")


def swiglu_hidden_size(hidden_size: int) -> int:
    """The authors' SwiGLU width: 256 * ceil(int(2 * 4D / 3) / 256)."""
    return 256 * math.ceil(int(2 * 4 * hidden_size / 3) / 256)


def to_pair(value) -> tuple[int, int]:
    """An int or a (height, width) pair as a pair of ints (image and patch sizes)."""
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a (height, width) pair, got {value!r}")
    return (int(value[0]), int(value[1]))


@strict
class ILlamaConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of an iLLaMA vision decoder (Wang et al., "Adapting LLaMA Decoder to Vision Transformer").

    The defaults give iLLaMA-Tiny at 224 px. Presets for every released size live in `configuration/models/`
    (`modeling_illama.load_preset`).

    Args:
        image_size (`int` or `(height, width)`): input resolution; a multiple of `patch_size`.
        patch_size (`int` or `(height, width)`): side of the square (or rectangular) patches.
        num_channels (`int`): input channels.
        hidden_size (`int`): token width D.
        num_hidden_layers (`int`): number of decoder blocks.
        num_attention_heads (`int`): heads; D / heads must be an even head dim (rotary pairs).
        intermediate_size (`int`, *optional*): SwiGLU width; derived as 256 * ceil(int(8D/3) / 256) when omitted.
        rms_norm_eps (`float`): RMSNorm epsilon.
        rope_parameters (`dict`): rotary settings, `{"rope_type": "default", "rope_theta": 10000.0}`.
        qkv_bias (`bool`): bias on the fused qkv and output projections.
        drop_path_rate (`float`): stochastic depth, linearly increasing from 0 over the blocks.
        hidden_dropout_prob (`float`): dropout after adding the position embedding.
        initializer_range (`float`): std of the truncated normal init.
        soft_mask_rate (`float`): the deployed r in [0, 1] (1 = bidirectional, 0 = causal; 0 for released
            weights), the rate a model starts with when built or loaded. Training changes only the model's
            runtime rate (`model.set_soft_mask_rate`), never this field.
        mask_style (`str`): `"post_softmax"` (the authors' arithmetic: the mask multiplies the softmax
            output without renormalising; required by the released weights) or `"renormalized"` (standard
            causal attention at r = 0, softmax(S + log M) in general). They are different models.
        post_softmax_path (`str`): how the "sdpa" backend computes the post-softmax mask, all exact:
            `"auto"` (the fastest path measured for the device, dtype, sequence length and grad mode),
            `"materialised"` (N x N weights, kept per layer for the backward), `"fused"` (fused kernels that
            return the log-sum-exp, forward and backward) or `"recompute"` (nothing N x N kept for the
            backward: the weights are recomputed there). See `fused_attention_illama.py`.
        frozen_llm (`ILlamaFrozenLLMConfig` or `dict`, *optional*): frozen LLaMA decoder layers inserted after
            the last block (see `configuration_frozen_llm.py`, `modeling_frozen_llm.py`).
        out_features (`list[str]`, *optional*), out_indices (`list[int]`, *optional*): the stages
            `ILlamaBackbone` returns, among `stage_names` = `["stem", "stage1", ..., "stageL"]` (stem = the
            embeddings, stageN = the output of block N); default the last stage.
        add_fpn (`bool`): `ILlamaBackbone` turns its 4 feature maps (all at 1/patch) into a pyramid at 4x, 2x,
            1x and 0.5x their resolution (BEiT's `add_fpn` neck); needs exactly 4 `out_indices`.
    """

    model_type = "illama"
    sub_configs_defaults = {"frozen_llm": SubConfigSpec(ILlamaFrozenLLMConfig, optional=True)}

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    hidden_size: int = 192
    num_hidden_layers: int = 12
    num_attention_heads: int = 3
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-6
    rope_parameters: dict | None = None
    qkv_bias: bool = True
    drop_path_rate: float | int = 0.0
    hidden_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    soft_mask_rate: float | int = 0.0
    mask_style: str = "post_softmax"
    post_softmax_path: str = "auto"
    frozen_llm: dict | ILlamaFrozenLLMConfig | None = None

    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    add_fpn: bool = False

    def __post_init__(self, **kwargs):
        self.frozen_llm = frozen_llm_config_from_dict(self.frozen_llm)
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        if self.add_fpn and len(self._out_indices) != 4:
            raise ValueError(
                "ILlamaConfig.add_fpn=True builds a 4-level pyramid from 4 feature maps: set out_indices to 4 "
                f"stages (e.g. [3, 6, 9, 12] for 12 blocks), got out_indices {self._out_indices}."
            )
        if self.intermediate_size is None:
            self.intermediate_size = swiglu_hidden_size(self.hidden_size)
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)
        super().__post_init__(**kwargs)
        if self.id2label and not getattr(self, "label2id", None):
            self.label2id = {label: index for index, label in self.id2label.items()}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per column and per row at the configured resolution."""
        (height, width), (patch_h, patch_w) = to_pair(self.image_size), to_pair(self.patch_size)
        return (height // patch_h, width // patch_w)

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    def validate_architecture(self):
        """Checked at construction and on save (huggingface_hub `@strict`)."""
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_channels", "intermediate_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"ILlamaConfig.{name} must be a positive integer, got {value}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"ILlamaConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"ILlamaConfig head dim hidden_size / num_attention_heads = {self.head_dim} must be even: "
                "rotary embeddings rotate pairs of dimensions."
            )
        image, patch = to_pair(self.image_size), to_pair(self.patch_size)
        if min(patch) < 1 or image[0] % patch[0] or image[1] % patch[1] or min(image) < 1:
            raise ValueError(
                f"ILlamaConfig.image_size {image} must be a positive multiple of patch_size {patch} on both sides."
            )
        if not 0.0 <= self.soft_mask_rate <= 1.0:
            raise ValueError(f"ILlamaConfig.soft_mask_rate must lie in [0, 1], got {self.soft_mask_rate}.")
        if self.mask_style not in MASK_STYLES:
            raise ValueError(f"ILlamaConfig.mask_style must be one of {MASK_STYLES}, got {self.mask_style!r}.")
        if self.post_softmax_path not in POST_SOFTMAX_PATHS:
            raise ValueError(
                f"ILlamaConfig.post_softmax_path must be one of {POST_SOFTMAX_PATHS}, got {self.post_softmax_path!r}."
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"ILlamaConfig.drop_path_rate must lie in [0, 1), got {self.drop_path_rate}.")
        if not 0.0 <= self.hidden_dropout_prob < 1.0:
            raise ValueError(f"ILlamaConfig.hidden_dropout_prob must lie in [0, 1), got {self.hidden_dropout_prob}.")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"ILlamaConfig.rms_norm_eps must be positive, got {self.rms_norm_eps}.")
        theta = self.rope_parameters.get("rope_theta")
        if self.rope_parameters.get("rope_type", "default") != "default" or not theta or theta <= 0:
            raise ValueError(
                "ILlamaConfig.rope_parameters must be {'rope_type': 'default', 'rope_theta': <positive float>}, "
                f"got {self.rope_parameters!r}."
            )


__all__ = ["ILlamaConfig"]
