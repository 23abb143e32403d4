"""Text-classification data for the recipes: loading, fixed seeded splits, label names, tokenisation, batching.

`load_text_dataset` returns a `datasets.DatasetDict` with "train", "validation" and "test" splits from local
CSV / JSON / JSON Lines / Parquet files, a Hub dataset name, or a dataset already in memory. Splits that exist are
kept; missing ones are carved out of "train" with a fixed seed, stratified by label for classification.

Labels: a column of strings becomes a `ClassLabel` with the names sorted, so `label_names(dataset)` gives the
`id2label` a model config needs; a `ClassLabel` column keeps its names; integer ids keep their values (names
`None`); floats are regression targets; lists of 0/1 are multi-label targets.

```python
>>> from hf_compact.data import load_text_dataset, label_names
>>> data = load_text_dataset({"train": "reviews.csv"}, text_column="review", label_column="sentiment")  # doctest: +SKIP
>>> label_names(data)  # doctest: +SKIP
['negative', 'positive']
```
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import datasets
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices


LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TEXT_FORMATS = {**LOCAL_FORMATS, ".txt": "text"}  # unlabelled texts may also come one a line
SPLITS = ("train", "validation", "test")
UNLABELED = -100  # the label of an example without one: the label loss skips it, as PyTorch's cross-entropy does


def _builder_for(files: list[str]) -> str:
    formats = set()
    for path in files:
        if not os.path.isfile(path):
            raise ValueError(f"Data file {path!r} does not exist.")
        extension = os.path.splitext(path)[1].lower()
        if extension not in LOCAL_FORMATS:
            raise ValueError(
                f"Data file {path!r} has extension {extension!r}; use one of {sorted(LOCAL_FORMATS)}."
            )
        formats.add(LOCAL_FORMATS[extension])
    if len(formats) != 1:
        raise ValueError(f"Data files {files} mix formats {sorted(formats)}; give files of one format.")
    return formats.pop()


def _load(data, dataset_config_name: str | None) -> datasets.DatasetDict:
    if isinstance(data, datasets.DatasetDict):
        return data
    if isinstance(data, datasets.Dataset):
        return datasets.DatasetDict({"train": data})
    if isinstance(data, (str, os.PathLike)) and not os.path.exists(data) and os.path.splitext(str(data))[1] == "":
        return datasets.load_dataset(str(data), dataset_config_name)  # a Hub dataset name
    if isinstance(data, (str, os.PathLike)):
        data = {"train": str(data)}
    if not isinstance(data, Mapping):
        raise ValueError(f"data={data!r} is not a file, a {{split: file}} mapping, a Hub name or a Dataset.")
    unknown = set(data) - set(SPLITS)
    if unknown:
        raise ValueError(f"Unknown split names {sorted(unknown)}; use {SPLITS}.")
    if "train" not in data:
        raise ValueError(f"No 'train' file among the splits {sorted(data)}; the training data is required.")
    files = {split: [str(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
             for split, paths in data.items()}
    builder = _builder_for([path for paths in files.values() for path in paths])
    try:
        return datasets.load_dataset(builder, data_files=files)
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
        raise ValueError(f"Could not read {files}: the file is empty or malformed ({error}).") from error


def _is_text(value) -> bool:
    """A non-empty string, or a non-empty list of words (token classification)."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, list) and bool(value) and all(isinstance(word, str) for word in value)


def _prepare_labels(data: datasets.DatasetDict, label_column: str) -> datasets.DatasetDict:
    feature = data["train"].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return data
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string"):
        # one tag name per word (token classification): tag names become a ClassLabel per position
        names = sorted({tag for dataset in data.values() for tags in dataset[label_column] for tag in tags})
        return data.cast_column(label_column, datasets.Sequence(datasets.ClassLabel(names=names)))
    for split, dataset in data.items():
        if any(value is None for value in dataset[label_column]):
            raise ValueError(f"Column {label_column!r} of the {split} split has missing labels; fill or drop them.")
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        names = sorted({label for dataset in data.values() for label in dataset[label_column]})
        return data.cast_column(label_column, datasets.ClassLabel(names=names))
    return data


def _is_class_ids(feature) -> bool:
    return isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    )


