"""The recipes' shared flags, as dataclasses for `transformers.HfArgumentParser`: the data a run reads and what only
the user can say about the model for its card. Training flags follow `TrainingArguments`' names."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataArguments:
    """Where the examples come from and how they are read: local files or a Hub dataset, split with a fixed seed."""

    train_file: str | None = field(
        default=None, metadata={"help": "CSV / JSON / JSON Lines / Parquet file of training examples."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Validation examples (default: a seeded share of the training file)."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "Test examples (default: a seeded share of the training file)."}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset name (instead of files)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(
        default="text", metadata={"help": "Text column (a column of word lists for token classification)."}
    )
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text of a pair, if any."})
    label_column: str = field(default="label", metadata={"help": "Label column; 'none' for raw text (MLM)."})
    max_length: int = field(default=128, metadata={"help": "Longest tokenized input; longer ones are cut."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N validation and test examples."}
    )
    split_seed: int = field(
        default=42, metadata={"help": "Seed of the train/validation/test splits (independent of --seed)."}
    )

    def __post_init__(self):
        if bool(self.train_file) == bool(self.dataset_name):
            raise ValueError("Give exactly one of --train_file and --dataset_name.")
        if (self.validation_file or self.test_file) and not self.train_file:
            raise ValueError("--validation_file and --test_file go with --train_file.")
        for name in ("max_length", "max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be positive, got {value}.")


@dataclass
class CardArguments:
    """What only the user can say about the trained model; nothing is assumed when left out."""

    license: str | None = field(
        default=None,
        metadata={"help": "License of the trained model, as a Hub license id (apache-2.0, mit, cc-by-4.0, other, "
                          "...). Left out of the card's metadata when not given."},
    )
    language: str | None = field(
        default=None,
        metadata={"help": "Language(s) of the data as ISO 639-1 codes, comma-separated (en, fr). Left out of the "
                          "card's metadata when not given."},
    )
    dataset_description: str | None = field(
        default=None, metadata={"help": "One line on the data for the card (what the texts are, where from)."}
    )
    no_model_card: bool = field(default=False, metadata={"help": "Do not write README.md (the model card)."})




@dataclass
class ExportArguments:
    """Lower-precision copies of the trained model, each checked against it before it is kept
    (`hf_compact.precision`)."""

    export: str | None = field(
        default=None,
        metadata={"help": "Lower-precision variants to build after training: 'bf16', 'int8' or 'bf16,int8'. Each is "
                          "checked on the validation split against the float32 model and kept in "
                          "variants/<precision>/ (and published) only within --export_tolerance; the engine for "
                          "each is chosen by timing on this machine."},
    )
    export_tolerance: float = field(
        default=0.5, metadata={"help": "Largest accuracy drop, in points, a variant may have against float32."}
    )

    def __post_init__(self):
        from .precision import check_engines, parse_precisions

        self.precisions = parse_precisions(self.export)
        check_engines(self.precisions)
        if not self.export_tolerance >= 0:
            raise ValueError(f"--export_tolerance must be zero or more points, got {self.export_tolerance}.")


__all__ = ["CardArguments", "DataArguments", "ExportArguments"]
