"""Teacher and student of a distillation run: the teacher loaded and checked against the task, the student built
from it (layers of the layer map, grouped projections fitted to the dense ones), and the checks that would otherwise
fail hours later, each with the change that fixes it.

```python
>>> from hf_compact.distill_arguments import ModelArguments
>>> from hf_compact.distill_models import build_student, load_teacher
>>> args = ModelArguments(teacher="outputs/teacher", student_layers=3)  # doctest: +SKIP
>>> teacher = load_teacher(args.teacher, args.task)  # doctest: +SKIP
>>> student, layer_map = build_student(args, teacher)  # doctest: +SKIP
```
"""

from __future__ import annotations

import json
import os

import torch
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from .conversion import convert_to_compact
from .data import label_names
from .distill_arguments import ModelArguments
from .grouped_init import fit_grouped_projections
from .layer_map import default_layer_map, parse_layer_map
from .mlm_checks import check_mlm_teacher
from .model_types import COMPACT_MODEL_TYPES, SOURCE_MODEL_TYPES, SQUEEZEBERT_GROUP_FIELDS, is_grouped
from .validation import check_labels, load_config


# Each task: the teacher's Auto class, the head its architecture name ends with, and the Hub pipeline tag.
TASKS = {
    "sequence-classification": (
        AutoModelForSequenceClassification, "ForSequenceClassification", "text-classification"
    ),
    "token-classification": (AutoModelForTokenClassification, "ForTokenClassification", "token-classification"),
    "mlm": (AutoModelForMaskedLM, "ForMaskedLM", "fill-mask"),
}
DROPOUT_FIELDS = {
    "compact_distilbert": ("dropout", "attention_dropout"),
    "compact_squeezebert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
}


def load_teacher(name_or_path: str, task: str) -> PreTrainedModel:
    """The teacher, once its type and head are known to fit the task.

    For "mlm" any BERT-family checkpoint loads, with or without its masked-LM head: general distillation with the
    hidden-state and attention-relation losses uses the encoder alone. The soft-target loss needs a trained head,
    which `Distiller.between` (the checkpoint holds it) and `preflight` (its perplexity) check."""
    auto_class, wanted, _ = TASKS[task]
    config = load_config(name_or_path, "--teacher")
    if config.model_type not in SOURCE_MODEL_TYPES:
        raise SystemExit(
            f"The teacher is a {config.model_type!r} model; hf_compact distils BERT-family teachers of types "
            f"{SOURCE_MODEL_TYPES}."
        )
    architectures = config.architectures or []
    if task != "mlm" and architectures and not any(a.endswith((wanted, "ForPreTraining")) for a in architectures):
        raise SystemExit(
            f"The teacher's head is {architectures[0]}, which does not fit --task {task} (needs *{wanted}). "
            "Fine-tune a classifier first (recipes/finetune.py) or pick the matching --task."
        )
    return auto_class.from_pretrained(name_or_path, use_safetensors=True)


def _student_overrides(args: ModelArguments) -> dict:
    overrides = {}
    if args.student_config:
        with open(args.student_config) as handle:
            overrides = json.load(handle)
        overrides.pop("model_type", None)
    if args.student_dropout is not None:
        overrides.update(dict.fromkeys(DROPOUT_FIELDS[args.student_type], args.student_dropout))
    if args.student_feed_forward_groups and is_grouped(args.student_type):
        overrides.setdefault("intermediate_groups", args.student_feed_forward_groups)
        overrides.setdefault("output_groups", args.student_feed_forward_groups)
    if args.student_groups and is_grouped(args.student_type):
        for name in SQUEEZEBERT_GROUP_FIELDS:
            if name != "post_attention_groups":
                overrides.setdefault(name, args.student_groups)
    return overrides


