"""Local `evaluate` metric modules (Hub metric scripts cannot be downloaded everywhere).

Load one with `evaluate.load(metric_path("top_k_accuracy"))`; it works offline.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("top_k_accuracy", "expected_calibration_error")


def metric_path(name: str) -> str:
    """Folder of a local metric module, as `evaluate.load` expects it."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; available: {METRIC_NAMES}")
    return str(METRICS_DIR / name)


def load_metric(name: str):
    import evaluate

    return evaluate.load(metric_path(name))
