"""Top-k accuracy: the fraction of examples whose label is among the k highest scores."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-k accuracy of classification scores. `predictions` are per-class scores (logits or probabilities),
one row per example; `references` are integer class ids. Ties are broken by class index (numpy's stable
argsort of the negated scores). Returns {"top1": ..., "top5": ...} for the default k = (1, 5).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): scores, shape (n_examples, n_classes).
    references (list of int): true class ids.
    k (int or tuple of int): the k values to report, default (1, 5); k larger than the number of classes
        counts every example as correct.
Returns:
    dict: "top{k}" -> accuracy in [0, 1] for each k.
Example:
    >>> metric = evaluate.load("path/to/top_k_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], references=[2, 0], k=(1, 2))
    {'top1': 0.5, 'top2': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
            raise ValueError(
                f"predictions must be (n_examples, n_classes) matching {labels.shape[0]} references, got {scores.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
            raise ValueError(
                f"references must be class ids in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}"
            )
        ks = (k,) if isinstance(k, int) else tuple(k)
        order = np.argsort(-scores, axis=1, kind="stable")
        rank = np.argmax(order == labels[:, None], axis=1)  # position of the true class in the ranking
        return {f"top{kk}": float(np.mean(rank < kk)) for kk in ks}
