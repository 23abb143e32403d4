"""The typed record of a run: what `results.json` holds. Every recipe writes one; the model card reads it.

`RunResults.from_dict` / `RunResults.load` check every field once and raise a ValueError naming the field and the
file; afterwards every value has its declared type (a metric that was not measured, null or NaN, is simply absent).
Keys a record does not know are kept in its `extra` and written back, so a newer results.json survives an older
reader. The JSON layout is the one the recipes have always written: a distilled model is under `student` (beside
its `teacher`), a fine-tuned one under `model`.

```python
>>> from hf_compact.results import DatasetRecord, ModelRecord, RunResults
>>> results = RunResults(
...     model_name="rt-student", model_type="compact_distilbert", task="text-classification",
...     dataset=DatasetRecord(name="reviews.csv", split="test", num_examples=200),
...     student=ModelRecord(parameters=11_000_000, metrics={"accuracy": 0.81}),
... )
>>> RunResults.from_dict(results.to_dict()) == results
True
>>> results.save("runs/rt-student/results.json")  # doctest: +SKIP
```
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .arguments import CardArguments, DataArguments
from .io import write_json_atomic


# The tasks a card can describe, with the pipeline that runs each.
TASKS = ("text-classification", "fill-mask", "token-classification")
# The longest data example a card quotes in its usage snippet.
EXAMPLE_MAX_CHARACTERS = 300


@dataclass(kw_only=True)
class Record:
    """Base of the records: typed fields read once by `from_dict`, unknown keys kept in `extra`."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the results dict", path: str = ""):
        """Read `data` (a JSON object) into this record; `source` and `path` name the file and field in errors."""
        _expect(isinstance(data, Mapping), path or "the results", data, "a JSON object", source)
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        values = {}
        for name, spec in known.items():
            where = f"{path}.{name}" if path else name
            value = _read(data.get(name), hints[name], where, source)
            if value is not None:
                values[name] = value
            elif spec.default is MISSING and spec.default_factory is MISSING:
                raise ValueError(f"Required field {where!r} is missing from {source}{cls._hints.get(name, '')}.")
        record = cls(**values, extra={k: copy.deepcopy(v) for k, v in data.items() if k not in known})
        record._check(source, path)
        return record

    # Said after "Required field ... is missing from <source>" for a field that needs explaining.
    _hints: typing.ClassVar[dict[str, str]] = {}

    def _check(self, source: str, path: str) -> None:
        """Checks that involve more than one field's type."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record: the fields that hold a value, then the unknown keys read with it."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        out = {name: value for name, value in out.items() if value is not None}
        out.update(copy.deepcopy(self.extra))
        return out


@dataclass(kw_only=True)
class ModelRecord(Record):
    """The model a run trained, measured on the evaluation split (`student` for distillation, `model` for
    fine-tuning)."""

    parameters: int
    metrics: dict[str, float]
    name_or_path: str | None = None  # where training started (fine-tuning)
    trainable_parameters: int | None = None
    file_size_bytes: int | None = None  # of the saved weights (the adapter's when saved_as is "adapter")
    saved_as: str | None = None  # "model" or "adapter" (PEFT)
    base_model_kwargs: dict[str, Any] | None = None  # what an adapter's base model is loaded with

    _hints = {"metrics": " (a mapping of metric names to measured numbers)"}

    def _check(self, source: str, path: str) -> None:
        if not self.metrics and not self.extra.get("metrics_not_measured"):  # none only when the record says why
            raise ValueError(f"Required field {path + '.metrics'!r} is missing from {source}{self._hints['metrics']}.")


@dataclass(kw_only=True)
class TeacherRecord(Record):
    """The teacher a student learned from (or, for fine-tuning, the model it was compared with)."""

    name_or_path: str | None = None
    model_type: str | None = None
    parameters: int | None = None
    metrics: dict[str, float] | None = None


@dataclass(kw_only=True)
class DistributedRecord(Record):
    """How training was spread over processes."""

    num_processes: int | None = None
    distributed_type: str | None = None
    per_device_batch_size: int | None = None
    global_batch_size: int | None = None
    threads_per_process: int | None = None
    rank_weight_checksums: list[str] | None = None  # equal when data-parallel processes stayed in step


@dataclass(kw_only=True)
class LoraRecord(Record):
    """The LoRA set-up as run."""

    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    target_modules: list[str] | None = None
    modules_to_save: list[str] | None = None  # trained in full beside the adapter (the heads)


@dataclass(kw_only=True)
class SeedRecord(Record):
    """One seed's result. In JSON a flat object: `{"seed": 1, "accuracy": 0.81}`."""

    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the results dict", path: str = ""):
        _expect(isinstance(data, Mapping), path, data, "a JSON object", source)
        metrics = {name: value for name, value in data.items() if name != "seed"}
        return cls(seed=_read(data.get("seed"), int, f"{path}.seed", source),
                   metrics=_read(metrics, dict[str, float], path, source))

    def to_dict(self) -> dict[str, Any]:
        return ({"seed": self.seed} if self.seed is not None else {}) | dict(self.metrics)


