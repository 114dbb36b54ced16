"""Calibration: reliability bins, ECE and the confusion matrix, re-derived in plain Python on fixed random inputs."""

import math
import random

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
