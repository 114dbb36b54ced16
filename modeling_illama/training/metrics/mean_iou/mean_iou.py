"""Semantic-segmentation metrics: mean IoU, per-class IoU and pixel accuracy over a whole evaluation set."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Intersection over union of predicted and reference label maps, accumulated over ALL pixels of ALL images
(then divided per class), as mmsegmentation and the Hub's `mean_iou` compute it. Reference pixels equal to
`ignore_index` (void, 255 by default) are left out of every count. A class that appears neither in the
references nor in the predictions has IoU NaN and is left out of the mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class ids, one map per image.
    references (list of 2-D int arrays): reference class ids, same shapes as the predictions.
    num_labels (int): number of classes; ids are 0 .. num_labels - 1.
    ignore_index (int): reference id left out of the metric (default 255).
Returns:
    dict: "mean_iou" (mean over classes with a defined IoU), "per_category_iou" (list, NaN where undefined),
    "pixel_accuracy" (correct / counted pixels), "mean_accuracy" (mean per-class recall).
Raises:
    ValueError: a prediction and its reference differ in shape, or an id lies outside 0 .. num_labels - 1
    (references may also hold `ignore_index`).
Example:
    >>> metric = evaluate.load("path/to/mean_iou")
    >>> metric.compute(predictions=[[[0, 1]]], references=[[[0, 0]]], num_labels=2)["per_category_iou"]
    [0.5, 0.0]
"""


def area_counts(prediction: np.ndarray, reference: np.ndarray, num_labels: int, ignore_index: int):
    """Per-class (intersection, prediction area, reference area) of one image, void pixels left out."""
    if prediction.shape != reference.shape:
        raise ValueError(
            f"a prediction of shape {prediction.shape} has a reference of shape {reference.shape}; "
            "resize the prediction to its reference (e.g. post_process_semantic_segmentation(target_sizes=...))"
        )
    counted = reference != ignore_index
    prediction, reference = prediction[counted], reference[counted]
    for name, ids in (("reference", reference), ("prediction", prediction)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
            bad = np.unique(ids[(ids < 0) | (ids >= num_labels)])[:10].tolist()
            raise ValueError(
                f"{name} holds class ids {bad} outside 0..{num_labels - 1} (num_labels={num_labels}, "
                f"ignore_index={ignore_index})"
            )
    intersection = np.bincount(reference[prediction == reference], minlength=num_labels)
    return intersection, np.bincount(prediction, minlength=num_labels), np.bincount(reference, minlength=num_labels)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels: int, ignore_index: int = 255):
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        totals = np.zeros((3, num_labels), dtype=np.int64)
        for prediction, reference in zip(predictions, references):
            counts = area_counts(
                np.asarray(prediction, dtype=np.int64), np.asarray(reference, dtype=np.int64), num_labels, ignore_index
            )
            totals += np.stack(counts)
        intersection, predicted_area, reference_area = totals
        union = predicted_area + reference_area - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersection / union
            recall = intersection / reference_area
        counted = reference_area.sum()
        return {
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "per_category_iou": iou.tolist(),
            "pixel_accuracy": float(intersection.sum() / counted) if counted else float("nan"),
            "mean_accuracy": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
        }
