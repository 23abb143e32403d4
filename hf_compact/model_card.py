"""Model cards built from measured results: a run's `RunResults` (its `results.json`) is the only source of figures.

`build_model_card` turns a results record into a `huggingface_hub.ModelCard`: YAML metadata (license and language
where the user gave them, pipeline tag, tags, datasets, base model and a `model-index` with one `EvalResult` per
measured metric) and the text of the Jinja template `hf_compact/templates/model_card.md`, which holds all the prose.
This module only computes values for it: formatted numbers, links, tables and the usage snippets. A section whose
numbers are absent is left out; nothing is invented, and a card that would still hold a placeholder is refused.

```python
>>> from hf_compact.model_card import write_model_card
>>> comparison = [
...     {"name": "teacher", "accuracy": 0.80, "latency_ms": 40.1, "role": "teacher"},
...     {"name": "student", "accuracy": 0.79, "latency_ms": 20.0, "role": "student"},
... ]
>>> write_model_card("runs/rt-student", "runs/rt-student/results.json", comparison=comparison,
...                  repo_id="me/rt-compact-distilbert")
'runs/rt-student/README.md'
```
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Mapping
from importlib import metadata, resources
from types import SimpleNamespace
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from packaging.requirements import Requirement

from .flops import flops_per_token
from .io import write_text_atomic
from .model_types import COMPACT_TYPES, SQUEEZEBERT_GROUP_FIELDS
from .plots import plot_accuracy_vs_latency, validate_points
from .results import (
    OutOfDomainRecord,
    RunResults,
    SpeedRecord,
    TrainingRecord,
    VariantRecord,
    load_results,
    usage_example,
)


PLOT_FILENAME = "accuracy_vs_latency.png"
FLOPS_SEQUENCE_LENGTH = 128

TASK_NAMES = {
    "text-classification": "text classification",
    "fill-mask": "masked-language modelling (fill-mask)",
    "token-classification": "token classification",
}
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "nl": "Dutch"}
# Metrics that are fractions in [0, 1], shown as percentages.
FRACTION_METRICS = {"accuracy", "f1", "precision", "recall", "agreement", "exact_match"}
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
    "agreement": "Agreement with the teacher",
    "mlm_loss": "MLM loss",
    "perplexity": "Perplexity",
    "loss": "Loss",
}
PEFT_AUTO_CLASSES = {
    "text-classification": "AutoPeftModelForSequenceClassification",
    "token-classification": "AutoPeftModelForTokenClassification",
    "fill-mask": "AutoPeftModel",
}

# Strings that mean a figure or a template variable was not filled in.
_PLACEHOLDERS = [
    ("{{", re.compile(re.escape("{{"))),
    ("}}", re.compile(re.escape("}}"))),
    ("None", re.compile(r"\bNone\b")),
    ("nan", re.compile(r"\bnan\b", re.IGNORECASE)),
    ("TODO", re.compile(r"\bTODO\b")),
    ("TBD", re.compile(r"\bTBD\b")),
    ("N/A", re.compile(re.escape("N/A"))),
]
# The CPU flags that decide which lower-precision engine is fast, in the order a card names them ("amx" stands for
# every AMX flag: amx_bf16, amx_int8, amx_tile).
VARIANT_CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "amx", "avx2")
# The engine whose variant folder is a transformers folder (loaded by `pipeline`); other engines' folders load with
# hf_compact.precision.load_variant.
PIPELINE_ENGINE = "torch"

_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_API_TOKEN")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------------------


def metric_label(name: str) -> str:
    """Display name of a metric (`"f1"` -> `"F1"`)."""
    return METRIC_NAMES.get(name, name.replace("_", " ").capitalize())


def format_metric(name: str, value: float) -> str:
    """A metric as shown in the card: fractions as percentages with 2 decimals, others with 3 (1 from 100 up)."""
    if name in FRACTION_METRICS and 0 <= value <= 1:
        return f"{100 * value:.2f}%"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"


def format_parameters(count: float, exact: bool = False) -> str:
    """`11000000` -> `"11.0M"`, or with `exact` `"11.0M (11,000,000)"`."""
    count = int(count)
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            short = f"{count / scale:.2f}B" if unit == "B" else f"{count / scale:.1f}{unit}"
            return f"{short} ({count:,})" if exact else short
    return f"{count:,}"


def format_flops(flops: float) -> str:
    """`22413312` -> `"22.4 MFLOPs"`."""
    for scale, unit in ((1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops:.0f} FLOPs"


def format_rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.1f}"


def format_bytes(size: float) -> str:
    """`44061234` -> `"44.1 MB"`, `20480` -> `"20.5 kB"`."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _is_local_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("~", ".")) or "\\" in value or value.count("/") > 1