@dataclass(kw_only=True)
class TrainingRecord(Record):
    """How the model was trained, as run (`epochs` and `steps` are what ran, not what was asked for)."""

    method: str | None = None  # "distillation", "fine-tuning", "fine-tuning with LoRA (r=8)", ...
    problem_type: str | None = None
    epochs: float | None = None
    steps: int | None = None  # optimizer steps
    learning_rate: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    temperature: float | None = None
    loss_weights: dict[str, float] | None = None  # kd, ce, cos, mse, attention
    layer_map: list[int] | None = None  # the teacher layer each student layer starts from or is matched to
    init: str | None = None  # "teacher layers[; detail]" or "scratch"
    frozen: list[str] | None = None
    mixed_precision: str | None = None
    dropout: float | None = None
    teacher_cache: bool | None = None
    teacher_cache_seconds: float | None = None
    history: list[dict[str, Any]] | None = None  # one entry per evaluation
    train_seconds: float | None = None
    distributed: DistributedRecord | None = None
    seeds: list[SeedRecord] | None = None  # every seed's result, where the run was repeated
    lora: LoraRecord | None = None


@dataclass(kw_only=True)
class DatasetRecord(Record):
    """The data: where it came from, the split measured and its first example (the card's usage snippet)."""

    name: str
    split: str | None = None
    num_examples: int | None = None
    source: str | None = None  # the Hub dataset or the training file
    hub_id: str | None = None  # only for data loaded from the Hub
    config: str | None = None
    description: str | None = None
    example: str | None = None
    example_pair: str | None = None


@dataclass(kw_only=True)
class SpeedRecord(Record):
    """Latency measured side by side: `teacher_*` and `student_*` for a student, `model_*` for a model alone."""

    teacher_ms: float | None = None  # per batch
    student_ms: float | None = None
    model_ms: float | None = None
    speedup: float | None = None
    teacher_texts_per_s: float | None = None
    student_texts_per_s: float | None = None
    model_texts_per_s: float | None = None
    teacher_single_text_ms: float | None = None
    student_single_text_ms: float | None = None
    batch_size: int | None = None
    sequence_length: int | str | None = None  # a fixed length, or "real": each batch padded to its longest text
    texts: int | None = None
    threads: int | None = None
    hardware: str | None = None
    batches: int | None = None


@dataclass(kw_only=True)
class BaselineRecord(Record):
    """A baseline the model is compared with (e.g. the same student trained on the labels alone)."""

    description: str | None = None
    accuracy: float | None = None
    seeds: list[int] | None = None


@dataclass(kw_only=True)
class EngineTrial(Record):
    """One engine tried for a precision: its speed and accuracy on the evaluation texts, and whether it passed."""

    engine: str
    texts_per_s: float | None = None
    accuracy: float | None = None
    passed_gate: bool | None = None


