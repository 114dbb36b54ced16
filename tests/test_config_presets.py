"""ILlamaConfig validation, derived fields, serialisation, and the six presets (docs/DESIGN.md, sizes)."""

import json
import math

import pytest
import torch
from design_sizes import DESIGN_SIZES
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

from modeling_illama import ILlamaConfig, ILlamaForImageClassification, list_presets, load_preset

CONFIG_ERRORS = (ValueError, StrictDataclassError)  # @strict wraps the validator's ValueError


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(hidden_size=64, num_attention_heads=3), "divisible by num_attention_heads"),
        (dict(hidden_size=66, num_attention_heads=22), "must be even"),
        (dict(image_size=30, patch_size=8), "multiple of patch_size"),
        (dict(image_size=(32, 30), patch_size=8), "multiple of patch_size"),
        (dict(soft_mask_rate=1.5), r"soft_mask_rate must lie in \[0, 1\]"),
        (dict(soft_mask_rate=-0.1), r"soft_mask_rate must lie in \[0, 1\]"),
        (dict(mask_style="pre_softmax"), "mask_style must be one of"),
        (dict(drop_path_rate=1.0), r"drop_path_rate must lie in \[0, 1\)"),
        (dict(drop_path_rate=-0.1), r"drop_path_rate must lie in \[0, 1\)"),
        (dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0}), "rope_parameters"),
        (dict(soft_mask_rate="high"), "soft_mask_rate"),
    ],
    ids=[
        "heads-not-dividing",
        "odd-head-dim",
        "image-not-multiple",
        "non-square-not-multiple",
        "r-above-1",
        "r-below-0",
        "unknown-style",
        "drop-path-1",
        "drop-path-negative",
        "rope-type",
        "r-not-a-number",
    ],
)
def test_invalid_config_fails_at_construction_with_a_clear_message(fields, message):
    with pytest.raises(CONFIG_ERRORS, match=message):
        ILlamaConfig(**fields)


def test_invalid_value_set_later_is_caught_on_save(tmp_path):
    config = ILlamaConfig()
    config.soft_mask_rate = 2.0
    with pytest.raises(CONFIG_ERRORS, match="soft_mask_rate"):
        config.save_pretrained(tmp_path)


def test_defaults_are_tiny_224_with_the_spec_constants():
    config = ILlamaConfig()
    assert config.model_type == "illama"
    assert (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers) == (224, 16, 192, 12)
    assert config.num_attention_heads == 3 and config.head_dim == 64
    assert config.rms_norm_eps == 1e-6 and config.rope_parameters["rope_theta"] == 10000.0
    assert config.qkv_bias is True and config.soft_mask_rate == 0.0 and config.mask_style == "post_softmax"
    assert config.num_patches == 196 and config.grid_size == (14, 14)


@pytest.mark.parametrize("hidden_size, expected", [(192, 512), (384, 1024), (768, 2048), (1024, 2816), (64, 256)])
def test_intermediate_size_is_derived_by_the_spec_formula(hidden_size, expected):
    config = ILlamaConfig(hidden_size=hidden_size, num_attention_heads=max(1, hidden_size // 64))
    assert config.intermediate_size == expected == 256 * math.ceil(int(2 * 4 * hidden_size / 3) / 256)


def test_explicit_intermediate_size_is_kept():
    assert ILlamaConfig(intermediate_size=384).intermediate_size == 384


def test_non_square_image_size_gives_the_right_grid():
    config = ILlamaConfig(image_size=[224, 160], patch_size=16)
    assert config.grid_size == (14, 10) and config.num_patches == 140


def test_save_and_load_round_trip(tmp_path):
    config = ILlamaConfig(
        image_size=(48, 32),
        patch_size=8,
        hidden_size=64,
        num_attention_heads=2,
        num_hidden_layers=3,
        soft_mask_rate=0.37,
        mask_style="renormalized",
        drop_path_rate=0.1,
        id2label={0: "cat", 1: "dog"},
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "illama" and saved["intermediate_size"] == 256
    for loaded in (ILlamaConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is ILlamaConfig
        without_path = lambda c: {k: v for k, v in c.to_dict().items() if k != "_name_or_path"}  # noqa: E731
        assert without_path(loaded) == without_path(config)
        assert loaded.image_size == (48, 32) and loaded.grid_size == (6, 4)
        assert loaded.id2label == {0: "cat", 1: "dog"} and loaded.num_labels == 2


def test_list_presets_names_the_six_variants():
    assert set(list_presets()) == set(DESIGN_SIZES)


@pytest.mark.parametrize("name", list(DESIGN_SIZES))
def test_preset_has_the_spec_sizes_and_exact_parameter_count(name):
    width, depth, heads, mlp, _, params = DESIGN_SIZES[name]
    config = load_preset(name)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (width, depth, heads)
    assert config.intermediate_size == mlp and config.patch_size == 16 and config.num_labels == 1000
    assert config.image_size == int(name.rsplit("-", 1)[1])
    assert config.soft_mask_rate == 0.0 and config.mask_style == "post_softmax"
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = ILlamaForImageClassification(config)
    assert sum(p.numel() for p in model.parameters()) == params


def test_load_preset_applies_overrides_and_validates_them():
    config = load_preset("illama-small-224", num_labels=10, drop_path_rate=0.1)
    assert config.num_labels == 10 and config.drop_path_rate == 0.1 and config.hidden_size == 384
    with pytest.raises(CONFIG_ERRORS, match="soft_mask_rate"):
        load_preset("illama-tiny-224", soft_mask_rate=3.0)


def test_load_preset_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown preset 'illama-huge'.*illama-tiny-224"):
        load_preset("illama-huge")


def test_preset_with_a_label_set_takes_its_size_from_the_labels():
    config = load_preset("illama-tiny-224", id2label={0: "cat", 1: "dog", 2: "bird"})
    assert config.num_labels == 3 and config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    assert load_preset("illama-tiny-224").num_labels == 1000