def load_text_dataset(
    data,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    dataset_config_name: str | None = None,
) -> datasets.DatasetDict:
    """Load text data as train/validation/test splits with checked columns and labels.

    Args:
        data: a file path, a `{"train": path, "validation": path, "test": path}` mapping (only "train" required),
            a Hub dataset name, or a `datasets.Dataset` / `DatasetDict`.
        text_column, text_pair_column: the input text column(s).
        label_column: the target column; `None` for unlabelled text (general distillation).
        validation_fraction, test_fraction: shares of "train" carved out for splits the data does not have.
        seed: the seed of those splits; the same seed always gives the same splits.
        dataset_config_name: the configuration of a Hub dataset.
    """
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name}={value} is invalid: it must be strictly between 0 and 1.")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            f"validation_fraction + test_fraction = {validation_fraction + test_fraction} leaves no training data; "
            "keep their sum below 1."
        )
    data = _load(data, dataset_config_name)
    if "train" not in data:
        raise ValueError(f"The data has splits {sorted(data)} but no 'train' split.")
    unknown = set(data) - set(SPLITS)
    if unknown:
        raise ValueError(f"Unknown split names {sorted(unknown)} in the data; rename them to {SPLITS}.")

    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    for split, dataset in data.items():
        missing = [c for c in wanted if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"Column(s) {missing} not found in the {split} split; available columns: {dataset.column_names}. "
                "Pass the right names with --text_column / --label_column."
            )
        if len(dataset) == 0:
            raise ValueError(f"The {split} split is empty; the recipes need examples in every split.")
        for column in (text_column, text_pair_column):
            if column is not None and any(not _is_text(t) for t in dataset[column]):
                raise ValueError(f"Column {column!r} of the {split} split has empty or missing texts; drop them.")

    if label_column is not None:
        data = _prepare_labels(data, label_column)
    stratify = label_column if label_column is not None and _is_class_ids(data["train"].features[label_column]) else None
    if stratify is not None and not isinstance(data["train"].features[stratify], datasets.ClassLabel):
        data = data.cast_column(stratify, datasets.ClassLabel(num_classes=_num_ids(data, stratify)))

    carve = [s for s in ("test", "validation") if s not in data]
    splits = dict(data)
    fractions = {"test": test_fraction, "validation": validation_fraction}
    remaining = 1.0
    for split in carve:
        share = fractions[split] / remaining
        train = splits["train"]
        minimum = 2 if stratify is None else 2 * train.features[stratify].num_classes
        if len(train) < minimum:
            raise ValueError(
                f"The train split has {len(train)} examples, too few to carve out a {split} split; give at least "
                f"{minimum} examples or a {split} file."
            )
        try:
            parts = train.train_test_split(test_size=share, seed=seed, stratify_by_column=stratify)
        except ValueError:  # a class too small to stratify: fall back to a plain seeded split
            parts = train.train_test_split(test_size=share, seed=seed)
        splits["train"], splits[split] = parts["train"], parts["test"]
        remaining -= fractions[split]
    result = datasets.DatasetDict({split: splits[split] for split in SPLITS})
    for split, dataset in result.items():
        if len(dataset) == 0:
            raise ValueError(f"The {split} split is empty after splitting; give more data or larger fractions.")
    return result


def _num_ids(data: datasets.DatasetDict, column: str) -> int:
    values = [v for dataset in data.values() for v in dataset[column]]
    if min(values) < 0:
        raise ValueError(f"Column {column!r} has negative class ids ({min(values)}); ids must be 0..num_labels-1.")
    return max(values) + 1


