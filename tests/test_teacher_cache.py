"""Teacher logits are computed once and reused while teacher and data are unchanged."""

import os

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
    assert len(os.listdir(tmp_path)) == 1
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


def test_empty_data_is_refused(setup, tmp_path):
    teacher, tokenizer, dataset, collator = setup
    with pytest.raises(ValueError, match="empty dataset"):
        teacher_logits_column(teacher, dataset.select([]), tmp_path, collator)
