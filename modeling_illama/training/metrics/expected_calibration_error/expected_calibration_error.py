"""Expected calibration error (ECE) of the top-1 prediction, equal-width confidence bins."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Expected calibration error (Guo et al., 2017): the examples are grouped by the confidence of their top-1
prediction into `n_bins` equal-width bins (lo, hi] over [0, 1]; ECE = sum over bins of
(bin size / n) * |accuracy in bin - mean confidence in bin|. `predictions` are class probabilities
(rows summing to 1); pass `from_logits=True` to apply a softmax first.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): probabilities (or logits with from_logits=True), (n_examples, n_classes).
    references (list of int): true class ids.
    n_bins (int): number of equal-width confidence bins, default 15.
    from_logits (bool): apply a softmax to the rows first, default False.
Returns:
    dict: {"ece": float}.
Example:
    >>> metric = evaluate.load("path/to/expected_calibration_error")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.6, 0.4]], references=[0, 1], n_bins=10)
    {'ece': 0.35}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExpectedCalibrationError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, n_bins=15, from_logits=False):
        probs = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
            raise ValueError(
                f"predictions must be (n_examples, n_classes) matching {labels.shape[0]} references, got {probs.shape}"
            )
        if from_logits:
            probs = np.exp(probs - probs.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
        elif probs.size and (probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)):
            raise ValueError(
                "predictions must be probabilities (non-negative rows summing to 1); pass from_logits=True for logits"
            )
        confidence = probs.max(axis=1)
        correct = (probs.argmax(axis=1) == labels).astype(np.float64)
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        ece = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_bin = (confidence > lo) & (confidence <= hi)
            if in_bin.any():
                ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
        return {"ece": float(ece)}