@dataclass(kw_only=True)
class VariantRecord(Record):
    """A lower-precision copy of the saved model, checked against its float32 self on the same evaluation texts.

    Only a variant with `passed_gate` true is saved (under `path`, relative to the model folder) and published.
    """

    precision: str  # "bf16", "int8"
    engine: str  # the engine kept for it: "torch", "onnxruntime-dynamic", "onnxruntime-static"
    passed_gate: bool
    accuracy: float | None = None
    float32_accuracy: float | None = None  # the float32 model's accuracy on the same texts
    accuracy_drop_points: float | None = None  # float32 accuracy minus this one, in points
    tolerance_points: float | None = None  # the largest drop the gate accepts
    agreement: float | None = None  # share of texts given the float32 model's label
    max_score_difference: float | None = None  # largest change of any label's score
    texts_per_s: float | None = None
    float32_texts_per_s: float | None = None  # the float32 model, measured side by side
    single_text_ms: float | None = None
    file_size_bytes: int | None = None
    path: str | None = None
    reason: str | None = None  # why the gate refused it
    cpu_flags: list[str] | None = None  # the CPU's instruction-set flags the engine choice was measured with
    threads: int | None = None
    trials: list[EngineTrial] | None = None  # every engine tried for this precision

    @property
    def speedup(self) -> float | None:
        """Texts/s against the float32 model's, measured side by side."""
        if self.texts_per_s and self.float32_texts_per_s:
            return self.texts_per_s / self.float32_texts_per_s
        return None

    @property
    def accuracy_change_points(self) -> float | None:
        """This variant's accuracy minus the float32 model's, in points (negative: it lost accuracy)."""
        if self.accuracy_drop_points is not None:
            return -self.accuracy_drop_points
        if self.accuracy is not None and self.float32_accuracy is not None:
            return 100 * (self.accuracy - self.float32_accuracy)
        return None


@dataclass(kw_only=True)
class OutOfDomainRecord(Record):
    """The model measured on a set of texts from outside the domain it was trained on, a set it was never trained or
    tuned on (`teacher_accuracy`: the teacher on the same texts).

    Accuracies are fractions in [0, 1]. Where the model's figure is a median over seeds, `seed_accuracies` holds
    every seed's and `accuracy` is their median; `retention` is `accuracy / teacher_accuracy`.

    ```python
    >>> record = OutOfDomainRecord(name="airline tweets", num_examples=2670, accuracy=0.78, teacher_accuracy=0.8)
    >>> OutOfDomainRecord.from_dict(record.to_dict()) == record
    True

    ```
    """

    name: str  # the set's short name
    description: str | None = None
    num_examples: int | None = None
    accuracy: float
    teacher_accuracy: float | None = None
    retention: float | None = None
    seed_accuracies: list[float] | None = None

    _hints = {"name": " (the out-of-domain set's short name)", "accuracy": " (the model's accuracy on the set)"}

    def _check(self, source: str, path: str) -> None:
        for name in ("accuracy", "teacher_accuracy"):
            value = getattr(self, name)
            _expect(value is None or 0 <= value <= 1, f"{path}.{name}", value, "a fraction between 0 and 1", source)
        for index, value in enumerate(self.seed_accuracies or []):
            _expect(0 <= value <= 1, f"{path}.seed_accuracies[{index}]", value, "a fraction between 0 and 1", source)
        # The card shows accuracies to 0.01 points and retention to 0.1 points: the figures must agree to that.
        if self.seed_accuracies:
            median = statistics.median(self.seed_accuracies)
            _expect(abs(self.accuracy - median) < 5e-5, f"{path}.accuracy", self.accuracy,
                    f"the median of its seed_accuracies ({median!r})", source)
        if self.retention is not None and self.teacher_accuracy:
            ratio = self.accuracy / self.teacher_accuracy
            _expect(abs(self.retention - ratio) < 5e-4, f"{path}.retention", self.retention,
                    f"accuracy / teacher_accuracy ({ratio!r})", source)


