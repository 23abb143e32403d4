"""Lower-precision copies ("variants") of a saved text classifier, each kept only if it keeps the float32 model's
accuracy, with the engine for each precision chosen by measurement on the machine at hand.

```python
>>> from hf_compact.precision import load_variant, make_variants
>>> records = make_variants("my-student", ["bf16", "int8"], texts=texts, labels=labels,  # doctest: +SKIP
...                         calibration_texts=train_texts[:256])
>>> [(r.precision, r.engine, r.passed_gate) for r in records]  # doctest: +SKIP
[('bf16', 'torch', True), ('int8', 'onnxruntime-dynamic', True)]
>>> classifier = load_variant("my-student/variants/int8")  # doctest: +SKIP
>>> classifier(["a gripping, funny film"])  # doctest: +SKIP
[{'label': 'positive', 'score': 0.97}]
```

The precisions and the engines tried for each (`ENGINES`):

- `bf16`: `torch`, the model's weights in bfloat16, saved with `save_pretrained` (safetensors). The folder is a
  plain transformers folder: `pipeline("sentiment-analysis", model=folder)` and `AutoModel*.from_pretrained` load it
  as they load any model.
- `int8`: ONNX Runtime, `onnxruntime-dynamic` (int8 weights, activations quantised per batch as they come) and
  `onnxruntime-static` (activation ranges calibrated once on training texts). The folder holds `model.onnx`,
  `config.json` and the tokenizer, laid out as optimum's `ORTModelForSequenceClassification` expects;
  `load_variant(folder)` (hf_compact's `OnnxClassifier`) runs it with `classify`'s call and output. In these graphs a
  SqueezeBERT-style grouped projection is one matrix multiply per group (`ungroup_projections`), the form the
  quantiser turns into int8 matrix multiplies.

`make_variants` builds every candidate of each precision asked for, runs each on the evaluation texts (the gate: its
accuracy against the float32 model's on the same texts, the share of labels that agree, the largest change of a
score), times them side by side with the float32 model in one process (`hf_compact.benchmarking.compare_speed`),
and keeps, per precision, the fastest candidate whose accuracy is at most `tolerance` points below float32's, in
`<folder>/variants/<precision>/`, if it runs faster than float32 here. A precision whose every candidate loses more
is refused: no folder is left for it, and its record says by how much it lost; one that passes but runs slower than
float32 on this machine is not kept either, and its record says so. Which engine wins depends on the CPU (int8 dot-product and bfloat16
instructions, cores, cache), so the choice is made where the model will run, and `cpu_flags` records the machine.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from transformers.utils import logging

from .inference import BatchClassifier, TorchClassifier, apply_function, resolve_function_to_apply
from .results import EngineTrial, VariantRecord


logger = logging.get_logger(__name__)

PRECISIONS = ("bf16", "int8")
ENGINES: dict[str, tuple[str, ...]] = {
    "bf16": ("torch",),
    "int8": ("onnxruntime-dynamic", "onnxruntime-static"),
}
# The packages each engine needs, with what to install.
_REQUIREMENTS = {
    "torch": (),
    "onnxruntime-dynamic": ("onnxruntime", "onnx", "onnxscript"),
    "onnxruntime-static": ("onnxruntime", "onnx", "onnxscript"),
}
DEFAULT_TOLERANCE_POINTS = 0.5
VARIANTS_FOLDER = "variants"
ONNX_FILE = "model.onnx"
# Calibration texts used by static quantisation at most (more only adds time).
MAX_CALIBRATION_TEXTS = 512


# --------------------------------------------------------------------------------------------------------------------
# Checks, all before any work
# --------------------------------------------------------------------------------------------------------------------


def parse_precisions(value: str | Sequence[str] | None) -> list[str]:
    """`"bf16,int8"` (or a list) as a list of known precision names, in order, without repeats; [] for none."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [name.strip().lower() for name in names if name and name.strip()]
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown:
        raise ValueError(f"Unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)} (e.g. 'bf16,int8').")
    return list(dict.fromkeys(names))


