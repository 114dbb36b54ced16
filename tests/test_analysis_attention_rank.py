"""Attention rank: the first layer's maps re-derived in numpy from the weights (rotary, softmax, post-softmax mask)."""

import numpy as np
import pytest
import torch
from tiny_models import tiny_vit_classifier
from transformers import ViTConfig, ViTForImageClassification

from modeling_illama import ILlamaForImageClassification, load_preset
from modeling_illama.analysis.attention_rank import attention_rank, draw_attention_rank, ensure_attention_weights


def _tiny_illama(seed=0):
    torch.manual_seed(seed)
    config = load_preset(
        "illama-tiny-224", image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
        intermediate_size=128, num_labels=10,
    )  # fmt: skip
    return ILlamaForImageClassification(config).eval()


def _first_layer_maps_numpy(model, pixel_values, rate):
    """softmax(q k^T / sqrt(d)) * (r + (1 - r) tril) of layer 0, from its input and weights, in float64 numpy."""
    layer = model.illama.layers[0]
    with torch.no_grad():
        hidden = model.illama.embeddings(pixel_values).double().numpy()
    weight = layer.input_layernorm.weight.detach().double().numpy()
    normed = hidden / np.sqrt((hidden**2).mean(-1, keepdims=True) + model.config.rms_norm_eps) * weight
    qkv = normed @ layer.self_attn.qkv_proj.weight.detach().double().numpy().T
    qkv += layer.self_attn.qkv_proj.bias.detach().double().numpy()
    batch, tokens, _ = qkv.shape
    heads, dim = model.config.num_attention_heads, model.config.head_dim
    qkv = qkv.reshape(batch, tokens, 3, heads, dim).transpose(2, 0, 3, 1, 4)
    angles = np.arange(tokens)[:, None] * 10000.0 ** (-np.arange(0, dim, 2) / dim)[None]

    def rotate(x):  # pairs (2i, 2i + 1) rotated by t * w_i
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
        out[..., 1::2] = even * np.sin(angles) + odd * np.cos(angles)
        return out

    scores = rotate(qkv[0]) @ rotate(qkv[1]).transpose(0, 1, 3, 2) / np.sqrt(dim)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights * (rate + (1 - rate) * np.tril(np.ones((tokens, tokens))))


def _rank(matrix, threshold):
    singular = np.linalg.svd(matrix, compute_uv=False)
    cumulative = np.cumsum(singular) / singular.sum()
    return next(k + 1 for k, value in enumerate(cumulative) if value >= threshold - 1e-12)


@pytest.mark.parametrize("rate", [0.0, 1.0, 0.3])
def test_first_layer_rank_matches_numpy(rate):
    model = _tiny_illama()
    model.set_soft_mask_rate(rate)
    pixel_values = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    result = attention_rank(model, pixel_values, threshold=0.8, batch_size=2)
    maps = _first_layer_maps_numpy(model, pixel_values, rate)
    if rate == 0.0:
        assert np.allclose(np.triu(maps, 1), 0)  # causal: nothing above the diagonal
    for head in range(model.config.num_attention_heads):
        expected = np.mean([_rank(maps[i, head], 0.8) for i in range(len(maps))])
        assert result["rank_mean"][0][head] == pytest.approx(expected, abs=1e-9)
    assert result["num_tokens"] == 17 and result["num_images"] == 5
    assert len(result["rank_mean"]) == model.config.num_hidden_layers


def test_sdpa_model_is_switched_to_eager_and_vit_is_measured(tmp_path):
    model = _tiny_illama()
    model.set_attn_implementation("sdpa")
    ensure_attention_weights(model)
    assert model.config._attn_implementation == "eager"

    vit = tiny_vit_classifier(num_labels=10)
    vit.set_attn_implementation("sdpa")
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    result = attention_rank(vit, pixel_values)
    with torch.no_grad():  # ViT: plain softmax maps, class token first; recompute from the returned weights
        maps = vit(pixel_values=pixel_values, output_attentions=True).attentions[0].double().numpy()
    assert np.allclose(maps.sum(-1), 1)
    expected = np.mean([_rank(maps[i, 0], 0.8) for i in range(3)])
    assert result["first_layer_first_head"] == pytest.approx(expected)
    illama = attention_rank(model, pixel_values)
    path = draw_attention_rank({"iLLaMA": illama, "ViT": result}, tmp_path / "rank.png")
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_threshold_is_checked():
    with pytest.raises(ValueError, match="threshold"):
        attention_rank(_tiny_illama(), torch.randn(1, 3, 32, 32), threshold=1.5)


def test_cli_measures_illama_at_both_rates_and_a_vit_like_the_numpy_maps(tmp_path, capsys):
    """`illama-analyze attention-rank` on saved folders: iLLaMA at r = 0 and 1 and a ViT, in one JSON and one PNG;
    the iLLaMA layer-1 head-1 ranks equal the numpy maps' on the same preprocessed images."""
    import json
    from pathlib import Path

    from modeling_illama import build_image_processor
    from modeling_illama.analysis.loading import dataset_pixel_values
    from modeling_illama.cli.analyze import main as analyze

    cifar = Path(__file__).resolve().parents[1] / "data" / "cifar10-mini"
    model = _tiny_illama()
    model.save_pretrained(tmp_path / "illama")
    build_image_processor(32).save_pretrained(tmp_path / "illama")
    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=128, num_labels=10))  # fmt: skip
    vit.save_pretrained(tmp_path / "vit")
    build_image_processor(32).save_pretrained(tmp_path / "vit")

    status = analyze(["attention-rank", "--model", str(tmp_path / "illama"), "--compare", str(tmp_path / "vit"),
                      "--dataset", str(cifar), "--split", "test", "--num-images", "4",
                      "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "attention_rank.json").read_text())["results"]
    assert list(results) == ["illama r=0", "illama r=1", "vit"]
    pixel_values, _ = dataset_pixel_values(str(cifar), "test", build_image_processor(32), 4)
    for rate in (0.0, 1.0):
        maps = _first_layer_maps_numpy(model, pixel_values, rate)
        expected = np.mean([_rank(maps[i, 0], 0.8) for i in range(4)])
        assert results[f"illama r={rate:g}"]["first_layer_first_head"] == pytest.approx(expected)
    assert results["vit"]["num_tokens"] == 17
    assert (tmp_path / "out" / "attention_rank.png").read_bytes()[:4] == b"\x89PNG"