def public_name(value: str) -> str:
    """A name fit for a public card: a Hub id as it is, a local path reduced to its last component."""
    if _is_local_path(value):
        return os.path.basename(os.path.normpath(os.path.expanduser(value))) or value
    return value


def hub_model_id(value: Any) -> str | None:
    """`value` when it is a Hub model id (`owner/name` or a bare name), None for a local path or anything else."""
    if not isinstance(value, str) or not value or _is_local_path(value) or os.path.exists(value):
        return None
    return value if re.match(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", value) else None


def _model_link(value: str | None) -> str | None:
    if not value:
        return None
    name = public_name(value)
    if _HUB_ID.match(name) and not os.path.exists(value):
        return f"[{name}](https://huggingface.co/{name})"
    return f"`{name}`"


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _with_article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


# ---------------------------------------------------------------------------------------------------------------
# The values the template shows
# ---------------------------------------------------------------------------------------------------------------


def _complete_config(config: Mapping, model_type: str | None) -> Mapping:
    """`config` with the defaults of its configuration class filled in, where transformers knows the model type."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type") or model_type
    try:
        return CONFIG_MAPPING[model_type].from_dict(dict(config)).to_dict()
    except (KeyError, TypeError, ValueError):
        return config  # an unknown type or an unusual dict: read the fields it names


def architecture(config: Mapping | None, model_type: str | None = None) -> SimpleNamespace:
    """Layers, widths and groups from a `config.to_dict()` (DistilBERT or BERT field names); None where absent.

    Fields a (diff) config dict leaves out are taken from the defaults of `model_type`'s configuration class.
    """
    config = _complete_config(config, model_type) if isinstance(config, Mapping) else {}

    def pick(*names):
        for name in names:
            value = config.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    arch = SimpleNamespace(
        num_hidden_layers=pick("num_hidden_layers", "n_layers"),
        hidden_size=pick("hidden_size", "dim"),
        num_attention_heads=pick("num_attention_heads", "n_heads"),
        intermediate_size=pick("intermediate_size", "hidden_dim"),
        max_position_embeddings=pick("max_position_embeddings"),
        vocab_size=pick("vocab_size"),
        groups=None,
        flops=None,
        flops_length=FLOPS_SEQUENCE_LENGTH,
    )
    groups = {name: pick(name) for name in SQUEEZEBERT_GROUP_FIELDS if pick(name) is not None}
    if groups:
        arch.groups = ", ".join(f"{name.removesuffix('_groups').replace('_', '-')} {value}"
                                for name, value in groups.items())
    if None not in (arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size):
        counted = SimpleNamespace(**vars(arch), **groups)
        arch.flops = format_flops(flops_per_token(counted, FLOPS_SEQUENCE_LENGTH))
    if arch.vocab_size is not None:
        arch.vocab_size = f"{arch.vocab_size:,}"
    return arch


def _layers(training: TrainingRecord) -> SimpleNamespace | None:
    """Which teacher layer each student layer starts from (or is matched to), and what else the init says."""
    if not training.layer_map:
        return None
    init = training.init
    return SimpleNamespace(
        student=", ".join(str(index) for index in range(len(training.layer_map))),
        teacher=", ".join(str(index) for index in training.layer_map),
        from_teacher=init is None or init.startswith("teacher layers"),
        detail=init.split(";", 1)[1].strip() if init and ";" in init else "",
    )


def _epochs(epochs: float | None) -> str | None:
    """Epochs completed: whole (`2 epochs`) or a fraction of the data (`0.16 epochs`)."""
    if epochs is None:
        return None
    if abs(epochs - round(epochs)) < 1e-6:
        return f"{round(epochs)} epoch{'s' if round(epochs) != 1 else ''}"
    return f"{epochs:.2f} epochs"


def _seeds(training: TrainingRecord) -> SimpleNamespace | None:
    """Each seed's result and their median, as table cells."""
    rows = [row for row in training.seeds or [] if row.metrics]
    if not rows:
        return None
    columns = list(dict.fromkeys(name for row in rows for name in row.metrics))
    cells = [
        (str(row.seed) if row.seed is not None else f"run {index + 1}",
         [format_metric(c, row.metrics[c]) if c in row.metrics else "" for c in columns])
        for index, row in enumerate(rows)
    ]
    medians = [format_metric(c, statistics.median(row.metrics[c] for row in rows if c in row.metrics))
               for c in columns]
    labels = [str(row.seed) for row in rows if row.seed is not None]
    return SimpleNamespace(columns=[metric_label(c) for c in columns], rows=cells, medians=medians, labels=labels)


def _model_ms(speed: SpeedRecord) -> float | None:
    """The measured model's latency per batch (`student_ms` for a student, `model_ms` for a model alone)."""
    return _positive(speed.student_ms if speed.student_ms is not None else speed.model_ms)


def _timing(speed: SpeedRecord) -> SimpleNamespace:
    """Latencies, throughputs and speed-up, formatted; derived only from the numbers measured in `speed`."""
    model_ms = _model_ms(speed)
    teacher_ms = _positive(speed.teacher_ms)

    def rate(recorded, ms):
        if recorded is None and speed.batch_size and ms:
            recorded = speed.batch_size * 1000 / ms
        return format_rate(recorded) if _positive(recorded) else None

    model_rate = speed.student_texts_per_s if speed.student_texts_per_s is not None else speed.model_texts_per_s
    speedup = speed.speedup if speed.speedup is not None else (teacher_ms / model_ms if teacher_ms and model_ms
                                                                else None)
    return SimpleNamespace(
        model_ms=f"{model_ms:.1f}" if model_ms else None,
        teacher_ms=f"{teacher_ms:.1f}" if teacher_ms else None,
        model_rate=rate(model_rate, model_ms),
        teacher_rate=rate(speed.teacher_texts_per_s, teacher_ms),
        speedup=f"{speedup:.2f}x" if _positive(speedup) else None,
    )


def _retention(results: RunResults, teacher_metrics: dict[str, float]) -> dict[str, str]:
    retention = results.retention or {}
    model_accuracy = results.measured.metrics.get("accuracy")
    if not retention and model_accuracy is not None and teacher_metrics.get("accuracy"):
        retention = {"accuracy": model_accuracy / teacher_metrics["accuracy"]}
    return {name: f"{100 * value:.1f}%" for name, value in retention.items()}


def _metric_rows(results: RunResults, teacher_metrics: dict[str, float]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            label=_cell(metric_label(name)),
            teacher=format_metric(name, teacher_metrics[name]) if name in teacher_metrics else None,
            model=format_metric(name, value),
        )
        for name, value in results.measured.metrics.items()
        if name != "agreement"
    ]