def available_engines(precision: str) -> list[str]:
    """The engines of `precision` whose packages are installed here."""
    return [
        engine
        for engine in ENGINES[precision]
        if all(importlib.util.find_spec(package) is not None for package in _REQUIREMENTS[engine])
    ]


def check_engines(precisions: Sequence[str]) -> None:
    """Raise a ValueError when a precision has no installed engine, naming what to install."""
    for precision in precisions:
        if not available_engines(precision):
            packages = sorted({p for engine in ENGINES[precision] for p in _REQUIREMENTS[engine]})
            raise ValueError(
                f"No engine for {precision} is installed: it needs {', '.join(packages)} "
                f"(pip install {' '.join(packages)})."
            )


def check_variant_request(precisions: Sequence[str], *, architecture: str, problem_type: str | None,
                          num_labels: int) -> None:
    """Raise a ValueError before any work when a precision has no installed engine or the model (its class name,
    problem type and label count) is not a single-label text classifier: the gate compares accuracies."""
    check_engines(precisions)
    if not precisions:
        return
    if not architecture.endswith("ForSequenceClassification"):
        raise ValueError(
            f"Lower-precision variants are checked by classification accuracy, so they need a sequence-"
            f"classification model; this one is {architecture}, which has no text-classification pipeline."
        )
    if problem_type not in (None, "single_label_classification") or num_labels < 2:
        raise ValueError(
            f"Lower-precision variants are checked by accuracy, which needs single-label classification; this model "
            f"is set up for {problem_type or 'one output'} ({num_labels} label(s))."
        )


def check_run_request(precisions: Sequence[str], model, *, text_pair_column: str | None = None) -> None:
    """`check_variant_request` for a recipe's model (before training), as a SystemExit a command line shows."""
    if not precisions:
        return
    if text_pair_column:
        raise SystemExit("--export checks variants on single texts; runs on text pairs cannot export them yet.")
    try:
        check_variant_request(precisions, architecture=type(model).__name__, problem_type=model.config.problem_type,
                              num_labels=model.config.num_labels)
    except ValueError as error:
        raise SystemExit(f"--export {','.join(precisions)}: {error}") from None


def variants_for_run(
    folder: str,
    precisions: Sequence[str],
    data,
    *,
    text_column: str,
    label_column: str,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    log=print,
) -> list[VariantRecord]:
    """`make_variants` as the recipes run it: the gate on the validation split of `data` (a DatasetDict with label
    ids), static int8 calibrated on training texts, every engine on torch's thread count; one line logged per
    variant."""
    validation = data["validation"]
    records = make_variants(
        folder, precisions, texts=validation[text_column], labels=validation[label_column],
        calibration_texts=data["train"][text_column][:MAX_CALIBRATION_TEXTS], tolerance_points=tolerance_points,
    )
    for record in records:
        if record.passed_gate:
            log(f"{record.precision} ({record.engine}): accuracy {100 * record.accuracy:.2f}% "
                f"({-record.accuracy_drop_points:+.2f} points), {record.speedup:.2f}x float32's texts/s, "
                f"kept in {record.path}")
        else:
            log(f"{record.precision} refused: {record.reason}")
    return records


# --------------------------------------------------------------------------------------------------------------------
# Grouped projections in a form that quantises
# --------------------------------------------------------------------------------------------------------------------