@dataclass(kw_only=True)
class RunResults(Record):
    """Everything a run measured and recorded: the one source of the figures in its model card."""

    model_name: str
    model_type: str
    task: str
    dataset: DatasetRecord
    teacher: TeacherRecord | None = None
    student: ModelRecord | None = None
    model: ModelRecord | None = None
    training: TrainingRecord | None = None
    config: dict[str, Any] | None = None  # the model's config.to_dict() (or its diff)
    license: str | None = None  # a Hub license id, only when the user gave one
    language: str | list[str] | None = None  # ISO 639-1 code(s), only when the user gave them
    retention: dict[str, float] | None = None  # student metric / teacher metric
    base_model: str | None = None  # the Hub model the run descends from
    speed: SpeedRecord | None = None
    baseline: BaselineRecord | None = None
    variants: list[VariantRecord] | None = None  # lower-precision copies checked against this model
    out_of_domain: list[OutOfDomainRecord] | None = None  # one per out-of-domain set the model was measured on

    def _check(self, source: str, path: str) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} in {source} is not supported; use one of {sorted(TASKS)}.")
        if self.student is None and self.model is None:
            raise ValueError(f"Required field 'student' is missing from {source} (distillation writes 'student', "
                             "fine-tuning writes 'model').")

    @property
    def measured(self) -> ModelRecord:
        """The trained model's record: `student` (distillation) or `model` (fine-tuning)."""
        return self.student if self.student is not None else self.model

    @property
    def languages(self) -> list[str]:
        """The language codes given (`language` may be one code, a comma-separated string or a list)."""
        codes = self.language.split(",") if isinstance(self.language, str) else self.language or []
        return [code.strip() for code in codes if code.strip()]

    @property
    def is_adapter(self) -> bool:
        """Whether the folder holds a PEFT adapter rather than a whole model."""
        return self.model is not None and self.model.saved_as == "adapter"

    @property
    def is_distilled(self) -> bool:
        """Whether the model was distilled: `training.method` says so, or (without a method) a teacher is recorded."""
        method = self.training.method if self.training is not None else None
        return method == "distillation" if method else self.teacher is not None

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunResults:
        """Read a `results.json` (or the folder that holds one)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "results.json")
        if not os.path.isfile(path):
            raise ValueError(f"Results file {path!r} does not exist; pass the results.json a recipe wrote.")
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"Results file {path!r} is not valid JSON: {error}.") from error
        return cls.from_dict(data, source=f"results file {path!r}")

    def save(self, path: str | os.PathLike) -> str:
        """Write the record as `results.json` at `path`, atomically."""
        return write_json_atomic(path, self.to_dict())


def load_results(results: RunResults | Mapping | str | os.PathLike) -> RunResults:
    """A `RunResults` from a record, a results dict, a `results.json` path or the folder that holds it."""
    if isinstance(results, RunResults):
        return results
    if isinstance(results, Mapping):
        return RunResults.from_dict(results)
    return RunResults.load(results)


def usage_example(value: Any) -> str | None:
    """A data example as a usage example: a text, or a list of words (token classification) joined by spaces, cut
    at a word boundary to at most `EXAMPLE_MAX_CHARACTERS`; None for anything else or an empty text."""
    if isinstance(value, list) and all(isinstance(word, str) for word in value):
        value = " ".join(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = " ".join(value.split())
    if len(text) > EXAMPLE_MAX_CHARACTERS:
        text = text[: EXAMPLE_MAX_CHARACTERS + 1].rsplit(" ", 1)[0] or text[:EXAMPLE_MAX_CHARACTERS]
    return text


def dataset_record(data_args: DataArguments, card_args: CardArguments, data: Mapping, split: str) -> DatasetRecord:
    """What a run records about its data: its name and source, the split measured, its size, its Hub id (data from
    the Hub only), the user's description of it (`--dataset_description`) and its first example, the text of the
    card's usage snippet."""
    first = data[split][0]
    examples = {
        key: usage_example(first.get(column)) if column else None
        for key, column in (("example", data_args.text_column), ("example_pair", data_args.text_pair_column))
    }
    return DatasetRecord(
        name=data_args.dataset_name or os.path.basename(data_args.train_file),
        split=split,
        num_examples=len(data[split]),
        source=data_args.dataset_name or data_args.train_file,
        hub_id=data_args.dataset_name,
        config=data_args.dataset_config_name if data_args.dataset_name else None,
        description=card_args.dataset_description,
        **examples,
    )