def _dataset(results: RunResults) -> SimpleNamespace:
    dataset = results.dataset
    if dataset.hub_id:
        link = f"[{dataset.hub_id}](https://huggingface.co/datasets/{dataset.hub_id})"
    else:
        link = f"`{public_name(dataset.name)}`"
    source = public_name(dataset.source) if dataset.source else None
    return SimpleNamespace(
        link=link,
        split=dataset.split,
        num_examples=f"{dataset.num_examples:,}" if dataset.num_examples is not None else None,
        source=source if source not in (dataset.name, dataset.hub_id) else None,
        description=dataset.description,
    )


def _teacher(results: RunResults, measured_parameters: int) -> SimpleNamespace | None:
    teacher = results.teacher
    if teacher is None or not results.is_distilled:
        return None
    share = None
    if teacher.parameters:
        share = f"{100 * measured_parameters / teacher.parameters:.0f}%"
    return SimpleNamespace(
        link=_model_link(teacher.name_or_path or results.base_model),
        model_type=teacher.model_type,
        parameters=format_parameters(teacher.parameters) if teacher.parameters is not None else None,
        share=share,
    )


def _points(value: float) -> str:
    """A change in points with its sign (`-0.16`, `+0.08`, `0.00`)."""
    value = round(value, 2) + 0.0  # no "-0.00"
    return f"{value:+.2f}" if value else "0.00"


def _milliseconds(value: float | None) -> str | None:
    if not _positive(value):
        return None
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _relevant_flags(variants: list[VariantRecord]) -> list[str] | None:
    """The flags of `VARIANT_CPU_FLAGS` the variants were measured with; None where no variant recorded its CPU's."""
    if all(variant.cpu_flags is None for variant in variants):
        return None
    recorded = {flag.lower() for variant in variants for flag in variant.cpu_flags or []}
    return [flag for wanted in VARIANT_CPU_FLAGS
            for flag in sorted(recorded) if flag == wanted or (wanted == "amx" and flag.startswith("amx"))]