def load_unlabeled_texts(paths: list[str], text_column: str = "text") -> datasets.Dataset:
    """Texts without labels from local files, in the order given, as one column `text`: the `text_column` of CSV /
    JSON / JSON Lines / Parquet files (other columns are ignored), or each non-blank line of a .txt file. A file that
    is missing, of another format, unreadable, empty, without the column or with empty texts in it is refused with a
    ValueError that names it."""
    parts = []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"Unlabelled text file {path!r} does not exist.")
        extension = os.path.splitext(path)[1].lower()
        if extension not in TEXT_FORMATS:
            raise ValueError(f"Unlabelled text file {path!r} has extension {extension!r}; use one of "
                             f"{sorted(TEXT_FORMATS)}.")
        if os.path.getsize(path) == 0:
            raise ValueError(f"Unlabelled text file {path!r} is empty.")
        builder = TEXT_FORMATS[extension]
        try:
            dataset = datasets.load_dataset(builder, data_files={"train": path}, split="train")
        except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as error:
            raise ValueError(
                f"Could not read unlabelled text file {path!r}: it is empty or malformed ({error})."
            ) from None
        column = "text" if builder == "text" else text_column
        if column not in dataset.column_names:
            raise ValueError(f"Unlabelled text file {path!r} has no column {column!r} (its columns: "
                             f"{dataset.column_names}); name its text column with --unlabeled_text_column.")
        dataset = dataset.select_columns([column])
        if builder == "text":  # blank lines separate texts, they are not texts
            dataset = dataset.filter(lambda text: bool(text.strip()), input_columns=column)
        elif any(not isinstance(text, str) or not text.strip() for text in dataset[column]):
            raise ValueError(f"Column {column!r} of unlabelled text file {path!r} has empty or missing texts; drop "
                             "them.")
        if len(dataset) == 0:
            raise ValueError(f"Unlabelled text file {path!r} holds no texts.")
        parts.append(dataset.rename_column(column, "text") if column != "text" else dataset)
    if not parts:
        raise ValueError("No unlabelled text files given.")
    features = datasets.Features({"text": datasets.Value("string")})
    return datasets.concatenate_datasets([part.cast(features) for part in parts])


def mix_unlabeled(labelled: datasets.Dataset, unlabelled: list[datasets.Dataset]) -> datasets.Dataset:
    """One training split: the labelled examples, then the unlabelled ones (same columns but the labels), whose
    `labels` become `UNLABELED`. The order does not matter: the sampler shuffles them together."""
    if not unlabelled:
        return labelled
    if "labels" in labelled.column_names:  # class ids as plain integers: a ClassLabel cannot hold UNLABELED
        labelled = labelled.cast_column("labels", datasets.Value("int64"))
        unlabelled = [part.add_column("labels", [UNLABELED] * len(part), feature=datasets.Value("int64"))
                      for part in unlabelled]
    unlabelled = [part if part.features == labelled.features else part.cast(labelled.features) for part in unlabelled]
    return datasets.concatenate_datasets([labelled, *unlabelled])


def label_names(data: datasets.DatasetDict | datasets.Dataset, label_column: str = "label") -> list[str] | None:
    """The class names of a `ClassLabel` label column (index = id), or `None` when the labels carry no names."""
    dataset = data["train"] if isinstance(data, datasets.DatasetDict) else data
    feature = dataset.features.get(label_column) or dataset.features.get("labels")
    feature = getattr(feature, "feature", feature)  # the tags of a token-classification column
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        # integer ids (a ClassLabel made for stratified splits has their digits as names) carry no names
        return None if names == [str(i) for i in range(len(names))] else names
    return None


def num_labels(data: datasets.DatasetDict, label_column: str = "label") -> int:
    """Number of classes (classification), outputs (multi-label) or 1 (regression)."""
    feature = data["train"].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    if isinstance(feature, datasets.Sequence) or isinstance(feature, list):
        return len(data["train"][0][label_column])
    return 1


def tokenize_dataset(
    data: datasets.DatasetDict,
    tokenizer,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    max_length: int = 128,
) -> datasets.DatasetDict:
    """Tokenise every split (truncated, not padded: the collator pads each batch), keep the labels as `labels`,
    add `length` (tokens per example) for length-grouped batching, and drop the raw columns."""
    def encode(batch):
        texts = batch[text_column]
        pairs = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    keep = {label_column} if label_column else set()
    tokenized = data.map(
        encode,
        batched=True,
        remove_columns=[c for c in data["train"].column_names if c not in keep],
        desc="Tokenizing",
    )
    if label_column and label_column != "labels":
        tokenized = tokenized.rename_column(label_column, "labels")
    return tokenized


