"""Calibration: reliability bins, ECE and the confusion matrix, re-derived in plain Python on fixed random inputs."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_illama.analysis.calibration import (
    calibration_report,
    confusion_matrix,
    draw_confusion_matrix,
    draw_reliability_diagram,
    reliability_bins,
)
from modeling_illama.training.metrics import load_metric

CIFAR10_MINI = Path(__file__).resolve().parents[1] / "data" / "cifar10-mini"


def _random_predictions(n=400, classes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    # informative logits: the true class is boosted for most examples, so the bins are not all empty
    logits = torch.randn(n, classes, generator=generator) * 2
    logits[torch.arange(n), labels] += torch.rand(n, generator=generator) * 4
    return logits, labels


def _plain_ece(logits, labels, num_bins):
    """Loop over examples in plain Python: softmax, (lo, hi] bins, weighted |accuracy - confidence|."""
    bins = [[] for _ in range(num_bins)]
    for row, label in zip(logits.tolist(), labels.tolist()):
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        confidence = max(exps) / sum(exps)
        index = min(num_bins - 1, max(0, math.ceil(confidence * num_bins) - 1))
        bins[index].append((confidence, float(row.index(top) == label)))
    n = len(labels)
    return sum(len(b) / n * abs(sum(c for _, c in b) / len(b) - sum(p for p, _ in b) / len(b)) for b in bins if b), [
        len(b) for b in bins
    ]


@pytest.mark.parametrize("num_bins", [15, 10, 1])
def test_ece_matches_plain_rederivation_and_the_metric(num_bins):
    logits, labels = _random_predictions(seed=num_bins)
    bins = reliability_bins(logits, labels, num_bins)
    expected, counts = _plain_ece(logits, labels, num_bins)
    assert bins.counts.tolist() == counts
    assert bins.expected_calibration_error == pytest.approx(expected, abs=1e-12)
    metric = load_metric("expected_calibration_error").compute(
        predictions=logits.numpy(), references=labels.numpy(), n_bins=num_bins, from_logits=True
    )
    assert bins.expected_calibration_error == pytest.approx(metric["ece"], abs=1e-6)


def test_confusion_matrix_counts_pairs():
    random.seed(1)
    classes = 5
    labels = [random.randrange(classes) for _ in range(200)]
    predicted = [label if random.random() < 0.6 else random.randrange(classes) for label in labels]
    logits = torch.zeros(len(labels), classes)
    logits[torch.arange(len(labels)), torch.tensor(predicted)] = 1.0
    matrix = confusion_matrix(logits, torch.tensor(labels))
    expected = np.zeros((classes, classes), dtype=int)
    for true, guess in zip(labels, predicted):
        expected[true, guess] += 1
    np.testing.assert_array_equal(matrix, expected)
    report = calibration_report(logits, torch.tensor(labels))
    assert report["top1"] == pytest.approx(sum(t == p for t, p in zip(labels, predicted)) / len(labels))


def test_bad_inputs_are_refused():
    logits, labels = _random_predictions(n=10, classes=3)
    with pytest.raises(ValueError, match="labels must lie in"):
        reliability_bins(logits, labels + 3)
    with pytest.raises(ValueError, match="same n"):
        reliability_bins(logits, labels[:5])
    with pytest.raises(ValueError, match="num_bins"):
        reliability_bins(logits, labels, 0)


def test_plots_are_written(tmp_path):
    logits, labels = _random_predictions(n=100, classes=4)
    report = calibration_report(logits, labels, class_names=["a", "b", "c", "d"])
    for draw, name in ((draw_reliability_diagram, "reliability.png"), (draw_confusion_matrix, "confusion.png")):
        path = draw(report, tmp_path / name)
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_cifar_model(tmp_path_factory):
    """A tiny random iLLaMA over the ten CIFAR-10 classes (their names), with its 32 px eval transform."""
    from modeling_illama import ILlamaForImageClassification, build_image_processor, load_preset

    torch.manual_seed(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    config = load_preset(
        "illama-tiny-224", image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=64, num_attention_heads=2,
        intermediate_size=128, num_labels=10, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("cifar-model")
    model = ILlamaForImageClassification(config).eval()
    model.save_pretrained(folder)
    build_image_processor(32).save_pretrained(folder)
    return folder


def _plain_logits(folder, limit):
    """The model's logits on the first `limit` test images, preprocessed image by image."""
    from datasets import load_dataset
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    data = load_dataset("parquet", data_files={"test": str(CIFAR10_MINI / "test.parquet")})["test"].select(
        range(limit)
    )
    with torch.no_grad():
        logits = torch.cat([model(**processor(row["img"].convert("RGB"), return_tensors="pt")).logits for row in data])
    return logits, torch.tensor(data["label"])


def test_cli_calibration_json_matches_a_plain_computation(tiny_cifar_model, tmp_path, capsys):
    import json

    from modeling_illama.cli.analyze import main as analyze

    status = analyze(["calibration", "--model", str(tiny_cifar_model), "--dataset", str(CIFAR10_MINI), "--split",
                      "test", "--limit", "40", "--batch-size", "16", "--output-dir", str(tmp_path)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "calibration.json").read_text())
    logits, labels = _plain_logits(tiny_cifar_model, 40)
    expected, counts = _plain_ece(logits, labels, 15)
    assert report["ece"] == pytest.approx(expected, abs=1e-5)
    assert report["reliability"]["counts"] == counts
    assert report["top1"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
    assert report["class_names"][0] == "airplane" and len(report["confusion_matrix"]) == 10
    for name in ("reliability_diagram.png", "confusion_matrix.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_illama_eval_draws_the_same_plots(tiny_cifar_model, tmp_path, capsys):
    from modeling_illama.cli.eval import main as illama_eval

    status = illama_eval(["--model", str(tiny_cifar_model), "--dataset", str(CIFAR10_MINI), "--split", "test",
                          "--limit", "16", "--output", str(tmp_path / "eval.json"), "--plots", str(tmp_path)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "reliability_diagram.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "logits" not in (tmp_path / "eval.json").read_text()


def test_every_tool_refuses_a_checkpoint_with_missing_weights(tiny_cifar_model, tmp_path, capsys):
    """The analyses load through modeling_illama.loading: a partly random model is an error naming the weights,
    unless --allow-missing-weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    from modeling_illama.cli.analyze import main as analyze

    folder = tmp_path / "incomplete"
    shutil.copytree(tiny_cifar_model, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["classifier.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    commands = {
        "calibration": ["--dataset", str(CIFAR10_MINI), "--split", "test", "--limit", "8"],
        "attention-rank": ["--dataset", str(CIFAR10_MINI), "--split", "test", "--num-images", "2"],
        "quantize": ["--dataset", str(CIFAR10_MINI), "--split", "test", "--limit", "8"],
        "export-onnx": [],
    }
    for command, extra in commands.items():
        status = analyze([command, "--model", str(folder), "--output-dir", str(tmp_path / command), *extra])
        error = capsys.readouterr().err
        assert status == 2, command
        assert f"illama-analyze {command}: error:" in error and "classifier.weight" in error, error
    status = analyze(["calibration", "--model", str(folder), "--output-dir", str(tmp_path / "allowed"),
                      "--allow-missing-weights", *commands["calibration"]])  # fmt: skip
    assert status == 0, capsys.readouterr().err