def _only(values) -> Any:
    """The one value all the variants share (absent ones ignored); None when they differ or none is recorded."""
    distinct = {value for value in values if value is not None}
    return distinct.pop() if len(distinct) == 1 else None


def _variant_row(variant: VariantRecord) -> SimpleNamespace:
    change, speedup = variant.accuracy_change_points, variant.speedup
    rate = format_rate(variant.texts_per_s) if _positive(variant.texts_per_s) else None
    if rate and speedup:
        rate = f"{rate} ({speedup:.2f}x)"
    return SimpleNamespace(
        precision=variant.precision,
        engine=variant.engine,
        accuracy=format_metric("accuracy", variant.accuracy) if variant.accuracy is not None else None,
        change=_points(change) if change is not None else None,
        agreement=format_metric("agreement", variant.agreement) if variant.agreement is not None else None,
        rate=rate,
        single_ms=_milliseconds(variant.single_text_ms),
        size=format_bytes(variant.file_size_bytes) if _positive(variant.file_size_bytes) else None,
        passed=variant.passed_gate,
        reason=variant.reason,
    )


def _variant_usage(results: RunResults, variant: VariantRecord, repo_id: str, compact: bool) -> SimpleNamespace:
    """How to load a saved variant: a transformers folder through `pipeline`, any other through
    `hf_compact.precision.load_variant`; from the Hub, its subfolder is downloaded first."""
    function = {"fill-mask": "fill_mask", "token-classification": "tagger"}.get(results.task, "classifier")
    through_pipeline = variant.engine == PIPELINE_ENGINE
    lines = ([f"import hf_compact  # registers {results.model_type} with transformers"]
             if through_pipeline and compact else [])
    from_hub = _HUB_ID.match(repo_id) and not os.path.exists(repo_id)
    if from_hub:
        lines.append("from huggingface_hub import snapshot_download")
    lines += ["from transformers import pipeline" if through_pipeline
              else "from hf_compact.precision import load_variant", ""]
    if from_hub:
        lines.append(f'download = snapshot_download("{repo_id}", allow_patterns=[{_literal(variant.path + "/*")}])')
        folder = f'f"{{download}}/{variant.path}"'
    else:
        folder = _literal(f"{repo_id}/{variant.path}")
    if through_pipeline:
        lines += [f'{function} = pipeline("{results.task}", model={folder})',
                  f"print({_usage_call(results, function)})"]
    else:
        text = usage_example(results.dataset.example) or "Your text here."
        lines += [f"{function} = load_variant({folder})", f"print({function}([{_literal(text)}]))"]
    return SimpleNamespace(precision=variant.precision, engine=variant.engine, path=variant.path,
                           pipeline=through_pipeline, snippet="\n".join(lines))


def _variants(results: RunResults, repo_id: str, compact: bool, plotted: bool) -> SimpleNamespace | None:
    """The lower-precision variants' table, the gate and CPU they were measured with, and the usage of each saved
    one; None for a run without variants."""
    variants = results.variants or []
    if not variants:
        return None
    tolerance = _only(variant.tolerance_points for variant in variants)
    threads = _only(variant.threads for variant in variants)
    float32_accuracy = _only(variant.float32_accuracy for variant in variants)
    return SimpleNamespace(
        rows=[_variant_row(variant) for variant in variants],
        tolerance=f"{tolerance:g}" if tolerance is not None else None,
        tolerances=", ".join(f"{variant.precision} {variant.tolerance_points:g}" for variant in variants
                             if variant.tolerance_points is not None),
        flags=_relevant_flags(variants),
        wanted_flags=[flag + ("*" if flag == "amx" else "") for flag in VARIANT_CPU_FLAGS],
        threads=threads,
        float32_accuracy=format_metric("accuracy", float32_accuracy) if float32_accuracy is not None else None,
        saved=[_variant_usage(results, variant, repo_id, compact) for variant in variants
               if variant.passed_gate and variant.path],
        plotted=plotted,
    )


def _out_of_domain_row(record: OutOfDomainRecord) -> SimpleNamespace:
    retention = record.retention
    if retention is None and record.teacher_accuracy:
        retention = record.accuracy / record.teacher_accuracy
    return SimpleNamespace(
        name=public_name(record.name),
        description=record.description.rstrip(".") if record.description else None,  # the card ends the sentence
        texts=f"{record.num_examples:,}" if record.num_examples is not None else None,
        accuracy=format_metric("accuracy", record.accuracy),
        teacher=format_metric("accuracy", record.teacher_accuracy) if record.teacher_accuracy is not None else None,
        retention=f"{100 * retention:.1f}%" if retention is not None else None,
        seeds=[format_metric("accuracy", value) for value in record.seed_accuracies or []],
    )


