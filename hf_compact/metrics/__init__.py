"""The project's evaluation metrics as local `evaluate` modules: accuracy, F1 and agreement-with-teacher.

`evaluate.load("accuracy")` fetches its script from the Hub at run time, which fails offline. These modules live
inside the package, one folder per metric in evaluate's usual layout (`accuracy/accuracy.py`, ...), and are loaded
by path, so they work with no network at all.

```python
>>> from hf_compact.metrics import load_metric, compute_classification_metrics
>>> load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
{'accuracy': 0.6666666666666666}
>>> compute_classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], teacher_predictions=[0, 1, 1, 1])
{'accuracy': 0.75, 'f1': 0.6666666666666666, 'agreement': 0.75}
```
"""

from __future__ import annotations

import os

import evaluate
import numpy as np


METRICS_DIR = os.path.dirname(os.path.abspath(__file__))
METRIC_NAMES = ("accuracy", "f1", "agreement")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression", "token_classification")
IGNORE_INDEX = -100  # the label of tokens that are not scored (special tokens, word continuations)

_loaded: dict[tuple[str, str | None], evaluate.EvaluationModule] = {}


def metric_path(name: str) -> str:
    """The folder of a local metric module, for `evaluate.load(metric_path("f1"))`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; hf_compact provides {list(METRIC_NAMES)}.")
    return os.path.join(METRICS_DIR, name)


def load_metric(name: str, config_name: str | None = None, **kwargs) -> evaluate.EvaluationModule:
    """Load one of the project's metrics from its local module: never downloads anything.

    Args:
        name: "accuracy", "f1" or "agreement".
        config_name: "multilabel" for accuracy / F1 on rows of 0/1 indicators; `None` for class ids.
        kwargs: passed on to `evaluate.load` (for example `experiment_id`). The results are kept in memory unless
            `keep_in_memory=False` is given, so concurrent processes never share cache files.
    """
    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(name), config_name, **kwargs)


def _metric(name: str, config_name: str | None = None) -> evaluate.EvaluationModule:
    key = (name, config_name)
    if key not in _loaded:
        _loaded[key] = load_metric(name, config_name)
    return _loaded[key]


def predictions_from_logits(logits: np.ndarray, problem_type: str = "single_label_classification") -> np.ndarray:
    """Class ids (argmax), 0/1 indicators (logit > 0, i.e. sigmoid > 0.5) or values (regression) from logits."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type={problem_type!r} is not supported; use one of {PROBLEM_TYPES}.")
    logits = np.asarray(logits)
    if problem_type == "regression":
        return logits.reshape(len(logits), -1)[:, 0] if logits.ndim > 1 else logits
    if problem_type == "multi_label_classification":
        return (logits > 0).astype(np.int64)
    return logits.argmax(axis=-1)


def compute_classification_metrics(
    predictions,
    references,
    *,
    problem_type: str = "single_label_classification",
    num_labels: int | None = None,
    teacher_predictions=None,
) -> dict[str, float]:
    """Evaluate predictions (not logits: see `predictions_from_logits`) the way the recipes report them.

    - single-label: accuracy, F1 ("binary" for two classes, else "macro"), and agreement with `teacher_predictions`
      when given;
    - multi-label (rows of 0/1 indicators): subset accuracy, micro and macro F1;
    - token classification (one label per token, `-100` for tokens not scored): token accuracy and macro F1 over
      the scored tokens;
    - regression: mean squared error, mean absolute error and Pearson correlation.
    """
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type={problem_type!r} is not supported; use one of {PROBLEM_TYPES}.")
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions have shape {predictions.shape} but references have shape {references.shape}; "
            "give one prediction per reference."
        )
    if problem_type == "regression":
        predictions, references = predictions.astype(np.float64).ravel(), references.astype(np.float64).ravel()
        errors = predictions - references
        spread = predictions.std() * references.std()
        pearson = float(((predictions - predictions.mean()) * (references - references.mean())).mean() / spread)
        return {
            "mse": float(np.mean(errors**2)),
            "mae": float(np.mean(np.abs(errors))),
            "pearson": pearson if spread > 0 else 0.0,
        }
    if problem_type == "multi_label_classification":
        predictions, references = predictions.astype(np.int64), references.astype(np.int64)
        f1 = _metric("f1", "multilabel")
        return {
            "accuracy": _metric("accuracy", "multilabel").compute(predictions=predictions, references=references)[
                "accuracy"
            ],
            "f1_micro": f1.compute(predictions=predictions, references=references, average="micro")["f1"],
            "f1_macro": f1.compute(predictions=predictions, references=references, average="macro")["f1"],
        }
    if problem_type == "token_classification":
        scored = references != IGNORE_INDEX
        predictions, references = predictions[scored], references[scored]
        return {
            "accuracy": _metric("accuracy").compute(predictions=predictions, references=references)["accuracy"],
            "f1_macro": _metric("f1").compute(predictions=predictions, references=references, average="macro")["f1"],
        }

    two_classes = (num_labels or len(np.union1d(predictions, references))) <= 2
    metrics = {
        "accuracy": _metric("accuracy").compute(predictions=predictions, references=references)["accuracy"],
        "f1": _metric("f1").compute(
            predictions=predictions, references=references, average="binary" if two_classes else "macro"
        )["f1"],
    }
    if teacher_predictions is not None:
        metrics["agreement"] = _metric("agreement").compute(
            predictions=predictions, references=np.asarray(teacher_predictions)
        )["agreement"]
    return metrics


__all__ = [
    "METRIC_NAMES",
    "compute_classification_metrics",
    "load_metric",
    "metric_path",
    "predictions_from_logits",
]
