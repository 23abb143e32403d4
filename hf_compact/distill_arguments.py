"""The distillation recipe's own flags, as dataclasses for `transformers.HfArgumentParser`: the teacher and the
student (`ModelArguments`) and the run (`DistillTrainingArguments`, named as `transformers.TrainingArguments` names
them). The examples without labels a run adds to its training split are `TransferArguments`. The objective's flags
come from `hf_compact.distillation.DistillationConfig`, the data's and the card's from `hf_compact.arguments`.

```python
>>> from transformers import HfArgumentParser
>>> from hf_compact.distill_arguments import DistillTrainingArguments, ModelArguments
>>> parser = HfArgumentParser((ModelArguments, DistillTrainingArguments))
>>> model_args, training_args = parser.parse_args_into_dataclasses(
...     ["--teacher", "outputs/teacher", "--output_dir", "outputs/student"], look_for_args_file=False)
>>> training_args.num_train_epochs
3
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from .augmentation import AugmentationConfig
from .model_types import COMPACT_MODEL_TYPES


Task = Literal["sequence-classification", "token-classification", "mlm"]
StudentType = Literal[tuple(COMPACT_MODEL_TYPES)]


def _positive(arguments, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(arguments, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive, got {value}.")


@dataclass
class ModelArguments:
    """The teacher, the student built from it, and where the teacher's logits are cached."""

    teacher: str = field(metadata={"help": "Folder or Hub name of a BERT-family teacher."})
    task: Task = field(
        default="sequence-classification",
        metadata={"help": "token-classification: --text_column holds each example's words, --label_column one tag "
                          "per word; mlm: raw text, a masked-LM teacher."},
    )
    student_type: StudentType = field(default="compact_distilbert", metadata={"help": "The student's model type."})
    student_config: str | None = field(
        default=None, metadata={"help": "JSON file of student config fields (overrides the flags below)."}
    )
    student_layers: int | None = field(default=None, metadata={"help": "Student depth (default: half the teacher's)."})
    student_groups: int | None = field(
        default=None,
        metadata={"help": "compact_squeezebert: groups of the q/k/v, intermediate and output projections."},
    )
    student_feed_forward_groups: int | None = field(
        default=None,
        metadata={"help": "compact_squeezebert: groups of the intermediate and output projections alone (default: "
                          "--student_groups); the feed-forward holds most of a layer's weights."},
    )
    layer_map: str | None = field(
        default=None, metadata={"help": "Teacher layer per student layer, e.g. '1,3,5' (default: from the depths)."}
    )
    student_init: str | None = field(
        default=None,
        metadata={"help": "Folder of a saved compact model to start the student from (e.g. the output of a general "
                          "distillation, --task mlm --kd_weight 0), instead of the teacher's layers."},
    )
    layer_strategy: Literal["uniform", "alternate"] = field(
        default="uniform", metadata={"help": "How the default layer map spreads the student over the teacher."}
    )
    init: Literal["teacher", "scratch"] = field(
        default="teacher", metadata={"help": "Start the student from the teacher's layers, or from scratch."}
    )
    grouped_init: Literal["fit", "block-diagonal"] = field(
        default="fit",
        metadata={"help": "compact_squeezebert from the teacher: start each grouped projection from the least-squares "
                          "fit of the dense one on the teacher's activations (hf_compact.fit_grouped_projections), or "
                          "from its block-diagonal part."},
    )
    grouped_init_samples: int = field(
        default=512, metadata={"help": "Training examples whose activations the grouped fit uses."}
    )
    student_dropout: float | None = field(
        default=None,
        metadata={"help": "Dropout of the student while it trains (default: the teacher's). 0 makes steps cheaper on "
                          "a CPU, where drawing dropout masks is slow."},
    )
    attn_implementation: Literal["sdpa", "eager"] | None = field(
        default=None,
        metadata={"help": "Attention kernel of the student while it trains (default: sdpa; eager when attention is "
                          "distilled). With bf16 on a CPU, eager trains faster. The saved model loads with sdpa."},
    )
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the student's word embeddings as initialised (cheaper steps: the embedding matrix is "
                          "most of a small student's weights)."},
    )
    teacher_cache_dir: str | None = field(
        default=None, metadata={"help": "Where cached teacher logits live (default: <output_dir>/../.teacher_cache)."}
    )
    no_teacher_cache: bool = field(default=False, metadata={"help": "Run the teacher at every step."})
    teacher_cache_top_k: int | None = field(
        default=None, metadata={"help": "Cache only the k largest teacher logits."}
    )

    def __post_init__(self):
        _positive(self, ("student_layers", "student_groups", "student_feed_forward_groups", "grouped_init_samples",
                         "teacher_cache_top_k"))
        if self.student_dropout is not None and not 0 <= self.student_dropout < 1:
            raise ValueError(f"--student_dropout must be in [0, 1), got {self.student_dropout}.")


