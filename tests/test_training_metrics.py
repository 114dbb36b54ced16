"""The local evaluate modules (top-k accuracy, ECE) against numbers computed by hand."""

import math

import evaluate
import pytest

from modeling_illama.training.metrics import metric_path


@pytest.fixture(scope="module")
def top_k():
    return evaluate.load(metric_path("top_k_accuracy"))


@pytest.fixture(scope="module")
def ece():
    return evaluate.load(metric_path("expected_calibration_error"))


def test_top_k_accuracy_by_hand(top_k):
    scores = [
        [0.1, 0.5, 0.2, 0.15, 0.05, 0.0],  # ranking 1,2,3,0,4,5; label 1 -> top1 hit
        [0.3, 0.1, 0.2, 0.25, 0.1, 0.05],  # ranking 0,3,2,...; label 2 -> 3rd: top5 hit only
        [0.0, 0.0, 0.1, 0.2, 0.3, 0.4],  # ranking 5,4,3,2,(0,1 tie -> 0 first); label 1 -> 6th: miss
        [5.0, -1.0, 2.0, 0.0, 1.0, 3.0],  # logits work too; label 5 -> 2nd: top5 hit
    ]
    labels = [1, 2, 1, 5]
    result = top_k.compute(predictions=scores, references=labels)
    assert result == {"top1": pytest.approx(1 / 4), "top5": pytest.approx(3 / 4)}
    assert top_k.compute(predictions=scores, references=labels, k=(2, 3)) == {
        "top2": pytest.approx(2 / 4),
        "top3": pytest.approx(3 / 4),
    }


def test_top_k_rejects_out_of_range_labels(top_k):
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        top_k.compute(predictions=[[0.2, 0.8]], references=[3])


def test_ece_by_hand(ece):
    # confidences .93 (correct), .62 (wrong), .64 (correct), .78 (correct); 10 bins of width .1
    probs = [[0.93, 0.07], [0.62, 0.38], [0.36, 0.64], [0.22, 0.78]]
    labels = [0, 1, 1, 1]
    # bins: (0.9,1]: {.93 ok} -> |1-.93|*1/4 ; (0.6,0.7]: {.62 wrong, .64 ok} -> |0.5-0.63|*2/4
    #       (0.7,0.8]: {.78 ok} -> |1-.78|*1/4
    expected = 0.07 / 4 + 0.13 * 2 / 4 + 0.22 / 4
    assert ece.compute(predictions=probs, references=labels, n_bins=10)["ece"] == pytest.approx(expected, abs=1e-6)


def test_ece_from_logits_applies_a_softmax(ece):
    logits = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    labels = [0, 2]
    p1 = math.exp(2) / (math.exp(2) + 2)  # 0.787, correct
    p2 = math.e / (math.e + 2)  # 0.576, wrong
    expected = 0.5 * abs(1 - p1) + 0.5 * abs(0 - p2)  # different bins of 15
    got = ece.compute(predictions=logits, references=labels, from_logits=True)["ece"]
    assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="must be probabilities"):
        ece.compute(predictions=logits, references=labels)