class GroupedLinear(nn.Module):
    """A grouped projection on channels-last input as one `nn.Linear` per group, applied to its slice of the
    channels: the same numbers as the grouped 1x1 convolution it is built from, in a form quantisers recognise."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        groups = conv.groups
        self.in_per_group = conv.in_channels // groups
        out_per_group = conv.out_channels // groups
        weight = conv.weight.detach().squeeze(-1)
        self.parts = nn.ModuleList()
        for group in range(groups):
            rows = slice(group * out_per_group, (group + 1) * out_per_group)
            part = nn.Linear(self.in_per_group, out_per_group, bias=conv.bias is not None)
            part.to(weight.dtype)
            part.weight.data.copy_(weight[rows])
            if conv.bias is not None:
                part.bias.data.copy_(conv.bias.detach()[rows])
            self.parts.append(part)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        slices = hidden_states.split(self.in_per_group, dim=-1)
        return torch.cat([part(piece) for part, piece in zip(self.parts, slices)], dim=-1)


def ungroup_projections(model: nn.Module) -> nn.Module:
    """A copy of `model` whose grouped 1x1 projections (SqueezeBERT-style) are `GroupedLinear` modules; a model
    without any is returned as it is."""
    grouped = [name for name, module in model.named_modules() if _is_grouped_projection(module)]
    if not grouped:
        return model
    model = copy.deepcopy(model)
    for name in grouped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, GroupedLinear(getattr(parent, child)))
    return model


def _is_grouped_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv1d) and module.kernel_size == (1,) and type(module).__name__.endswith("GroupedConv")


# --------------------------------------------------------------------------------------------------------------------
# Building and loading variant folders
# --------------------------------------------------------------------------------------------------------------------


def _build(engine: str, model: PreTrainedModel, tokenizer, folder: str, calibration_texts: Sequence[str],
           float_onnx: Callable[[], str]) -> None:
    """Write the variant of `engine` into `folder`; `float_onnx()` gives the path of the model's float32 ONNX export,
    which the ONNX Runtime engines quantize."""
    os.makedirs(folder, exist_ok=True)
    if engine == "torch":
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return
    from .onnx_export import quantize_onnx_int8, quantize_onnx_int8_static

    target = os.path.join(folder, ONNX_FILE)
    if engine == "onnxruntime-dynamic":
        quantize_onnx_int8(float_onnx(), target)
    else:
        quantize_onnx_int8_static(float_onnx(), target, tokenizer, calibration_texts)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _exported_once(model: PreTrainedModel, folder: str) -> Callable[[], str]:
    """A function giving the path of `model`'s float32 ONNX export in `folder`, exported on the first call only:
    every int8 engine quantizes the same file."""
    path = os.path.join(folder, "float32.onnx")

    def float_onnx() -> str:
        if not os.path.exists(path):
            from .onnx_export import export_onnx

            export_onnx(ungroup_projections(model), path)
        return path

    return float_onnx


def load_variant(folder: str | os.PathLike, *, num_threads: int | None = None) -> BatchClassifier:
    """A classifier for a variant folder (or any saved sequence-classification folder), called like `classify`:
    `load_variant(folder)(texts)` gives the text-classification pipeline's results, `.logits(texts)` the logits.

    A folder with `model.onnx` runs through ONNX Runtime (`num_threads` intra-op threads; None lets it choose);
    any other loads with `AutoModelForSequenceClassification` in the dtype it was saved in.
    """
    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} holds no config.json; pass a folder written by save_pretrained or make_variants.")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    onnx_path = os.path.join(folder, ONNX_FILE)
    if os.path.isfile(onnx_path):
        from .onnx_export import OnnxClassifier

        return OnnxClassifier(onnx_path, tokenizer, config=AutoConfig.from_pretrained(folder), num_threads=num_threads)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype="auto").eval()
    return TorchClassifier(model, tokenizer)


def weights_size(folder: str) -> int:
    """Bytes of the weight files in `folder` (safetensors or ONNX)."""
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for name in os.listdir(folder)
        if name.endswith((".safetensors", ".onnx"))
    )


# --------------------------------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------------------------------


def gate(
    reference_logits: np.ndarray,
    logits: np.ndarray,
    labels: Sequence[int],
    config,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
) -> dict:
    """Compare a variant's logits with the float32 model's on the same texts: accuracies, the drop in points,
    agreement of the predicted labels, the largest change of a label's score, and whether the drop is within
    `tolerance_points`."""
    labels = np.asarray(labels)
    function = resolve_function_to_apply(config, "default")
    reference_scores = apply_function(reference_logits, function)
    scores = apply_function(logits, function)
    reference_predictions = reference_scores.argmax(-1)
    predictions = scores.argmax(-1)
    float32_accuracy = float((reference_predictions == labels).mean())
    accuracy = float((predictions == labels).mean())
    drop = 100 * (float32_accuracy - accuracy)
    return {
        "accuracy": accuracy,
        "float32_accuracy": float32_accuracy,
        "accuracy_drop_points": drop,
        "tolerance_points": tolerance_points,
        "agreement": float((predictions == reference_predictions).mean()),
        "max_score_difference": float(np.abs(scores - reference_scores).max()),
        "passed_gate": bool(drop <= tolerance_points),
    }


def _refusal(precision: str, engine: str, result: dict) -> str:
    return (
        f"{precision} ({engine}) loses {result['accuracy_drop_points']:.2f} accuracy points against float32 "
        f"({100 * result['accuracy']:.2f}% vs {100 * result['float32_accuracy']:.2f}%), more than the tolerance of "
        f"{result['tolerance_points']:g}"
    )


# --------------------------------------------------------------------------------------------------------------------
# make_variants
# --------------------------------------------------------------------------------------------------------------------


def make_variants(
    folder: str | os.PathLike,
    precisions: str | Sequence[str],
    *,
    texts: Sequence[str],
    labels: Sequence[int],
    calibration_texts: Sequence[str] = (),
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    repeats: int = 3,
    timing_texts: int | None = None,
    num_threads: int | None = None,
) -> list[VariantRecord]:
    """Build, check and time the lower-precision variants of the classifier saved in `folder`; keep, per precision,
    the fastest one that passes the gate (if it is faster than float32) in `folder/variants/<precision>/`; return one
    record per precision.

    Args:
        folder: a folder written by `save_pretrained` (a sequence-classification model and its tokenizer).
        precisions: `"bf16,int8"`, or a list of names from `PRECISIONS`.
        texts, labels: the evaluation texts and their label ids (the validation split), for the gate and the speed.
        calibration_texts: texts for static int8 calibration (training texts; not the evaluation ones). Without them
            the static engine is not tried.
        tolerance_points: the largest accuracy drop against float32, in points, a variant may have.
        repeats: timed passes over the evaluation texts (the median is kept).
        timing_texts: time the engines on the first this many evaluation texts only (None: all of them).
        num_threads: threads for every engine; None keeps torch's current count.

    Every check runs first: unknown precisions, engines that are not installed, a model that is not a single-label
    classifier, missing or mismatched texts and labels raise a ValueError before anything is built. A variant folder
    left by an earlier run is replaced only once the new one has passed, and removed when its precision is refused now.
    """
    from .benchmarking import compare_speed, cpu_flags

    folder = os.fspath(folder)
    precisions = parse_precisions(precisions)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} holds no config.json; pass a folder written by save_pretrained.")
    config = AutoConfig.from_pretrained(folder)
    check_variant_request(precisions, architecture=(config.architectures or ["an unknown class"])[0],
                          problem_type=config.problem_type, num_labels=config.num_labels)
    if len(texts) == 0 or len(texts) != len(labels):
        raise ValueError(
            f"make_variants needs evaluation texts with one label each; got {len(texts)} texts and {len(labels)} labels."
        )
    bad = [label for label in labels if not 0 <= int(label) < config.num_labels]
    if bad:
        raise ValueError(f"Label id {bad[0]} is outside the model's {config.num_labels} labels.")
    if not precisions:
        return []
    threads = num_threads or torch.get_num_threads()
    calibration_texts = list(calibration_texts)[:MAX_CALIBRATION_TEXTS]

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    reference = TorchClassifier(model, tokenizer)
    staging = tempfile.mkdtemp(dir=folder, prefix=".variants-")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        candidates: dict[tuple[str, str], BatchClassifier] = {}
        failures: dict[str, list[EngineTrial]] = {precision: [] for precision in precisions}
        float_onnx = _exported_once(model, staging)
        for precision in precisions:
            for engine in available_engines(precision):
                if engine == "onnxruntime-static" and not calibration_texts:
                    continue
                path = os.path.join(staging, f"{precision}-{engine}")
                try:
                    _build(engine, model, tokenizer, path, calibration_texts, float_onnx)
                    candidates[precision, engine] = load_variant(path, num_threads=threads)
                except Exception as error:  # noqa: BLE001  an engine that cannot take this model is left out
                    logger.warning(f"{precision} with {engine} failed for this model and is left out: {error}")
                    failures[precision].append(EngineTrial(engine=engine, extra={"error": str(error)[:500]}))
        missing = [p for p in precisions if not any(key[0] == p for key in candidates)]
        if missing:
            raise RuntimeError(f"No engine could build {missing[0]} for this model: "
                               + "; ".join(f"{t.engine}: {t.extra['error']}" for t in failures[missing[0]]))
        reference_logits = reference.logits(texts)
        checked = {key: gate(reference_logits, c.logits(texts), labels, config, tolerance_points)
                   for key, c in candidates.items()}
        timed = list(texts)[:timing_texts] if timing_texts else texts
        speed = compare_speed(
            {"float32": reference} | {f"{p}/{e}": c for (p, e), c in candidates.items()},
            tokenizer, timed, repeats=repeats,
        )["models"]
        records = []
        for precision in precisions:
            trials = [
                EngineTrial(engine=e, texts_per_s=speed[f"{p}/{e}"]["texts_per_s"],
                            accuracy=checked[p, e]["accuracy"], passed_gate=checked[p, e]["passed_gate"])
                for (p, e) in candidates if p == precision
            ] + failures[precision]
            passing = [trial for trial in trials if trial.passed_gate]
            chosen = max(passing or [t for t in trials if t.texts_per_s], key=lambda trial: trial.texts_per_s)
            result = checked[precision, chosen.engine]
            timing = speed[f"{precision}/{chosen.engine}"]
            source = os.path.join(staging, f"{precision}-{chosen.engine}")
            target = os.path.join(folder, VARIANTS_FOLDER, precision)
            record = VariantRecord(
                precision=precision,
                engine=chosen.engine,
                **result,
                texts_per_s=timing["texts_per_s"],
                float32_texts_per_s=speed["float32"]["texts_per_s"],
                single_text_ms=timing["single_text_ms"],
                file_size_bytes=weights_size(source),
                cpu_flags=cpu_flags(),
                threads=threads,
                trials=trials,
            )
            if os.path.isdir(target):
                shutil.rmtree(target)
            if not record.passed_gate:
                record.reason = _refusal(precision, chosen.engine, result)
            elif record.texts_per_s < record.float32_texts_per_s:
                record.reason = (f"slower than float32 on this machine ({record.texts_per_s:.1f} against "
                                 f"{record.float32_texts_per_s:.1f} texts/s)")
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(source, target)
                record.path = f"{VARIANTS_FOLDER}/{precision}"
            records.append(record)
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(staging, ignore_errors=True)
    variants_dir = os.path.join(folder, VARIANTS_FOLDER)
    if os.path.isdir(variants_dir) and not os.listdir(variants_dir):
        os.rmdir(variants_dir)
    return records


__all__ = [
    "DEFAULT_TOLERANCE_POINTS",
    "ENGINES",
    "GroupedLinear",
    "PRECISIONS",
    "available_engines",
    "check_engines",
    "check_run_request",
    "check_variant_request",
    "gate",
    "load_variant",
    "make_variants",
    "parse_precisions",
    "ungroup_projections",
    "variants_for_run",
]