def _out_of_domain(results: RunResults) -> SimpleNamespace | None:
    """The out-of-domain sets' table (teacher and retention columns only where some set has them) and what each
    set is; None for a run without one."""
    rows = [_out_of_domain_row(record) for record in results.out_of_domain or []]
    if not rows:
        return None
    return SimpleNamespace(rows=rows, compared=any(row.teacher or row.retention for row in rows),
                           names=[row.name for row in rows])


# ---------------------------------------------------------------------------------------------------------------
# Usage snippets (code, written here; the text around them is in the template)
# ---------------------------------------------------------------------------------------------------------------


def _literal(text: str) -> str:
    """`text` as a Python string literal (double quotes, escapes where needed, non-ASCII kept readable)."""
    return json.dumps(text, ensure_ascii=False)


def _usage_call(results: RunResults, function: str) -> str:
    """The pipeline call of the usage snippet, on the example the run recorded from its data (a neutral text for a
    results file without one): never an invented text that could be mistaken for the model's domain."""
    example, pair = usage_example(results.dataset.example), usage_example(results.dataset.example_pair)
    if results.task == "fill-mask":
        words = example.split()[:-1] if example else ["Your", "text", "here,", "one", "word", "masked:"]
        return f"{function}({_literal(' '.join(words) + ' ')} + {function}.tokenizer.mask_token)"
    if example and pair and results.task == "text-classification":
        return f'{function}({{"text": {_literal(example)}, "text_pair": {_literal(pair)}}})'
    return f"{function}({_literal(example or 'Your text here.')})"


def _usage_examples(results: RunResults) -> list[str]:
    """The recorded example texts as they appear in the card (quoted), which may hold any word."""
    texts = [usage_example(results.dataset.example), usage_example(results.dataset.example_pair)]
    return [_literal(text) for text in texts if text] + [
        _literal(" ".join(text.split()[:-1]) + " ") for text in texts[:1] if text
    ]


def required_transformers() -> str | None:
    """The oldest transformers release the model code runs on: the lower bound of hf_compact's own requirement
    (pyproject.toml, read from the installed package's metadata), or None where that is not available."""
    try:
        requirements = metadata.requires("hf_compact") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requirements:
        requirement = Requirement(line)
        if requirement.name == "transformers":
            bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
            return bounds[0] if bounds else None
    return None


def _python(value: Any) -> str:
    """`value` (from JSON) as Python source: label maps get their integer ids back."""
    if isinstance(value, Mapping):
        items = ((int(k) if isinstance(k, str) and k.isdigit() else k, v) for k, v in value.items())
        return "{" + ", ".join(f"{_python(k)}: {_python(v)}" for k, v in items) + "}"
    return _literal(value) if isinstance(value, str) else repr(value)


def _usage(results: RunResults, repo_id: str, compact: bool, model_code: bool | None) -> dict:
    """The usage snippets: a pipeline on the model (through its stored code with `trust_remote_code`, unless
    `model_code` is False, and through hf_compact), or PEFT's Auto class for an adapter."""
    task = results.task
    function = {"fill-mask": "fill_mask", "token-classification": "tagger"}.get(task, "classifier")
    options = ', aggregation_strategy="simple"' if task == "token-classification" else ""
    call = f"print({_usage_call(results, function)})"
    if results.is_adapter:
        peft_class = PEFT_AUTO_CLASSES[task]
        kwargs = ", ".join(f"{name}={_python(value)}" for name, value in (results.model.base_model_kwargs or {}).items())
        load = (f'{peft_class}.from_pretrained(\n    "{repo_id}", {kwargs},\n)' if kwargs
                else f'{peft_class}.from_pretrained("{repo_id}")')
        lines = [f"import hf_compact  # registers the base model's type, {results.model_type}"] if compact else []
        lines += [
            f"from peft import {peft_class}",
            "from transformers import AutoTokenizer, pipeline",
            "",
            f"model = {load}",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'{function} = pipeline("{task}", model=model, tokenizer=tokenizer{options})',
            call,
        ]
        return {"snippet": "\n".join(lines), "remote": False,
                "transformers": required_transformers() if compact else None}
    snippet = f'{function} = pipeline("{task}", model="{repo_id}"{options}{{remote}})\n{call}'
    return {
        "remote": compact and model_code is not False,
        "snippet": snippet.replace("{remote}", ""),
        "remote_snippet": snippet.replace("{remote}", ", trust_remote_code=True"),
        "transformers": required_transformers(),
    }


