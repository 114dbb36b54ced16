"""Calibration of a classifier: reliability bins, expected calibration error (ECE), confusion matrix, and their plots.

Binning (the same as the `expected_calibration_error` metric that `illama-eval` reports): the top-1 confidence of
each example falls into one of `num_bins` equal-width bins (lo, hi] over [0, 1]; ECE = sum over bins of
(bin size / n) * |accuracy in bin - mean confidence in bin| (Guo et al., ICML 2017). 15 bins by default, the
value of Guo et al. and of timm/torchmetrics; the iLLaMA paper (Table 8) does not state its bin count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.figures import pyplot, save_figure

DEFAULT_NUM_BINS = 15


@dataclass
class ReliabilityBins:
    """Per-bin statistics of the top-1 prediction. Empty bins have count 0 and NaN accuracy/confidence."""

    edges: np.ndarray  # (num_bins + 1,)
    counts: np.ndarray  # (num_bins,)
    accuracy: np.ndarray  # (num_bins,)
    confidence: np.ndarray  # (num_bins,)

    @property
    def expected_calibration_error(self) -> float:
        total = self.counts.sum()
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.counts[filled] / total * gaps).sum())

    def to_dict(self) -> dict:
        return {
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "accuracy": [None if np.isnan(v) else float(v) for v in self.accuracy],
            "confidence": [None if np.isnan(v) else float(v) for v in self.confidence],
        }


def _check_predictions(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits (n, num_classes) and labels (n,) for the same n, got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("no predictions to measure calibration on")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}) (the model's classes), got [{labels.min()}, {labels.max()}]"
        )


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, num_bins: int = DEFAULT_NUM_BINS) -> ReliabilityBins:
    """Bin the softmax top-1 confidence of `logits` (n, C) into `num_bins` equal-width (lo, hi] bins."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long()
    _check_predictions(logits, labels)
    probabilities = logits.double().softmax(dim=-1)
    confidence, predicted = probabilities.max(dim=-1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    # bin b holds edges[b] < confidence <= edges[b + 1]; the softmax maximum is >= 1 / C > 0
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp_(0, num_bins - 1)
    counts = torch.bincount(index, minlength=num_bins).double()
    sums_correct = torch.bincount(index, weights=correct, minlength=num_bins)
    sums_confidence = torch.bincount(index, weights=confidence, minlength=num_bins)
    safe = counts.clamp(min=1)
    empty = counts == 0
    accuracy = torch.where(empty, torch.nan, sums_correct / safe)
    mean_confidence = torch.where(empty, torch.nan, sums_confidence / safe)
    return ReliabilityBins(edges.numpy(), counts.long().numpy(), accuracy.numpy(), mean_confidence.numpy())


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long()
    _check_predictions(logits, labels)
    num_classes = logits.shape[1]
    predicted = logits.argmax(dim=-1)
    return torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).view(num_classes, -1).numpy()


def calibration_report(
    logits: torch.Tensor, labels: torch.Tensor, num_bins: int = DEFAULT_NUM_BINS, class_names: list[str] | None = None
) -> dict:
    """Top-1 accuracy, ECE, the reliability bins and the confusion matrix, as plain JSON-ready values."""
    bins = reliability_bins(logits, labels, num_bins)
    matrix = confusion_matrix(logits, labels)
    return {
        "num_examples": int(len(labels)),
        "num_bins": num_bins,
        "binning": "equal-width (lo, hi] bins of the softmax top-1 confidence over [0, 1]",
        "top1": float(np.trace(matrix) / matrix.sum()),
        "ece": bins.expected_calibration_error,
        "reliability": bins.to_dict(),
        "class_names": list(class_names) if class_names else None,
        "confusion_matrix": matrix.tolist(),
    }


def draw_reliability_diagram(report: dict, path: str | os.PathLike, title: str | None = None) -> str:
    """Accuracy per confidence bin against the diagonal, the gap shaded, and the bin sizes underneath."""
    plt = pyplot()
    bins = report["reliability"]
    edges = np.asarray(bins["edges"])
    width = np.diff(edges)
    accuracy = np.array([np.nan if v is None else v for v in bins["accuracy"]])
    confidence = np.array([np.nan if v is None else v for v in bins["confidence"]])
    filled = ~np.isnan(accuracy)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=width[filled],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label="accuracy",
    )
    top.bar(
        edges[:-1][filled],
        (confidence - accuracy)[filled],
        bottom=accuracy[filled],
        width=width[filled],
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    top.set_title(title or f"ECE {report['ece']:.4f} ({report['num_bins']} bins, n = {report['num_examples']})")
    bottom.bar(edges[:-1], bins["counts"], width=width, align="edge", color="gray", edgecolor="black")
    bottom.set_xlabel("top-1 confidence")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


def draw_confusion_matrix(report: dict, path: str | os.PathLike, title: str | None = None) -> str:
    """Row-normalised confusion matrix (each true class sums to 1); class names and counts shown up to 20 classes."""
    plt = pyplot()
    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    num_classes = len(matrix)
    size = min(12.0, 3 + 0.45 * num_classes)
    figure, axis = plt.subplots(figsize=(size + 1, size), constrained_layout=True)
    shown = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(shown, ax=axis, shrink=0.8, label="fraction of the true class")
    if num_classes <= 20:
        names = report.get("class_names") or [str(i) for i in range(num_classes)]
        axis.set_xticks(range(num_classes), names, rotation=60, ha="right")
        axis.set_yticks(range(num_classes), names)
        for i in range(num_classes):
            for j in range(num_classes):
                if matrix[i, j]:
                    color = "white" if normalised[i, j] > 0.5 else "black"
                    axis.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title or f"confusion matrix (top-1 {100 * report['top1']:.2f}%, n = {report['num_examples']})")
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


CALIBRATION_FIGURES = ("reliability_diagram.png", "confusion_matrix.png")  # the names draw_calibration_figures writes


def draw_calibration_figures(report: dict, folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """reliability_diagram.png and confusion_matrix.png in `folder`; with `name` ("model on data (split)") the
    titles lead with it and the ECE / top-1, otherwise each drawing's own title."""
    reliability_title = f"{name}: ECE {report['ece']:.4f} ({report['num_bins']} bins)" if name else None
    confusion_title = f"{name}: top-1 {100 * report['top1']:.2f}%" if name else None
    reliability, confusion = CALIBRATION_FIGURES
    return [
        draw_reliability_diagram(report, os.path.join(folder, reliability), reliability_title),
        draw_confusion_matrix(report, os.path.join(folder, confusion), confusion_title),
    ]


__all__ = [
    "CALIBRATION_FIGURES",
    "DEFAULT_NUM_BINS",
    "ReliabilityBins",
    "calibration_report",
    "confusion_matrix",
    "draw_calibration_figures",
    "draw_confusion_matrix",
    "draw_reliability_diagram",
    "reliability_bins",
]