def card_inputs(
    data_args: DataArguments, card_args: CardArguments, data: Mapping | None = None, split: str | None = None
) -> dict[str, Any]:
    """The `RunResults` fields only the user can give, as keyword arguments: `license` and `language` (None when
    not given) and, when `data` is given, the `dataset` record of `data[split]`:
    `RunResults(model_name=..., **card_inputs(data_args, card_args, data, "test"), ...)`."""
    languages = [code.strip() for code in (card_args.language or "").split(",") if code.strip()]
    inputs = {
        "license": card_args.license.strip() if card_args.license and card_args.license.strip() else None,
        "language": (languages if len(languages) > 1 else languages[0]) if languages else None,
    }
    if data is not None:
        inputs["dataset"] = dataset_record(data_args, card_args, data, split)
    return inputs


def _expect(condition: bool, path: str, value: Any, expected: str, source: str) -> None:
    if not condition:
        raise ValueError(f"{path!r} in {source} is {value!r}; it must be {expected}.")


def _read(value: Any, kind: Any, path: str, source: str) -> Any:
    """`value` checked against the type `kind`; None for an absent value (null, or a NaN number)."""
    if value is None:
        return None
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in arguments if option is not type(None)]
        if len(options) == 1:
            return _read(value, options[0], path, source)
        for option in options:
            try:
                return _read(value, option, path, source)
            except ValueError:
                pass
        _expect(False, path, value, " or ".join(_type_name(option) for option in options), source)
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_dict(value, source=source, path=path)
    if kind is Any:
        return copy.deepcopy(value)
    # In a list or a mapping of typed values (metrics, seeds), a null or NaN entry was not measured: left out.
    if origin is list:
        _expect(isinstance(value, list), path, value, "a list", source)
        items = [_read(item, arguments[0], f"{path}[{index}]", source) for index, item in enumerate(value)]
        return [item for item in items if item is not None]
    if origin is dict:
        _expect(isinstance(value, Mapping), path, value, "a JSON object", source)
        if arguments[1] is Any:
            return copy.deepcopy(dict(value))
        items = {str(key): _read(item, arguments[1], f"{path}.{key}", source) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not None}
    if kind is str:
        _expect(isinstance(value, str), path, value, "a string", source)
        return value if value.strip() else None
    if kind is bool:
        _expect(isinstance(value, bool), path, value, "true or false", source)
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    _expect(number, path, value, _type_name(kind), source)
    if not math.isfinite(value):
        return None  # not measured
    if kind is int:
        _expect(float(value).is_integer(), path, value, "a whole number", source)
        return int(value)
    return value


def _type_name(kind: Any) -> str:
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(kind, "a list")


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return copy.deepcopy(value)


__all__ = [
    "BaselineRecord",
    "DatasetRecord",
    "DistributedRecord",
    "EngineTrial",
    "LoraRecord",
    "ModelRecord",
    "OutOfDomainRecord",
    "Record",
    "RunResults",
    "SeedRecord",
    "SpeedRecord",
    "TASKS",
    "TeacherRecord",
    "TrainingRecord",
    "VariantRecord",
    "card_inputs",
    "dataset_record",
    "load_results",
    "usage_example",
]
