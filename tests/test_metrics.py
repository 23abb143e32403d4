"""The project's evaluate modules load by path, offline, and compute what the recipes report."""

import numpy as np
import pytest

from hf_compact.metrics import compute_classification_metrics, load_metric, predictions_from_logits


def test_local_modules_load_offline_and_compute(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_metric("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}
    f1 = load_metric("f1").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])["f1"]
    assert f1 == pytest.approx(2 / 3)  # precision 1/2, recall 1
    agreement = load_metric("agreement").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    assert agreement == {"agreement": pytest.approx(2 / 3)}


def test_classification_metrics_with_teacher_agreement():
    metrics = compute_classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], teacher_predictions=[0, 1, 1, 1])
    assert metrics == {"accuracy": 0.75, "f1": pytest.approx(2 / 3), "agreement": 0.75}


def test_multi_label_regression_and_token_metrics():
    logits = np.array([[2.0, -1.0], [-3.0, 0.5], [1.0, 1.0]])
    assert predictions_from_logits(logits, "multi_label_classification").tolist() == [[1, 0], [0, 1], [1, 1]]
    multi = compute_classification_metrics([[1, 0], [0, 1], [1, 1]], [[1, 0], [0, 1], [1, 0]],
                                           problem_type="multi_label_classification")
    assert multi["accuracy"] == pytest.approx(2 / 3)
    regression = compute_classification_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0], problem_type="regression")
    assert regression["mse"] == pytest.approx(4 / 3) and regression["mae"] == pytest.approx(2 / 3)
    tokens = compute_classification_metrics([[0, 1, -100]], [[0, 0, -100]], problem_type="token_classification")
    assert tokens["accuracy"] == 0.5


def test_mismatched_shapes_and_unknown_metric_are_clear_errors():
    with pytest.raises(ValueError, match="one prediction per reference"):
        compute_classification_metrics([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="Unknown metric 'bleu'"):
        load_metric("bleu")