def tokenize_token_dataset(
    data: datasets.DatasetDict,
    tokenizer,
    *,
    words_column: str = "tokens",
    tags_column: str = "tags",
    max_length: int = 128,
) -> datasets.DatasetDict:
    """Tokenise pre-split words for token classification: each word's first sub-token carries the word's tag,
    later sub-tokens and special tokens get -100 (not scored). Needs a fast tokenizer (for `word_ids`)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Token classification needs a fast tokenizer (it maps sub-tokens back to words).")

    def encode(batch):
        encoded = tokenizer(batch[words_column], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for row, tags in enumerate(batch[tags_column]):
            if len(tags) != len(batch[words_column][row]):
                raise ValueError(
                    f"A row has {len(batch[words_column][row])} words in {words_column!r} but {len(tags)} tags in "
                    f"{tags_column!r}; give one tag per word."
                )
            previous, row_labels = None, []
            for word in encoded.word_ids(row):
                row_labels.append(-100 if word is None or word == previous else int(tags[word]))
                previous = word
            labels.append(row_labels)
        encoded["labels"] = labels
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return data.map(encode, batched=True, remove_columns=data["train"].column_names, desc="Tokenizing")


def load_recipe_dataset(
    *,
    dataset_name: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    dataset_config_name: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    split_seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> datasets.DatasetDict:
    """The recipes' data: exactly one of a Hub dataset name or local files, as train/validation/test splits fixed by
    `split_seed` (independent of the training seed). `max_train_samples` / `max_eval_samples` keep the first
    examples of the train / validation and test splits. The keywords are `hf_compact.arguments.DataArguments`'
    fields but `max_length` (tokenisation's)."""
    sources = [name for name, value in (("dataset_name", dataset_name), ("train_file", train_file)) if value]
    if len(sources) != 1:
        raise ValueError(f"Give exactly one of dataset_name, train_file (got {sources or 'none'}).")
    if dataset_name:
        source = dataset_name
    else:
        source = {"train": train_file}
        source.update({s: f for s, f in (("validation", validation_file), ("test", test_file)) if f})
    data = load_text_dataset(
        source, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
        seed=split_seed, dataset_config_name=dataset_config_name,
    )
    for splits, limit in ((("train",), max_train_samples), (("validation", "test"), max_eval_samples)):
        if limit is not None and limit < 1:
            raise ValueError(f"A sample limit of {limit} leaves no data; give a positive number.")
        for split in splits if limit else ():
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    return data


def tokenize_for_task(
    data: datasets.DatasetDict,
    tokenizer,
    task: str,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    max_length: int = 128,
) -> datasets.DatasetDict:
    """`tokenize_token_dataset` for "token-classification" (words and tags), `tokenize_dataset` otherwise."""
    if task == "token-classification":
        return tokenize_token_dataset(data, tokenizer, words_column=text_column, tags_column=label_column,
                                      max_length=max_length)
    return tokenize_dataset(data, tokenizer, text_column=text_column, text_pair_column=text_pair_column,
                            label_column=label_column, max_length=max_length)


class TokenLogitsCollator:
    """Pads a batch for token classification, cached per-token teacher logits included (zeros past each example's
    end, where the attention mask leaves them out of the loss)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        features = [dict(f) for f in features]
        logits = [torch.tensor(f.pop("teacher_logits")) for f in features] if "teacher_logits" in features[0] else None
        batch = self.collator(features)
        if logits is not None:
            padded = logits[0].new_zeros(len(logits), batch["input_ids"].shape[1], logits[0].shape[-1])
            for row, example in zip(padded, logits):
                row[: len(example)] = example
            batch["teacher_logits"] = padded
        return batch


def collator_for_task(tokenizer, task: str):
    """The batch collator of a task: dynamic padding; 15% masking for "mlm"; padded tags (and per-token teacher
    logits) for "token-classification"."""
    from transformers import (
        DataCollatorForLanguageModeling,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
    )

    if task == "mlm":
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    if task == "token-classification":
        return TokenLogitsCollator(DataCollatorForTokenClassification(tokenizer))
    return DataCollatorWithPadding(tokenizer)


class EpochLengthGroupedSampler(torch.utils.data.Sampler):
    """Indices in batches of similar length, shuffled reproducibly: epoch `e` always gives the same order for the
    same seed, which lets an interrupted run resume exactly. Call `set_epoch(e)` before each epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 42):
        if not lengths:
            raise ValueError("Cannot sample from an empty dataset.")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


__all__ = [
    "UNLABELED",
    "EpochLengthGroupedSampler",
    "TokenLogitsCollator",
    "collator_for_task",
    "label_names",
    "load_recipe_dataset",
    "load_text_dataset",
    "load_unlabeled_texts",
    "mix_unlabeled",
    "num_labels",
    "tokenize_dataset",
    "tokenize_for_task",
    "tokenize_token_dataset",
]
