"""Fine-tuning with the transformers `Trainer`: the work `recipes/finetune.py` leaves to the library.

What the label column holds (`problem_type_of`, `label_count`) and whether a trained head fits it
(`hf_compact.validation.check_labels`, shared with distillation); the model with its head and optional LoRA adapters
(`ModelArguments`, `load_model`); the metrics the Trainer reports, with agreement against a teacher's predictions
(`metrics_function`, `teacher_predictions`); and what a run leaves behind (`save_final_model`, and
`results_record`, its `hf_compact.results.RunResults`).

```python
>>> from transformers import HfArgumentParser
>>> from hf_compact.finetuning import ModelArguments
>>> (model_args,) = HfArgumentParser(ModelArguments).parse_args_into_dataclasses(
...     ["--model_name_or_path", "bert-folder", "--lora_r", "8"])
>>> model_args.lora_r, model_args.task
(8, 'sequence-classification')
```
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Literal

import datasets
import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)
from transformers.utils import logging

from .arguments import CardArguments, DataArguments
from .data import label_names, load_recipe_dataset, tokenize_dataset, tokenize_token_dataset
from .metrics import compute_classification_metrics, predictions_from_logits
from .model_card import hub_model_id
from .output_dir import move_into
from .results import (
    DistributedRecord,
    LoraRecord,
    ModelRecord,
    RunResults,
    TeacherRecord,
    TrainingRecord,
    card_inputs,
)
from .validation import check_labels, load_config


logger = logging.get_logger(__name__)

TOKEN_CLASSIFICATION = "token_classification"


@dataclass
class ModelArguments:
    """The model to fine-tune, its task, the teacher it is compared with, and LoRA adapters (`lora_r` > 0)."""

    model_name_or_path: str = field(metadata={"help": "Folder or Hub name of a BERT-family or compact model."})
    task: Literal["sequence-classification", "token-classification"] = field(
        default="sequence-classification",
        metadata={"help": "Sequence classification (single-label, multi-label or regression, read from the label "
                          "column) or token classification (a column of word lists, one tag per word)."},
    )
    teacher: str | None = field(
        default=None, metadata={"help": "A fine-tuned teacher: report the agreement of predictions with it."}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"choices": ["sdpa", "eager"],
                  "help": "Attention kernel while training (default: the model's). With bf16 on a CPU, eager trains "
                          "faster at short lengths. The saved model loads with the default."},
    )
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the word embeddings as loaded (faster steps on a CPU, less overfitting)."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0: train all weights)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (the scale is alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Comma-separated module names (default: the model type's)."}
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "Merge the adapters into the saved weights where the layers allow."}
    )
    hub_base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of --model_name_or_path when that is a local folder: the base model named in the "
                          "card and, for a LoRA adapter, in adapter_config.json. Needed to push an adapter."},
    )

    def __post_init__(self):
        if self.lora_r < 0:
            raise ValueError(f"--lora_r must be 0 (no LoRA) or positive, got {self.lora_r}.")
        if self.merge_lora and not self.lora_r:
            raise ValueError("--merge_lora needs --lora_r.")
        if self.hub_base_model and not hub_model_id(self.hub_base_model):
            raise ValueError(
                f"--hub_base_model must be a Hub model id such as owner/name, got {self.hub_base_model!r}."
            )

    @property
    def base_model_on_hub(self) -> str | None:
        """The Hub id of the model fine-tuned: --hub_base_model, or --model_name_or_path when that is not a local
        folder; None for a local folder without one."""
        return self.hub_base_model or hub_model_id(self.model_name_or_path)

    @property
    def base_model_reference(self) -> str:
        """The base model a LoRA adapter names in adapter_config.json: its Hub id where known, else the absolute
        path of the local folder (a relative one breaks as soon as the adapter is loaded from another folder)."""
        return self.base_model_on_hub or os.path.abspath(self.model_name_or_path)

    @property
    def saves_adapter(self) -> bool:
        """Whether the run is planned to save an adapter (LoRA without --merge_lora)."""
        return bool(self.lora_r) and not self.merge_lora


# ---------------------------------------------------------------------------------------------------------------
# Data and labels
# ---------------------------------------------------------------------------------------------------------------


def load_data(data_args: DataArguments) -> datasets.DatasetDict:
    """The train/validation/test splits `data_args` describe (see `hf_compact.data.load_recipe_dataset`)."""
    kwargs = {f.name: getattr(data_args, f.name) for f in dataclasses.fields(data_args) if f.name != "max_length"}
    return load_recipe_dataset(**kwargs)


def problem_type_of(data: datasets.DatasetDict, label_column: str, task: str) -> str:
    """What the label column holds: class ids, per-word tags, multi-label indicators or regression values."""
    if task == "token-classification":
        return TOKEN_CLASSIFICATION
    feature = data["train"].features[label_column]
    if label_names(data, label_column) is not None or getattr(feature, "dtype", "").startswith("int"):
        return "single_label_classification"
    if hasattr(feature, "feature") or isinstance(feature, list):
        return "multi_label_classification"
    return "regression"


def label_count(data: datasets.DatasetDict, label_column: str, problem_type: str) -> int:
    """How many outputs the head needs: classes, indicators, tags, or 1 for regression."""
    names = label_names(data, label_column)
    if names is not None:
        return len(names)
    values = [v for split in data.values() for v in split[label_column]]
    if problem_type == "single_label_classification":
        return int(max(values)) + 1
    if problem_type == "multi_label_classification":
        return len(values[0])
    if problem_type == TOKEN_CLASSIFICATION:
        return int(max(max(tags) for tags in values)) + 1
    return 1


def tokenize_for_task(data: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, data_args: DataArguments,
                      problem_type: str) -> tuple[datasets.DatasetDict, object]:
    """The tokenized splits (with `labels` and `length` columns) and the collator that pads their batches."""
    if problem_type == TOKEN_CLASSIFICATION:
        tokenized = tokenize_token_dataset(data, tokenizer, words_column=data_args.text_column,
                                           tags_column=data_args.label_column, max_length=data_args.max_length)
        return tokenized, DataCollatorForTokenClassification(tokenizer)
    tokenized = tokenize_dataset(
        data, tokenizer, text_column=data_args.text_column, text_pair_column=data_args.text_pair_column,
        label_column=data_args.label_column, max_length=data_args.max_length,
    )
    if problem_type == "multi_label_classification":  # BCE wants float targets
        tokenized = tokenized.cast_column("labels", datasets.Sequence(datasets.Value("float32")))
    return tokenized, DataCollatorWithPadding(tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# The model, with LoRA adapters where asked
# ---------------------------------------------------------------------------------------------------------------


def load_model(model_args: ModelArguments, num_labels: int, names: list[str] | None,
               problem_type: str) -> tuple[PreTrainedModel, dict]:
    """The model with a head for the data's labels (LoRA-wrapped when `lora_r` > 0), and the keyword arguments the
    base model must be loaded with for an adapter's head (the data's labels where the head is new)."""
    config = load_config(model_args.model_name_or_path, "--model_name_or_path")
    trained_head = check_labels(config, num_labels, names, model=model_args.model_name_or_path)
    # A head that was never trained for labels is replaced when the data has another number of them.
    kwargs = {"num_labels": num_labels, "ignore_mismatched_sizes": not trained_head}
    if names is not None:
        kwargs["id2label"] = dict(enumerate(names))
        kwargs["label2id"] = {name: i for i, name in enumerate(names)}
    if problem_type != TOKEN_CLASSIFICATION:
        kwargs["problem_type"] = problem_type
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    auto_class = (AutoModelForTokenClassification if problem_type == TOKEN_CLASSIFICATION
                  else AutoModelForSequenceClassification)
    model = auto_class.from_pretrained(model_args.model_name_or_path, use_safetensors=True, **kwargs)
    base_kwargs = {} if trained_head else {k: v for k, v in kwargs.items() if k != "attn_implementation"}
    if model_args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if model_args.lora_r:
        model = add_lora(model, model_args, problem_type)
    return model, base_kwargs


def add_lora(model: PreTrainedModel, model_args: ModelArguments, problem_type: str):
    """`model` with LoRA adapters on the target modules (the model type's registered defaults unless named) and
    its heads trained in full beside them (DistilBERT-style heads have a pre-classifier too)."""
    from peft import LoraConfig, TaskType, get_peft_model

    # PEFT writes the model's name_or_path into adapter_config.json and its tags.
    model.name_or_path = model.config._name_or_path = model_args.base_model_reference
    heads = [name for name in ("pre_classifier", "classifier") if hasattr(model, name)]
    targets = model_args.lora_target_modules
    if not targets:  # the model type's registered defaults
        from .registration import register_peft

        register_peft()
    lora = LoraConfig(
        task_type=TaskType.TOKEN_CLS if problem_type == TOKEN_CLASSIFICATION else TaskType.SEQ_CLS,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets.split(",") if targets else None,
        modules_to_save=heads,
    )
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info(f"LoRA: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)")
    return model


def lora_mergeable(model) -> bool:
    """Whether merge_and_unload can fold every adapter into its layer: PEFT cannot merge into grouped
    convolutions (compact_squeezebert's projections with groups > 1)."""
    from peft.tuners.lora import LoraLayer

    return all(getattr(m.get_base_layer(), "groups", 1) == 1 for m in model.modules() if isinstance(m, LoraLayer))


def check_adapter_is_publishable(model, model_args: ModelArguments, push_to_hub: bool) -> None:
    """Refuse, before training, a push of LoRA adapters that cannot be merged (so --merge_lora would save an
    adapter) and whose base model is a local folder."""
    if push_to_hub and model_args.merge_lora and not model_args.base_model_on_hub and not lora_mergeable(model):
        raise SystemExit(
            "The LoRA adapters on grouped projections cannot be merged, so --merge_lora would save an adapter whose "
            f"base model is the local folder {model_args.model_name_or_path}, which nobody else can load. Push the "
            "base model to the Hub and pass its id with --hub_base_model owner/name."
        )


def lora_record(model) -> LoraRecord:
    """The LoRA set-up as run, for results.json and the card: rank, alpha, dropout, the adapted modules and the
    modules trained in full (the heads)."""
    config = model.peft_config[model.active_adapter]
    return LoraRecord(
        r=config.r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=sorted(config.target_modules),
        modules_to_save=[name for name in config.modules_to_save or [] if hasattr(model.get_base_model(), name)],
    )


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def best_model_metric(problem_type: str) -> tuple[str, bool]:
    """The validation metric that picks the best checkpoint, and whether greater is better."""
    return ("mse", False) if problem_type == "regression" else ("accuracy", True)


def teacher_predictions(teacher: str, tokenized: datasets.DatasetDict, collator, problem_type: str,
                        batch_size: int) -> dict[str, np.ndarray]:
    """The teacher's predictions on the validation and test splits, for the agreement metric."""
    model = AutoModelForSequenceClassification.from_pretrained(teacher, use_safetensors=True).eval()
    predictions = {}
    for split in ("validation", "test"):
        inputs = tokenized[split].remove_columns(["labels", "length"])
        loader = torch.utils.data.DataLoader(inputs, batch_size=batch_size, collate_fn=collator)
        with torch.inference_mode():
            logits = torch.cat([model(**batch).logits for batch in loader])
        predictions[split] = predictions_from_logits(logits.float().numpy(), problem_type)
    return predictions


def metrics_function(problem_type: str, num_labels: int, teacher_labels: np.ndarray | None = None):
    """A `compute_metrics` for the Trainer: the project's metrics, with agreement when the teacher's predictions on
    the evaluated split are given."""

    def compute_metrics(evaluation):
        logits = evaluation.predictions[0] if isinstance(evaluation.predictions, tuple) else evaluation.predictions
        references = evaluation.label_ids
        if problem_type == TOKEN_CLASSIFICATION:
            predictions = np.where(references != -100, np.argmax(logits, axis=-1), -100)
            return compute_classification_metrics(
                predictions, references, problem_type=problem_type, num_labels=num_labels
            )
        predictions = predictions_from_logits(logits, problem_type)
        teacher = teacher_labels if teacher_labels is not None and len(teacher_labels) == len(predictions) else None
        return compute_classification_metrics(
            predictions, references, problem_type=problem_type, num_labels=num_labels, teacher_predictions=teacher
        )

    return compute_metrics


def final_test_metrics(trainer: Trainer, test_split: datasets.Dataset) -> dict[str, float]:
    """The metrics of the float32 model that is saved on `test_split`, without the Trainer's timings and loss. The
    autocast wrapper that mixed precision put around the forward for training is removed first."""
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    metrics = trainer.evaluate(test_split, metric_key_prefix="test")
    skipped = ("loss", "runtime", "samples_per_second", "steps_per_second")
    metrics = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")}
    return {k: v for k, v in metrics.items() if k not in skipped}


# ---------------------------------------------------------------------------------------------------------------
# What a run leaves behind
# ---------------------------------------------------------------------------------------------------------------


def save_final_model(model, tokenizer: PreTrainedTokenizerBase, output_dir: str, *, merge_lora: bool) -> str:
    """Save the model (merged, full or adapter) and tokenizer into a staging folder, then move them into
    `output_dir`; returns what was saved: "model", "merged model" or "adapter"."""
    is_peft = hasattr(model, "peft_config")
    saved = "adapter" if is_peft else "model"
    if is_peft and merge_lora:
        try:
            model = model.merge_and_unload()
            saved = "merged model"
        except (NotImplementedError, ValueError, RuntimeError) as error:
            logger.warning(f"LoRA adapters cannot be merged here ({error}); saving them as an adapter instead.")
    staging = tempfile.mkdtemp(prefix=".staging-", dir=output_dir)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    move_into(staging, output_dir)
    return saved


def results_record(trainer: Trainer, model_args: ModelArguments, data_args: DataArguments, card_args: CardArguments,
                   data: datasets.DatasetDict, *, output_dir: str, work_dir: str, saved: str, problem_type: str,
                   metrics: dict[str, float], base_kwargs: dict) -> RunResults:
    """What results.json records of a fine-tuning run: the model and its test metrics, the training as run, the
    data and what the user said for the card."""
    args, model = trainer.args, trainer.model
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    weights = os.path.join(work_dir, "adapter_model.safetensors" if saved == "adapter" else "model.safetensors")
    batch_size = args.per_device_train_batch_size
    return RunResults(
        model_name=os.path.basename(os.path.abspath(output_dir)),
        model_type=base.config.model_type,
        task="token-classification" if problem_type == TOKEN_CLASSIFICATION else "text-classification",
        model=ModelRecord(
            name_or_path=model_args.model_name_or_path,
            parameters=base.num_parameters(),
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            file_size_bytes=os.path.getsize(weights) if os.path.exists(weights) else None,
            saved_as=saved,
            metrics=metrics,
            base_model_kwargs=base_kwargs if saved == "adapter" and base_kwargs else None,
        ),
        training=TrainingRecord(
            method="fine-tuning" + (f" with LoRA (r={model_args.lora_r})" if model_args.lora_r else ""),
            problem_type=problem_type,
            epochs=trainer.state.epoch,  # as run: fractional when --max_steps ends an epoch early
            steps=trainer.state.global_step,
            learning_rate=args.learning_rate,
            batch_size=batch_size,
            distributed=DistributedRecord(
                num_processes=args.world_size,
                per_device_batch_size=batch_size,
                global_batch_size=batch_size * args.world_size * args.gradient_accumulation_steps,
            ),
            seed=args.seed,
            history=[entry for entry in trainer.state.log_history if "eval_loss" in entry],
            lora=lora_record(model) if model_args.lora_r else None,
        ),
        config=base.config.to_diff_dict(),
        base_model=model_args.base_model_on_hub,
        teacher=TeacherRecord(name_or_path=model_args.teacher) if model_args.teacher else None,
        **card_inputs(data_args, card_args, data, "test"),
    )


__all__ = [
    "ModelArguments",
    "add_lora",
    "best_model_metric",
    "check_adapter_is_publishable",
    "final_test_metrics",
    "label_count",
    "load_data",
    "load_model",
    "lora_mergeable",
    "lora_record",
    "metrics_function",
    "problem_type_of",
    "results_record",
    "save_final_model",
    "teacher_predictions",
    "tokenize_for_task",
]
