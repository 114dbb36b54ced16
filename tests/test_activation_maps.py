"""Information-filtering activation maps: the two per-token maps against a NumPy re-derivation, the class-token
position (last for iLLaMA, first for ViT), the captured layers, and the PNG written by the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_vit_classifier

from modeling_illama import ILlamaConfig, ILlamaForImageClassification
from modeling_illama.analysis.activation_maps import activation_maps, frequency_map, magnitude_map
from modeling_illama.cli.activation_maps import main as activation_maps_main


def numpy_maps(tokens: np.ndarray):
    """(P, D) -> magnitude and frequency maps, min-max normalised (written from docs/DESIGN.md with NumPy)."""
    magnitude = np.sqrt(((tokens - tokens.mean(0)) ** 2).sum(-1))
    phase = np.angle(np.fft.fft(tokens.astype(np.float64), axis=-1))
    frequency = np.sqrt(((phase - phase.mean(0)) ** 2).sum(-1))
    scale = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
    return scale(magnitude), scale(frequency)


def tiny_illama():
    torch.manual_seed(0)
    config = ILlamaConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_labels=3
    )
    return ILlamaForImageClassification(config).eval()


def test_maps_match_numpy():
    tokens = torch.randn(2, 16, 64)
    for b in range(2):
        magnitude, frequency = numpy_maps(tokens[b].double().numpy())
        np.testing.assert_allclose(magnitude_map(tokens)[b].numpy(), magnitude, atol=1e-5)
        np.testing.assert_allclose(frequency_map(tokens)[b].numpy(), frequency, atol=1e-4)
        assert magnitude.min() == 0 and magnitude.max() == 1


def test_illama_layers_and_class_token_last():
    model = tiny_illama()
    pixels = torch.randn(1, 3, 32, 32)
    maps = activation_maps(model, pixels, [0, -1])
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    for layer, index in [(0, 1), (-1, 2)]:  # hidden_states[i + 1] is the output of block i
        patches = hidden[index][0, :16].numpy()  # the class token is the LAST of 17
        magnitude, frequency = numpy_maps(patches.astype(np.float64))
        assert maps[layer]["magnitude"].shape == (1, 4, 4)
        np.testing.assert_allclose(maps[layer]["magnitude"][0].flatten().numpy(), magnitude, atol=1e-5)
        np.testing.assert_allclose(maps[layer]["frequency"][0].flatten().numpy(), frequency, atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        activation_maps(model, pixels, [5])
    with pytest.raises(ValueError, match="no submodule 'frozen_llm'"):
        activation_maps(model, pixels, ["frozen_llm"])


def test_vit_class_token_first():
    vit = tiny_vit_classifier(num_labels=3)
    pixels = torch.randn(1, 3, 32, 32)
    maps = activation_maps(vit, pixels, [1])
    with torch.no_grad():
        last = vit(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    magnitude, _ = numpy_maps(last[0, 1:].double().numpy())
    np.testing.assert_allclose(maps[1]["magnitude"][0].flatten().numpy(), magnitude, atol=1e-5)


def test_cli_writes_png(tmp_path):
    model = tiny_illama()
    model.save_pretrained(tmp_path / "model")
    image = Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8))
    image.save(tmp_path / "image.png")
    code = activation_maps_main(
        [
            "--model",
            str(tmp_path / "model"),
            "--image",
            str(tmp_path / "image.png"),
            "--layers",
            "0",
            "1",
            "--output",
            str(tmp_path / "maps.png"),
            "--json",
            str(tmp_path / "maps.json"),
        ]
    )
    assert code == 0
    with Image.open(tmp_path / "maps.png") as png:
        assert png.format == "PNG" and png.size[0] > 300 and png.size[1] > 300
    import json

    saved = json.loads((tmp_path / "maps.json").read_text())
    assert set(saved) == {"0", "1"} and np.array(saved["1"]["frequency"]).shape == (4, 4)
    assert (
        activation_maps_main(
            [
                "--model",
                str(tmp_path / "model"),
                "--image",
                str(tmp_path / "missing.png"),
                "--output",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
