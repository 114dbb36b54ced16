"""Shape bias on a few real cue-conflict stimuli (tests/data/cue-conflict), re-derived in the test."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from modeling_illama import ILlamaForImageClassification, build_image_processor, load_preset
from modeling_illama.analysis.shape_bias import (
    CueConflictImage,
    draw_shape_bias,
    list_stimuli,
    load_categories,
    measure_shape_bias,
    shape_bias_from_decisions,
)
from modeling_illama.cli.analyze import main as analyze

STIMULI = Path(__file__).resolve().parent / "data" / "cue-conflict"


def _imagenet_model(seed=0, num_labels=1000):
    """A tiny random iLLaMA at 32 px whose head favours the cat / elephant / clock classes, by image content."""
    torch.manual_seed(seed)
    config = load_preset(
        "illama-tiny-224", image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=64, num_attention_heads=2,
        intermediate_size=128, num_labels=num_labels,
    )  # fmt: skip
    model = ILlamaForImageClassification(config).eval()
    if num_labels == 1000:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.fill_(-20.0)
            categories = load_categories(STIMULI / "categories.tsv")
            for name in ("cat", "elephant", "clock"):
                rows = categories[name]
                model.classifier.weight[rows] = torch.randn(len(rows), config.hidden_size) * 3
                model.classifier.bias[rows] = 0.0
    return model


def test_categories_and_stimuli_are_parsed():
    categories = load_categories(STIMULI / "categories.tsv")
    assert len(categories) == 16 and categories["cat"] == [281, 282, 283, 284, 285, 286]
    assert load_categories() == categories  # the packaged copy is the same mapping
    stimuli = list_stimuli(STIMULI, categories)
    assert len(stimuli) == 7
    assert CueConflictImage(str(STIMULI / "cat" / "cat2-elephant1.jpg"), "cat", "elephant") in stimuli


def test_protocol_on_hand_made_decisions():
    images = [
        CueConflictImage("a", "cat", "clock"),
        CueConflictImage("b", "cat", "elephant"),
        CueConflictImage("c", "cat", "cat"),  # same category: excluded
        CueConflictImage("d", "clock", "cat"),
        CueConflictImage("e", "clock", "elephant"),
    ]
    decisions = ["cat", "elephant", "cat", "bear", "clock"]
    report = shape_bias_from_decisions(images, decisions)
    # shape hits: a (cat), e (clock); texture hits: b (elephant); d decided neither
    assert (report["shape_decisions"], report["texture_decisions"], report["images"]) == (2, 1, 4)
    assert report["shape_bias"] == pytest.approx(2 / 3)
    assert report["excluded_same_category"] == 1
    assert report["per_category"]["cat"]["shape_bias"] == pytest.approx(1 / 2)
    assert report["per_category"]["clock"]["shape_bias"] == pytest.approx(1.0)


def test_no_shape_or_texture_decision_has_no_shape_bias(tmp_path):
    """A model deciding neither category anywhere (a random one does) gets no number, and the plot still draws."""
    from modeling_illama.analysis.shape_bias import describe_shape_bias, draw_shape_bias

    images = [CueConflictImage("a", "cat", "clock"), CueConflictImage("b", "clock", "elephant")]
    report = shape_bias_from_decisions(images, ["bear", "bear"])
    assert report["shape_bias"] is None and report["per_category"]["cat"]["shape_bias"] is None
    assert describe_shape_bias(report["shape_bias"]) == "n/a (no shape or texture decision)"
    assert describe_shape_bias(0.4145) == "41.45%"
    assert draw_shape_bias({"random": report}, tmp_path / "bias.png").endswith("bias.png")


def test_shape_bias_matches_a_plain_rederivation(tmp_path):
    model = _imagenet_model()
    processor = build_image_processor(32)
    report = measure_shape_bias(model, processor, STIMULI, batch_size=3)

    categories = {}
    for line in (STIMULI / "categories.tsv").read_text().splitlines()[1:]:
        name, indices = line.split("\t")
        categories[name] = [int(i) for i in indices.split(",")]
    shape_hits = texture_hits = 0
    for path in sorted(STIMULI.glob("*/*.jpg")):
        shape = path.parent.name
        texture = path.stem.split("-")[1].rstrip("0123456789")
        with torch.no_grad():
            pixels = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
            probabilities = model(pixel_values=pixels).logits.softmax(-1)[0].tolist()
        scores = {name: sum(probabilities[i] for i in idx) / len(idx) for name, idx in categories.items()}
        decision = max(scores, key=scores.get)
        assert report["decisions"][f"{shape}/{path.name}"] == decision
        if shape != texture:
            shape_hits += decision == shape
            texture_hits += decision == texture
    assert shape_hits + texture_hits > 0, "the test model should decide some stimuli by shape or texture"
    assert (report["shape_decisions"], report["texture_decisions"]) == (shape_hits, texture_hits)
    assert report["shape_bias"] == pytest.approx(shape_hits / (shape_hits + texture_hits))
    assert report["excluded_same_category"] == 1
    path = draw_shape_bias({"tiny": report, "tiny again": report}, tmp_path / "shape_bias.png")
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


def test_original_png_layout(tmp_path):
    """The texture-vs-shape repository ships 512 px PNGs in the same folder layout."""
    for path in STIMULI.glob("*/*.jpg"):
        (tmp_path / path.parent.name).mkdir(exist_ok=True)
        Image.open(path).resize((512, 512), Image.BICUBIC).save(tmp_path / path.parent.name / f"{path.stem}.png")
    report = measure_shape_bias(_imagenet_model(), build_image_processor(32), tmp_path)
    assert report["images"] == 6 and all(name.endswith(".png") for name in report["decisions"])


def test_a_ten_class_model_is_refused(tmp_path, capsys):
    model = _imagenet_model(num_labels=10)
    with pytest.raises(ValueError, match="1000 classes.*this model has 10 classes"):
        measure_shape_bias(model, build_image_processor(32), STIMULI)
    model.save_pretrained(tmp_path / "cifar")
    status = analyze(["shape-bias", "--model", str(tmp_path / "cifar"), "--stimuli", str(STIMULI),
                      "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert status == 2
    assert "ImageNet-1K classifier with 1000 classes" in capsys.readouterr().err


def test_cli_writes_json_and_png(tmp_path, capsys):
    _imagenet_model().save_pretrained(tmp_path / "model")
    build_image_processor(32).save_pretrained(tmp_path / "model")
    status = analyze(["shape-bias", "--model", str(tmp_path / "model"), "--stimuli", str(STIMULI),
                      "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "shape_bias.png").read_bytes()[:4] == b"\x89PNG"
    assert "shape bias" in capsys.readouterr().out
