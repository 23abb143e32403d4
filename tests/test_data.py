"""Data loading: columns, splits, labels, tokenisation, length grouping, and the real review corpus."""

import collections
import json
import sys
from pathlib import Path

import datasets
import pytest
from transformers import BertTokenizer

from hf_compact.data import (
    EpochLengthGroupedSampler,
    label_names,
    load_recipe_dataset,
    load_text_dataset,
    num_labels,
    tokenize_dataset,
)


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from rotten_tomatoes import LABEL_NAMES, rotten_tomatoes_splits, write_splits  # noqa: E402  (demo data)


ROWS = [{"review": f"w{i % 7} w{(i * 3) % 11} film", "sentiment": "good" if i % 3 else "bad"} for i in range(60)]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "reviews.csv"
    datasets.Dataset.from_list(ROWS).to_csv(str(path))
    return path


@pytest.fixture
def tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"] + [f"w{i}" for i in range(20)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_local_formats_give_three_splits(tmp_path, fmt):
    dataset = datasets.Dataset.from_list(ROWS)
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        dataset.to_csv(str(path))
    elif fmt == "parquet":
        dataset.to_parquet(str(path))
    else:
        path.write_text("\n".join(json.dumps(row) for row in ROWS))
    data = load_text_dataset(path, text_column="review", label_column="sentiment")
    assert set(data) == {"train", "validation", "test"}
    assert sum(len(split) for split in data.values()) == len(ROWS)
    assert label_names(data, "sentiment") == ["bad", "good"]
    assert num_labels(data, "sentiment") == 2


def test_splits_are_fixed_by_the_seed_and_stratified(csv_file):
    first = load_text_dataset(csv_file, text_column="review", label_column="sentiment", seed=1)
    again = load_text_dataset(csv_file, text_column="review", label_column="sentiment", seed=1)
    other = load_text_dataset(csv_file, text_column="review", label_column="sentiment", seed=2)
    assert first["test"]["review"] == again["test"]["review"]
    assert first["test"]["review"] != other["test"]["review"]
    counts = collections.Counter(first["test"]["sentiment"])
    assert counts[0] == 2 and counts[1] == 4  # a third of the rows are "bad", as in the whole set


def test_given_splits_are_kept(tmp_path, csv_file):
    validation = tmp_path / "validation.csv"
    datasets.Dataset.from_list(ROWS[:9]).to_csv(str(validation))
    data = load_text_dataset(
        {"train": str(csv_file), "validation": str(validation)}, text_column="review", label_column="sentiment"
    )
    assert data["validation"]["review"] == [row["review"] for row in ROWS[:9]]
    assert len(data["train"]) + len(data["test"]) == len(ROWS)


def test_missing_column_lists_the_available_ones(csv_file):
    with pytest.raises(ValueError, match=r"\['text'\] not found.*\['review', 'sentiment'\]"):
        load_text_dataset(csv_file, label_column="sentiment")


def test_empty_and_bad_inputs_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(ValueError, match="empty"):
        load_text_dataset(empty)  # a header and no rows
    with pytest.raises(ValueError, match="does not exist"):
        load_text_dataset(tmp_path / "missing.csv")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="extension '.txt'"):
        load_text_dataset(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        load_text_dataset(tmp_path / "data.txt", test_fraction=1.5)
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("text,label\nok film,1\nbad film,0\n")
    with pytest.raises(ValueError, match="too few"):
        load_text_dataset(tiny)


def test_regression_and_multi_label_targets_are_kept():
    rows = [{"text": f"w{i}", "score": i / 10, "tags": [i % 2, 1 - i % 2, 1]} for i in range(30)]
    data = load_text_dataset(datasets.Dataset.from_list(rows), label_column="score")
    assert data["train"].features["score"].dtype.startswith("float")
    assert num_labels(data, "score") == 1 and label_names(data, "score") is None
    tagged = load_text_dataset(datasets.Dataset.from_list(rows), label_column="tags")
    assert num_labels(tagged, "tags") == 3


def test_tokenization_keeps_labels_and_lengths(csv_file, tokenizer):
    data = load_text_dataset(csv_file, text_column="review", label_column="sentiment")
    tokenized = tokenize_dataset(data, tokenizer, text_column="review", label_column="sentiment", max_length=4)
    row = tokenized["train"][0]
    assert set(row) >= {"input_ids", "attention_mask", "labels", "length"}
    assert "review" not in row and row["length"] == len(row["input_ids"]) <= 4
    assert tokenizer.convert_ids_to_tokens(tokenized["test"][0]["input_ids"])[0] == "[CLS]"


def test_length_grouped_sampler_is_a_reproducible_permutation():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47] * 10
    sampler = EpochLengthGroupedSampler(lengths, batch_size=4, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths)))
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    spreads = [max(lengths[i] for i in first[k:k + 4]) - min(lengths[i] for i in first[k:k + 4])
               for k in range(0, len(first), 4)]
    assert sorted(spreads)[len(spreads) // 2] <= 3  # most batches hold texts of similar length


def test_rotten_tomatoes_splits_are_fixed_and_disjoint():
    data = rotten_tomatoes_splits()
    assert {k: len(v) for k, v in data.items()} == {"train": 10200, "validation": 1276, "test": 1276}
    assert label_names(data) == LABEL_NAMES
    train, test = set(data["train"]["text"]), set(data["test"]["text"])
    assert not train & test and not set(data["validation"]["text"]) & test
    positive_share = sum(data["test"]["label"]) / len(data["test"])
    assert 0.55 < positive_share < 0.6  # 7,368 fresh of 12,752
    assert rotten_tomatoes_splits()["test"]["text"] == data["test"]["text"]


def test_the_review_splits_written_to_files_read_back_as_the_same_splits(tmp_path):
    files = write_splits(tmp_path)
    data = load_recipe_dataset(train_file=files["train"], validation_file=files["validation"], test_file=files["test"])
    splits = rotten_tomatoes_splits()
    assert label_names(data) == LABEL_NAMES
    for split in ("train", "test"):
        assert data[split]["text"] == splits[split]["text"] and data[split]["label"] == splits[split]["label"]


def test_the_library_reads_no_demo_data():
    import hf_compact.data

    assert "rotten_tomatoes" not in open(hf_compact.data.__file__).read()
    with pytest.raises(TypeError):
        load_recipe_dataset(builtin_dataset="rotten_tomatoes")