@dataclass
class DistillTrainingArguments:
    """How the student trains, where the run is written and published; names as in `TrainingArguments`."""

    output_dir: str = field(metadata={"help": "Folder of the trained student, its results and checkpoints."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an existing output folder (only once the new model is saved)."}
    )
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training split."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch per process."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of the steps with a linear warm-up."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation and batch order."})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "Autocast precision of the training steps (Accelerate's flag)."}
    )
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even where a GPU is present."})
    save_steps: int = field(
        default=0, metadata={"help": "Save the training state every N optimizer steps (0: no checkpoints)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the newest)."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Continue a run: a checkpoint folder, or 'last' for the newest one of output_dir that "
                          "loads."},
    )
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate tracker(s), or 'none'."})
    eval_last_epoch_only: bool = field(
        default=False, metadata={"help": "Evaluate on the validation split after the last epoch only."}
    )
    latency_batches: int = field(default=8, metadata={"help": "Test batches timed for the latency ratio (0: none)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the output folder to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "owner/name of the Hub repository."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})

    def __post_init__(self):
        _positive(self, ("num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                         "gradient_accumulation_steps", "save_total_limit"))
        if self.save_steps < 0:
            raise ValueError(f"--save_steps must be 0 (no checkpoints) or positive, got {self.save_steps}.")
        if self.latency_batches < 0:
            raise ValueError(f"--latency_batches must be 0 (no timing) or positive, got {self.latency_batches}.")


@dataclass
class TransferArguments:
    """A transfer set: texts without labels that the student learns from the teacher's soft targets alone, from files
    and from augmented copies of the labelled training texts (Tang et al., 2019). The label loss skips them."""

    unlabeled_file: list[str] | None = field(
        default=None,
        metadata={"help": "Files of texts without labels, mixed into the training split: CSV / JSON / JSON Lines / "
                          "Parquet (the text column) or .txt (one text a line). Give several at once or repeat the "
                          "flag.", "action": "extend"},
    )
    unlabeled_text_column: str | None = field(
        default=None, metadata={"help": "Text column of the unlabelled files (default: --text_column)."}
    )
    augment: int = field(
        default=0, metadata={"help": "Augmented copies of each labelled training text, mixed into the training split."}
    )
    augment_mask_prob: float = field(default=0.1, metadata={"help": "Chance that a word of a copy becomes [MASK]."})
    augment_dropout_prob: float = field(default=0.1, metadata={"help": "Chance that a word of a copy is dropped."})
    augment_ngram_prob: float = field(
        default=0.25, metadata={"help": "Chance that a copy is cut to one of its n-grams (n from 1 to 5)."}
    )

    def __post_init__(self):
        if self.augment < 0:
            raise ValueError(f"--augment must be 0 or more copies per text, got {self.augment}.")
        missing = [path for path in self.unlabeled_file or [] if not os.path.isfile(path)]
        if missing:
            raise ValueError(f"--unlabeled_file: no file {missing[0]!r}.")
        self.augmentation = AugmentationConfig(self.augment_mask_prob, self.augment_dropout_prob,
                                               self.augment_ngram_prob)

    @property
    def used(self) -> bool:
        return bool(self.unlabeled_file) or self.augment > 0

    def problem(self, task: str, uses_teacher: bool, text_pair_column: str | None) -> str | None:
        """Why these flags cannot go with the run's others, with the fix; None when they can."""
        if not self.used:
            return None
        flags = "--unlabeled_file and --augment add"
        if task == "mlm":
            return (f"{flags} texts without labels to a task's training split; --task mlm reads raw text already: "
                    "put the texts in --train_file.")
        if task != "sequence-classification":
            return f"{flags} texts to sequence classification; --task {task} does not take them."
        if text_pair_column:
            return f"{flags} single texts, not pairs: leave out --text_pair_column or these flags."
        if not uses_teacher:
            return f"{flags} texts without labels: they need a loss from the teacher (--kd_weight above 0)."
        return None

    def record(self, counts: dict[str, int]) -> dict:
        """The results' account of the transfer set: examples of each kind, the files' names (never their folders)
        and the augmentation's settings; empty when the run had none."""
        if not self.used:
            return {}
        record = {"unlabeled_examples": counts.get("unlabeled", 0), "augmented_examples": counts.get("augmented", 0)}
        if self.unlabeled_file:
            record["unlabeled_files"] = [os.path.basename(os.path.normpath(path)) for path in self.unlabeled_file]
        if self.augment:
            record["augmentation"] = {"copies": self.augment, "mask_prob": self.augment_mask_prob,
                                      "dropout_prob": self.augment_dropout_prob, "ngram_prob": self.augment_ngram_prob}
        return record


__all__ = ["DistillTrainingArguments", "ModelArguments", "TransferArguments"]
