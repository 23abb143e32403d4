"""F1 score as a local `evaluate` module, computed with numpy alone.

Loaded by path (`hf_compact.metrics.load_metric("f1")`), so it needs no network. The values match
`sklearn.metrics.f1_score` (with `zero_division=0`); scikit-learn itself is not needed.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
The F1 score is the harmonic mean of precision and recall:
    F1 = 2 * (precision * recall) / (precision + recall) = 2 * TP / (2 * TP + FP + FN)
For more than two classes the per-class scores are combined by `average`. In the "multilabel" configuration a
prediction is a row of 0/1 indicators, one column per label.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or of `list` of `int` for "multilabel"): predicted labels.
    references (`list` of `int`, or of `list` of `int` for "multilabel"): true labels.
    labels (`list` of `int`, defaults to `None`): the labels to score and, for `average=None`, their order.
        Defaults to every label present in predictions or references (every column for "multilabel").
    pos_label (`int`, defaults to 1): the positive class when `average="binary"`.
    average (`str` or `None`, defaults to `"binary"`):
        - `"binary"`: the F1 of `pos_label` only; for data with at most two classes.
        - `"micro"`: F1 of the true positives, false positives and false negatives summed over the labels.
        - `"macro"`: the unweighted mean of the per-label F1 scores.
        - `"weighted"`: the mean of the per-label F1 scores weighted by each label's support.
        - `"samples"`: ("multilabel" only) the mean over examples of each example's F1.
        - `None`: the per-label F1 scores, as a list in the order of `labels`.
    sample_weight (`list` of `float`, defaults to `None`): one weight per example.
    zero_division (`float`, defaults to 0.0): the score given where F1 is undefined (no true nor predicted positives).

Returns:
    f1 (`float`, or `list` of `float` for `average=None`): in [0, 1], higher is better.

Examples:
    >>> from hf_compact.metrics import load_metric
    >>> f1 = load_metric("f1")
    >>> f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'f1': 0.6666666666666666}
    >>> f1.compute(predictions=[0, 2, 1, 0, 0, 1], references=[0, 1, 2, 0, 1, 2], average="macro")
    {'f1': 0.26666666666666666}
"""

_CITATION = ""

AVERAGES = ("binary", "micro", "macro", "weighted", "samples", None)


def _f1(tp, fp, fn, zero_division):
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), zero_division)


def _indicator_matrices(predictions, references, labels, average, pos_label):
    """Turn the inputs into (n_examples, n_labels) 0/1 matrices, one column per label to score."""
    if predictions.ndim == 2:  # multilabel indicators
        if average == "binary":
            raise ValueError(
                "average='binary' is not defined for multilabel data; use 'micro', 'macro', 'weighted', 'samples' "
                "or None."
            )
        columns = list(range(predictions.shape[1])) if labels is None else list(labels)
        bad = [c for c in columns if not 0 <= c < predictions.shape[1]]
        if bad:
            raise ValueError(f"labels {bad} are not columns of the {predictions.shape[1]}-label multilabel data.")
        return predictions[:, columns].astype(bool), references[:, columns].astype(bool)

    if average == "samples":
        raise ValueError("average='samples' is only defined for multilabel data; use 'micro', 'macro' or 'weighted'.")
    present = np.union1d(predictions, references)
    if average == "binary":
        if present.size > 2:
            raise ValueError(
                f"Target is multiclass ({present.size} classes: {present.tolist()}) but average='binary'; "
                "choose average='micro', 'macro', 'weighted' or None."
            )
        if pos_label not in present and present.size == 2:
            raise ValueError(f"pos_label={pos_label} is not a valid label; the labels are {present.tolist()}.")
        labels = [pos_label]
    elif labels is None:
        labels = present.tolist()
    labels = np.asarray(labels)
    return predictions[:, None] == labels[None, :], references[:, None] == labels[None, :]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
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
            reference_urls=["https://en.wikipedia.org/wiki/F-score"],
        )

    def _compute(
        self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None, zero_division=0.0
    ):
        if average not in AVERAGES:
            raise ValueError(f"average={average!r} is not supported; use one of {AVERAGES}.")
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions have shape {predictions.shape} but references have shape {references.shape}; "
                "give one prediction per reference."
            )
        predicted, actual = _indicator_matrices(predictions, references, labels, average, pos_label)
        weights = np.ones(len(predicted)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != (len(predicted),):
            raise ValueError(f"sample_weight has {weights.size} values for {len(predicted)} examples; give one each.")
        weights = weights[:, None]
        tp = ((predicted & actual) * weights).sum(axis=0)
        fp = ((predicted & ~actual) * weights).sum(axis=0)
        fn = ((~predicted & actual) * weights).sum(axis=0)

        if average == "micro":
            score = _f1(tp.sum(), fp.sum(), fn.sum(), zero_division)
        elif average == "samples":
            per_example = _f1(
                (predicted & actual).sum(axis=1), (predicted & ~actual).sum(axis=1), (~predicted & actual).sum(axis=1),
                zero_division,
            )
            score = np.average(per_example, weights=weights[:, 0])
        else:
            per_label = _f1(tp, fp, fn, zero_division)
            if average is None:
                return {"f1": [float(s) for s in per_label]}
            if average == "weighted":
                support = tp + fn
                score = np.average(per_label, weights=support) if support.sum() > 0 else zero_division
            else:  # "binary" (a single label) and "macro"
                score = per_label.mean() if per_label.size else zero_division
        return {"f1": float(score)}
