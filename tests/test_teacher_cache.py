"""Teacher logits are computed once and reused while teacher and data are unchanged."""

import os
import threading

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizer, DataCollatorWithPadding

from hf_compact.teacher_cache import MASKED_LOGIT, cache_key, teacher_logits_column


@pytest.fixture
def setup(trained_teacher):
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher).eval()
    tokenizer = BertTokenizer.from_pretrained(trained_teacher)
    texts = ["w1 w10 w11", "w20 w21", "w30 w31 w32 w33 w3", "w40"]
    dataset = datasets.Dataset.from_dict(dict(tokenizer(texts)))
    return teacher, tokenizer, dataset, DataCollatorWithPadding(tokenizer)


def entries(cache_dir):
    return [p for p in os.listdir(cache_dir) if not p.startswith(".")]  # .locks/ holds the entries' file locks


class CountingTeacher(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.config = model, 0, model.config

    def forward(self, **inputs):
        self.calls += 1
        return self.model(**inputs)


def test_logits_are_computed_once_and_equal_to_the_teacher(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    counting = CountingTeacher(teacher)
    first = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=2, show_progress=False)
    assert counting.calls == 2
    again = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=2, show_progress=False)
    assert counting.calls == 2  # served from the cache
    assert len(entries(tmp_path)) == 1
    for text_ids, cached, reused in zip(dataset["input_ids"], first, again):
        with torch.no_grad():
            expected = teacher(input_ids=torch.tensor([text_ids])).logits[0].numpy()
        np.testing.assert_allclose(cached, expected, atol=1e-5)
        np.testing.assert_array_equal(cached, reused)


def test_a_changed_teacher_or_data_gets_a_new_cache(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    key = cache_key(teacher, dataset)
    assert cache_key(teacher, dataset.select([0, 1, 2])) != key
    assert cache_key(teacher, dataset, top_k=1) != key
    assert cache_key(teacher, dataset, autocast_dtype=torch.bfloat16) != key
    with torch.no_grad():
        teacher.classifier.bias.add_(0.1)
    assert cache_key(teacher, dataset) != key


def test_top_k_keeps_the_largest_logits(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    full = teacher_logits_column(teacher, dataset, tmp_path, collator, show_progress=False)
    top = teacher_logits_column(teacher, dataset, tmp_path, collator, top_k=1, show_progress=False)
    for full_row, top_row in zip(full, top):
        assert top_row.argmax() == full_row.argmax()
        assert top_row.max() == pytest.approx(full_row.max())
        assert (top_row == MASKED_LOGIT).sum() == len(full_row) - 1


def test_bf16_logits_are_their_own_cache_entry_and_close_to_float32(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    counting = CountingTeacher(teacher)
    exact = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=4, show_progress=False)
    low = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=4, show_progress=False,
                                autocast_dtype=torch.bfloat16)
    assert counting.calls == 2 and len(entries(tmp_path)) == 2  # not served from the float32 entry
    again = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=4, show_progress=False,
                                  autocast_dtype=torch.bfloat16)
    assert counting.calls == 2
    for exact_row, low_row, again_row in zip(exact, low, again):
        assert low_row.dtype == np.float32
        assert not np.array_equal(exact_row, low_row)  # the forward pass did run in bf16
        np.testing.assert_allclose(low_row, exact_row, atol=0.05)  # bf16 keeps about 3 significant digits
        np.testing.assert_array_equal(low_row, again_row)


def test_runs_side_by_side_compute_an_entry_once(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    counting = CountingTeacher(teacher)
    results = [None, None]

    def run(index):
        results[index] = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=4,
                                               show_progress=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.calls == 1  # one batch of 4, computed by whichever run took the lock first
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


def test_empty_data_is_refused(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    with pytest.raises(ValueError, match="empty dataset"):
        teacher_logits_column(teacher, dataset.select([]), tmp_path, collator)


def test_an_entry_holding_nan_is_computed_again(setup, tmp_path, caplog):
    teacher, tokenizer, dataset, collator = setup
    good = teacher_logits_column(teacher, dataset, tmp_path, collator, batch_size=2, show_progress=False)
    (entry,) = entries(tmp_path)
    poisoned = datasets.Dataset.from_dict({"logits": [np.full_like(row, np.nan) for row in good]})
    staging = tmp_path / "poisoned"
    poisoned.save_to_disk(staging)
    os.replace(tmp_path / entry, tmp_path / "old")
    os.replace(staging, tmp_path / entry)
    counting = CountingTeacher(teacher)
    again = teacher_logits_column(counting, dataset, tmp_path, collator, batch_size=2, show_progress=False)
    assert counting.calls == 2  # recomputed, not served
    assert all(np.array_equal(a, b) for a, b in zip(again, good))


def test_a_teacher_giving_nan_is_refused_and_nothing_is_cached(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    with torch.no_grad():
        teacher.classifier.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite logits"):
        teacher_logits_column(teacher, dataset, tmp_path, collator, batch_size=2, show_progress=False)
    assert entries(tmp_path) == []
