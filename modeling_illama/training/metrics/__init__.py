"""Local `evaluate` metric modules (Hub metric scripts cannot be downloaded everywhere).

Load one with `evaluate.load(metric_path("top_k_accuracy"))`; it works offline.
"""

from pathlib import Path

import numpy as np

from ..guards import check_finite_logits

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("top_k_accuracy", "expected_calibration_error", "mean_iou")


def metric_path(name: str) -> str:
    """Folder of a local metric module, as `evaluate.load` expects it."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; available: {METRIC_NAMES}")
    return str(METRICS_DIR / name)


def load_metric(name: str):
    import evaluate

    return evaluate.load(metric_path(name), keep_in_memory=True)  # computed at once: no Arrow file on disk


def classification_metrics(logits, labels) -> dict[str, float]:
    """`top1`, `top5` and `ece` of (n, classes) logits against integer labels (numpy arrays); with fewer than five
    classes `top5` is the top-(number of classes) accuracy, i.e. 1. Non-finite logits are refused (ValueError)."""
    check_finite_logits(logits)
    k = (1, 5) if logits.shape[1] >= 5 else (1, logits.shape[1])
    top = load_metric("top_k_accuracy").compute(predictions=logits, references=labels, k=k)
    ece = load_metric("expected_calibration_error").compute(predictions=logits, references=labels, from_logits=True)
    return {"top1": top["top1"], "top5": top[f"top{k[1]}"], "ece": ece["ece"]}


def compute_classification_metrics(eval_pred) -> dict[str, float]:
    """Trainer's `compute_metrics`: top-1, top-5 and ECE of an `EvalPrediction` (`classification_metrics`)."""
    logits = np.asarray(
        eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    )
    return classification_metrics(logits, np.asarray(eval_pred.label_ids))
