"""Agreement with a teacher as a local `evaluate` module: the share of student predictions equal to the teacher's.

Loaded by path (`hf_compact.metrics.load_metric("agreement")`), so it needs no network.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Agreement measures how faithfully a distilled student imitates its teacher: the proportion of inputs on which the
student predicts the same label as the teacher, whatever the true label is.
    agreement = (number of inputs where student and teacher agree) / (number of inputs)
A student can keep the teacher's accuracy while disagreeing on many inputs; agreement shows that difference.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): the student's predicted labels.
    references (`list` of `int`): the teacher's predicted labels on the same inputs (not the true labels).
    sample_weight (`list` of `float`, defaults to `None`): one weight per input.

Returns:
    agreement (`float`): the proportion of inputs on which the two models agree, in [0, 1].

Examples:
    >>> from hf_compact.metrics import load_metric
    >>> agreement = load_metric("agreement")
    >>> agreement.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'agreement': 0.75}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Agreement(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        student, teacher = np.asarray(predictions), np.asarray(references)
        if student.shape != teacher.shape:
            raise ValueError(
                f"{student.size} student predictions but {teacher.size} teacher predictions; "
                "give both models' predictions on the same inputs."
            )
        same = (student == teacher).astype(np.float64)
        weights = np.ones_like(same) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != same.shape:
            raise ValueError(f"sample_weight has {weights.size} values for {same.size} predictions; give one each.")
        if weights.sum() == 0:
            raise ValueError("sample_weight sums to 0, so agreement is undefined; give at least one positive weight.")
        return {"agreement": float(np.dot(same, weights) / weights.sum())}