# ---------------------------------------------------------------------------------------------------------------
# Template, checks, public entry points
# ---------------------------------------------------------------------------------------------------------------


def template_text() -> str:
    """The card template, `templates/model_card.md` of the installed package."""
    return resources.files("hf_compact").joinpath("templates", "model_card.md").read_text(encoding="utf-8")


def _environment() -> jinja2.Environment:
    """Jinja with block tags on lines of their own, an error for any name the values lack, and the card's filters."""
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined)
    environment.filters.update(
        oneline=lambda text: " ".join(text.split()) + "\n",  # a paragraph wrapped in the template, one line in the card
        cell=_cell,
        a=_with_article,
        g=lambda number: f"{number:g}",
        thousands=lambda number: f"{number:,}",
        metric_label=metric_label,
    )
    return environment


def card_context(
    results: RunResults,
    *,
    comparison: list[dict] | None = None,
    plot_file: str | None = None,
    repo_id: str | None = None,
    model_code: bool | None = None,
) -> dict[str, Any]:
    """The values the template renders: formatted figures, links, tables and snippets, nothing in prose."""
    measured, training = results.measured, results.training or TrainingRecord()
    compact = results.model_type in COMPACT_TYPES
    teacher = _teacher(results, measured.parameters)
    teacher_metrics = (results.teacher.metrics or {}) if teacher is not None else {}
    start = results.base_model or measured.name_or_path
    base_link = None
    if teacher is not None and results.base_model and results.teacher.name_or_path:
        if public_name(results.teacher.name_or_path) != results.base_model:
            base_link = _model_link(results.base_model)
    return {
        "model_name": results.model_name,
        "model_type": results.model_type,
        "task": results.task,
        "task_name": TASK_NAMES[results.task],
        "kind": COMPACT_TYPES[results.model_type].description if compact else f"`{results.model_type}` model",
        "compact": compact,
        "distilled": teacher is not None,
        "adapter": results.is_adapter,
        "teacher": teacher,
        "base_link": base_link,
        "start_link": _model_link(start),
        "dataset": _dataset(results),
        "size": SimpleNamespace(
            parameters=format_parameters(measured.parameters),
            parameters_exact=format_parameters(measured.parameters, exact=True),
            trainable=format_parameters(measured.trainable_parameters) if measured.trainable_parameters else None,
            trainable_exact=f"{measured.trainable_parameters:,}" if measured.trainable_parameters else None,
            file=format_bytes(measured.file_size_bytes) if _positive(measured.file_size_bytes) else None,
        ),
        "arch": architecture(results.config, results.model_type),
        "license": results.license,
        "language_names": [LANGUAGE_NAMES.get(code, code) for code in results.languages],
        "training": training,
        "layers": _layers(training),
        "losses": {name: weight for name, weight in (training.loss_weights or {}).items() if weight > 0},
        "epochs": _epochs(training.epochs),
        "seeds": _seeds(training),
        "plot_file": plot_file,
        "comparison_rows": [
            {"name": point["name"], "role": point["role"], "accuracy": format_metric("accuracy", point["accuracy"]),
             "latency": f"{point['latency_ms']:.1f}"}
            for point in (validate_points(comparison) if comparison else [])
        ],
        "metric_rows": _metric_rows(results, teacher_metrics),
        "metrics_note": measured.extra.get("metrics_not_measured"),
        "speed": results.speed or SpeedRecord(),
        "timing": _timing(results.speed or SpeedRecord()),
        "retention": _retention(results, teacher_metrics) if teacher is not None else {},
        "agreement": (format_metric("agreement", measured.metrics["agreement"])
                      if "agreement" in measured.metrics else None),
        "usage": _usage(results, repo_id or results.model_name, compact, model_code),
        "variants": _variants(results, repo_id or results.model_name, compact,
                              plotted=bool(plot_file and variant_points(results))),
        "variants_placed_by_speedup": _model_ms(results.speed or SpeedRecord()) is not None,
        "out_of_domain": _out_of_domain(results),
    }