def build_student(
    args: ModelArguments, teacher: PreTrainedModel, eager_attention: bool = False
) -> tuple[PreTrainedModel, list[int]]:
    """The student and its layer map (the teacher layer each student layer starts from and is aligned with)."""
    overrides = _student_overrides(args)
    num_teacher_layers = teacher.config.num_hidden_layers
    num_layers = args.student_layers or overrides.pop("num_hidden_layers", overrides.pop("n_layers", None))
    num_layers = num_layers or max(1, num_teacher_layers // 2)
    try:
        if args.layer_map:
            layers = parse_layer_map(args.layer_map, num_teacher_layers, num_layers)
        else:
            layers = default_layer_map(num_teacher_layers, num_layers, args.layer_strategy)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    attn = "eager" if eager_attention else args.attn_implementation
    if args.student_init:
        return student_from_folder(args.student_init, args.task, teacher, args.layer_map, attn)
    try:  # the config validates its shape (groups that divide the channels, whole heads) before weights are built
        if args.init == "teacher":
            student = convert_to_compact(teacher, args.student_type, layers=layers, **overrides)
        else:
            config = AutoConfig.for_model(args.student_type, **overrides)
    except ValueError as error:
        raise SystemExit(f"The student cannot be built: {error}") from None
    if args.init == "teacher":
        if attn:
            student.set_attn_implementation(attn)
        return student, layers
    setattr(config, "n_layers" if args.student_type == "compact_distilbert" else "num_hidden_layers", num_layers)
    for name in ("vocab_size", "id2label", "label2id", "pad_token_id"):
        setattr(config, name, getattr(teacher.config, name))
    config.teacher_layer_map = layers
    return TASKS[args.task][0].from_config(config, attn_implementation=attn), layers


def student_from_folder(
    folder: str, task: str, teacher: PreTrainedModel, layer_map: str | None = None,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, list[int]]:
    """A saved compact model (a general-distilled student, say) as the student of `task`: its embeddings and layers,
    the teacher's labels under a new head where the task needs one. The layer map is `layer_map` if given, else the
    one it was distilled with when that fits the teacher, else the default for the two depths."""
    config = load_config(folder, "--student_init")
    if config.model_type not in COMPACT_MODEL_TYPES:
        raise SystemExit(
            f"--student_init {folder} is a {config.model_type!r} model; a student is one of {COMPACT_MODEL_TYPES} "
            "(e.g. the output folder of a --task mlm run)."
        )
    num_teacher_layers, depth = teacher.config.num_hidden_layers, config.num_hidden_layers
    saved = config.teacher_layer_map or []
    try:
        if layer_map:
            layers = parse_layer_map(layer_map, num_teacher_layers, depth)
        elif len(saved) == depth and all(0 <= layer < num_teacher_layers for layer in saved):
            layers = list(saved)
        else:
            layers = default_layer_map(num_teacher_layers, depth)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    labels = {} if task == "mlm" else {"id2label": teacher.config.id2label, "label2id": teacher.config.label2id}
    student = TASKS[task][0].from_pretrained(folder, use_safetensors=True, attn_implementation=attn_implementation,
                                             **labels)
    student.config.teacher_layer_map = layers
    return student, layers


def has_grouped_projections(config) -> bool:
    return is_grouped(config.model_type) and any(getattr(config, f, 1) > 1 for f in SQUEEZEBERT_GROUP_FIELDS)


def fit_grouped_student(args: ModelArguments, teacher, student, layer_map, train_set, collator, batch_size: int):
    """Refit a grouped student's projections to the dense ones they replace, on the first training examples."""
    if (args.student_init or args.init != "teacher" or args.grouped_init != "fit"
            or not has_grouped_projections(student.config)):
        return
    dense_config = {f: getattr(student.config, f) for f in ("hidden_act", "layer_norm_eps")}
    dense_config.update(dict.fromkeys(SQUEEZEBERT_GROUP_FIELDS, 1))
    dense = convert_to_compact(teacher, "compact_squeezebert", layers=layer_map, **dense_config)
    examples = train_set.select(range(min(args.grouped_init_samples, len(train_set))))
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    examples = examples.remove_columns([c for c in examples.column_names if c not in inputs])
    fit_grouped_projections(student, dense, DataLoader(examples, batch_size=batch_size, collate_fn=collator))


def init_description(args: ModelArguments, student, num_train_examples: int) -> str:
    """How the student started, in words, for the results and the card."""
    if args.student_init:
        return "a saved compact student (--student_init)"
    if args.init == "scratch":
        return "scratch"
    if has_grouped_projections(student.config):
        if args.grouped_init == "fit":
            return (f"teacher layers; grouped projections fitted to the dense ones on "
                    f"{min(args.grouped_init_samples, num_train_examples)} training examples")
        return "teacher layers; grouped projections from their block-diagonal part"
    return "teacher layers"


def preflight(task: str, teacher, student, tokenizer, data, label_column: str | None, max_length: int,
              text_column: str = "text", soft_target_weight: float = 0.0) -> None:
    """Checks that would otherwise fail hours later, each with the change that fixes it. For "mlm" with a soft-target
    weight above 0, the teacher's masked-LM head must be in its checkpoint and score a perplexity far below the
    vocabulary size on seeded masks of the training texts (`hf_compact.mlm_checks.check_mlm_teacher`). With the weight
    at 0 the head plays no part: it is not checked, and no perplexity of it is measured or recorded
    (`hf_compact.mlm_checks.unused_mlm_head`)."""
    if student.config.vocab_size != teacher.config.vocab_size:
        raise SystemExit(
            f"Student vocab_size={student.config.vocab_size} differs from the teacher's "
            f"{teacher.config.vocab_size}: both must read the teacher's tokenizer. Remove vocab_size from the "
            "student config."
        )
    # Embedding tables may be padded past the vocabulary by a few rows, never by a tenth of it.
    if not 0.9 * teacher.config.vocab_size <= len(tokenizer) <= teacher.config.vocab_size:
        raise SystemExit(
            f"The tokenizer has {len(tokenizer)} tokens but the teacher's embeddings "
            f"{teacher.config.vocab_size}: this tokenizer does not belong to this teacher. Save the tokenizer the "
            "teacher was trained with into its folder."
        )
    positions = min(teacher.config.max_position_embeddings, student.config.max_position_embeddings)
    if max_length > positions:
        raise SystemExit(
            f"--max_length {max_length} is longer than the position table of the teacher or student "
            f"({positions} positions): use --max_length {positions} or less."
        )
    if task == "mlm" and soft_target_weight > 0:
        check_mlm_teacher(teacher, tokenizer, data["train"][text_column], max_length=max_length)
    if task != "mlm":
        names = label_names(data, label_column)
        values = data["train"][label_column]
        if task == "token-classification":
            values = [tag for tags in values for tag in tags]
        check_labels(teacher.config, len(names) if names else len(set(values)), names,
                     model=f"The teacher {teacher.name_or_path}", require_trained_head=True)


def output_bytes(student: torch.nn.Module, kept_checkpoints: int) -> int:
    """Disk space a run's outputs need: the saved student, plus the kept checkpoints (weights and AdamW state)."""
    weights = sum(p.numel() * p.element_size() for p in student.parameters())
    return weights * (1 + 3 * kept_checkpoints)


__all__ = [
    "TASKS",
    "build_student",
    "fit_grouped_student",
    "has_grouped_projections",
    "init_description",
    "load_teacher",
    "output_bytes",
    "preflight",
    "student_from_folder",
]
