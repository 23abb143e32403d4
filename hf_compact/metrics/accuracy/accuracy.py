"""Accuracy as a local `evaluate` module: the share of predictions equal to their references.

Loaded by path (`hf_compact.metrics.load_metric("accuracy")`), so it needs no network.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Accuracy is the proportion of correct predictions among all predictions:
    accuracy = (number of correct predictions) / (number of predictions)
With sample weights, each prediction counts with its weight. In the "multilabel" configuration a prediction is a
row of 0/1 indicators and counts as correct only when every indicator matches (subset accuracy).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or of `list` of `int` for "multilabel"): predicted labels.
    references (`list` of `int`, or of `list` of `int` for "multilabel"): true labels.
    normalize (`bool`, defaults to `True`): if `False`, return the (weighted) number of correct predictions instead
        of their proportion.
    sample_weight (`list` of `float`, defaults to `None`): one weight per prediction.

Returns:
    accuracy (`float`): the proportion of correct predictions in [0, 1] when `normalize=True`, otherwise their
        (weighted) number.

Examples:
    >>> from hf_compact.metrics import load_metric
    >>> accuracy = load_metric("accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], normalize=False)
    {'accuracy': 3.0}
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], sample_weight=[1, 1, 2, 0])
    {'accuracy': 0.5}
"""

_CITATION = ""


def _correct(predictions: np.ndarray, references: np.ndarray) -> np.ndarray:
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions have shape {predictions.shape} but references have shape {references.shape}; "
            "give one prediction per reference."
        )
    if predictions.ndim == 2:  # multilabel: a row is correct when all its indicators match
        return (predictions == references).all(axis=1)
    return predictions == references


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        value = datasets.Value("int32")
        if self.config_name == "multilabel":
            features = datasets.Features({"predictions": datasets.Sequence(value), "references": datasets.Sequence(value)})
        else:
            features = datasets.Features({"predictions": value, "references": value})
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            reference_urls=["https://en.wikipedia.org/wiki/Accuracy_and_precision"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        correct = _correct(np.asarray(predictions), np.asarray(references)).astype(np.float64)
        if sample_weight is None:
            weights = np.ones_like(correct)
        else:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.shape != correct.shape:
                raise ValueError(
                    f"sample_weight has {weights.size} values for {correct.size} predictions; give one weight each."
                )
        if not normalize:
            return {"accuracy": float(np.dot(correct, weights))}
        total = weights.sum()
        if total == 0:
            raise ValueError("sample_weight sums to 0, so accuracy is undefined; give at least one positive weight.")
        return {"accuracy": float(np.dot(correct, weights) / total)}