def card_data(results: RunResults) -> ModelCardData:
    """The card's metadata. A model-index result must name a Hub dataset (its `dataset.type`): only data that came
    from the Hub gets one, as transformers' own cards leave out results without a dataset."""
    dataset, hub_id = results.dataset, results.dataset.hub_id
    eval_results = [
        EvalResult(
            task_type=results.task,
            task_name=TASK_NAMES[results.task],
            dataset_type=hub_id,
            dataset_name=dataset.name,
            dataset_config=dataset.config,
            dataset_split=dataset.split,
            metric_type=name,
            metric_name=metric_label(name),
            metric_value=value,
        )
        for name, value in results.measured.metrics.items()
    ] if hub_id else None
    tags = ["hf_compact", results.model_type] + (["distillation"] if results.is_distilled else [])
    base_model = hub_model_id(results.base_model)
    if results.is_adapter:  # as PEFT tags its own adapters
        tags += ["lora"] + ([f"base_model:adapter:{base_model}"] if base_model else [])
    languages = results.languages
    return ModelCardData(
        model_name=results.model_name,
        language=languages if len(languages) > 1 else (languages or [None])[0],
        license=results.license.strip() if results.license else None,
        library_name="peft" if results.is_adapter else "transformers",
        pipeline_tag=results.task,
        tags=tags,
        datasets=[hub_id] if hub_id else None,
        base_model=base_model,
        eval_results=eval_results,
    )


def check_card_text(text: str, verbatim: list[str] | tuple[str, ...] = ()) -> None:
    """Raise a ValueError if `text` holds a placeholder (`{{`, `}}`, `None`, `nan`, `TODO`, `TBD`, `N/A`) or a
    Hub token. The `verbatim` strings (quoted data examples, which may hold any word) are not scanned for
    placeholders; they are for tokens."""
    scanned = text
    for literal in sorted(verbatim, key=len, reverse=True):
        scanned = scanned.replace(literal, "")
    for label, pattern in _PLACEHOLDERS:
        match = pattern.search(scanned)
        if match:
            context = scanned[max(0, match.start() - 60) : match.end() + 60].replace("\n", " ")
            raise ValueError(
                f"The rendered model card still holds the placeholder {label!r} (near {context!r}); every figure "
                "must come from the results file. Fix or remove the field that produced it."
            )
    secrets = [os.environ.get(name) for name in _TOKEN_VARIABLES]
    if _TOKEN_PATTERN.search(text) or any(secret and len(secret) >= 8 and secret in text for secret in secrets):
        raise ValueError(
            "The rendered model card contains a Hugging Face access token; remove it from the results file."
        )


def build_model_card(
    results: RunResults | Mapping | str | os.PathLike,
    *,
    comparison: list[dict] | None = None,
    plot_file: str | None = None,
    repo_id: str | None = None,
    model_code: bool | None = None,
) -> ModelCard:
    """Render the model card of the model whose measured results are `results`.

    Args:
        results: a `RunResults`, the dict a recipe wrote to `results.json`, or the path of that file.
        comparison: accuracy-against-latency points (`{"name", "accuracy", "latency_ms", "role"}`), listed in a
            table under the plot.
        plot_file: path of the plot image relative to the card (embedded when given).
        repo_id: Hub id (or local folder) the usage snippets load; defaults to `results.model_name`.
        model_code: whether the model folder holds the model's code (`trust_remote_code`); False leaves that usage
            out. `write_model_card` reads it from the folder.

    Returns:
        A `huggingface_hub.ModelCard` whose metadata holds a `model-index` with one `EvalResult` per measured metric.

    Raises:
        ValueError: a required field is missing or has the wrong type (named, with the results file), or the
            rendered card would hold a placeholder or a token.
    """
    results = load_results(results)
    context = card_context(results, comparison=comparison, plot_file=plot_file, repo_id=repo_id,
                           model_code=model_code)
    text = _environment().from_string(template_text()).render(card_data=card_data(results).to_yaml(), **context)
    head, _, body = text.partition("\n---\n")  # one blank line between blocks of the body
    card = ModelCard(head + "\n---\n\n" + re.sub(r"\n{3,}", "\n\n", body).strip("\n") + "\n")
    check_card_text(str(card), verbatim=_usage_examples(results))
    return card


def _holds_model_code(folder: str) -> bool | None:
    """Whether `folder/config.json` maps the Auto classes to code files that are in the folder (None: no config)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        auto_map = json.load(handle).get("auto_map")
    if not isinstance(auto_map, Mapping) or not auto_map:
        return False
    modules = {str(reference).split("--")[-1].split(".")[0] for reference in auto_map.values()}
    return all(os.path.isfile(os.path.join(folder, module + ".py")) for module in modules)


def write_model_card(
    folder: str | os.PathLike,
    results: RunResults | Mapping | str | os.PathLike,
    *,
    comparison: list[dict] | None = None,
    repo_id: str | None = None,
) -> str:
    """Write `folder/README.md` (atomically) from measured results, with an accuracy-against-latency plot.

    When `comparison` has at least 2 points, `folder/accuracy_vs_latency.png` is drawn, with a point for each of the
    model's lower-precision variants (`variant_points`), and embedded with a relative link. Where `results` has no
    `config`, the architecture is read from `folder/config.json` if there is one.

    Args:
        folder: the model folder (created if missing).
        results: a `RunResults`, the results dict, or the path of a `results.json`.
        comparison: accuracy-against-latency points; see `hf_compact.plots.plot_accuracy_vs_latency`.
        repo_id: Hub id the usage snippets load; defaults to the model name.

    Returns:
        The path of the README.md written.
    """
    folder = os.fspath(folder)
    results = load_results(results)
    config_path = os.path.join(folder, "config.json")
    if results.config is None and os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            results = RunResults.from_dict({**results.to_dict(), "config": json.load(handle)})
    plot_file = None
    if comparison is not None and len(comparison) >= 2:
        batch = results.speed.batch_size if results.speed is not None else None
        plot_accuracy_vs_latency(
            list(comparison) + variant_points(results),
            os.path.join(folder, PLOT_FILENAME),
            title=f"{results.model_name}: accuracy against latency",
            latency_label=f"Latency (ms per batch of {batch})" if batch else "Latency (ms per batch)",
        )
        plot_file = PLOT_FILENAME
    card = build_model_card(results, comparison=comparison, plot_file=plot_file, repo_id=repo_id,
                            model_code=_holds_model_code(folder))
    return write_text_atomic(os.path.join(folder, "README.md"), str(card))


def comparison_from_results(results: RunResults | Mapping | str | os.PathLike) -> list[dict]:
    """Accuracy-against-latency points (teacher and this model) from the numbers measured in `results`.

    Returns an empty list where accuracy or latency is missing. Add baselines to the list before passing it to
    `write_model_card(..., comparison=...)`.
    """
    results = load_results(results)
    speed = results.speed or SpeedRecord()
    model_ms = _model_ms(speed)
    teacher = results.teacher if results.is_distilled else None
    points = []
    teacher_accuracy = (teacher.metrics or {}).get("accuracy") if teacher is not None else None
    if teacher_accuracy is not None and _positive(speed.teacher_ms):
        points.append({"name": public_name(teacher.name_or_path or "teacher"), "accuracy": teacher_accuracy,
                       "latency_ms": speed.teacher_ms, "role": "teacher"})
    accuracy = results.measured.metrics.get("accuracy")
    if accuracy is not None and model_ms:
        points.append({"name": results.model_name, "accuracy": accuracy, "latency_ms": model_ms,
                       "role": "student" if teacher is not None else "baseline"})
    return points


def variant_points(results: RunResults | Mapping | str | os.PathLike) -> list[dict]:
    """One accuracy-against-latency point per lower-precision variant (`role` "variant", `refused` where the gate
    refused it), named "<model> <precision>", on the plot's axis: milliseconds per batch.

    A variant's speed was measured side by side with the float32 model, so it is placed at the float32 model's
    latency (`speed.student_ms` or `speed.model_ms`) divided by its speed-up; without that latency, at the batch size
    of `speed` divided by its texts/s. A variant without a measured accuracy or speed has no point.
    """
    results = load_results(results)
    speed = results.speed or SpeedRecord()
    model_ms = _model_ms(speed)
    points = []
    for variant in results.variants or []:
        if variant.accuracy is None:
            continue
        if model_ms and variant.speedup:
            latency_ms = model_ms / variant.speedup
        elif speed.batch_size and _positive(variant.texts_per_s):
            latency_ms = speed.batch_size * 1000 / variant.texts_per_s
        else:
            continue
        points.append({"name": f"{results.model_name} {variant.precision}", "accuracy": variant.accuracy,
                       "latency_ms": latency_ms, "role": "variant", "refused": not variant.passed_gate})
    return points


__all__ = [
    "build_model_card",
    "card_context",
    "card_data",
    "check_card_text",
    "comparison_from_results",
    "hub_model_id",
    "required_transformers",
    "template_text",
    "usage_example",
    "variant_points",
    "write_model_card",
]
