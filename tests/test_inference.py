"""Length-sorted classification gives the text-classification pipeline's results, in input order, for any model."""

import random

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertTokenizer,
    TextClassificationPipeline,
    pipeline,
)

import hf_compact
from hf_compact import kernels
from hf_compact.inference import (
    LengthSortedTextClassificationPipeline,
    classify,
    disable_length_sorted_pipeline,
    enable_length_sorted_pipeline,
    length_sorted_batches,
    pad_batch,
)


WORDS = [f"w{i}" for i in range(50)]


def ragged_texts(n=23, seed=0):
    """Texts of 0 to 20 words in shuffled order (unknown words and an empty text included)."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 20))) for _ in range(n - 1)]
    texts.append("w1 w2 zebra w3")
    rng.shuffle(texts)
    return texts


@pytest.fixture(autouse=True)
def kernel_cache(tmp_path, monkeypatch):
    """Kernel choices go to a file of the test's own, never the user's cache."""
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "kernels.json"))
    monkeypatch.setattr(kernels, "_default_selector", None)
    return tmp_path / "kernels.json"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return BertTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def models(trained_teacher):
    """The trained tiny BERT and both compact students converted from it."""
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher).eval()
    return {
        "bert": teacher,
        "compact_distilbert": hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=2),
        "compact_squeezebert": hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2),
    }


def three_label_model(problem_type=None, num_labels=3):
    torch.manual_seed(0)
    config = hf_compact.CompactDistilBertConfig(
        vocab_size=55, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
        num_labels=num_labels, problem_type=problem_type, initializer_range=0.5,
        id2label={i: f"tag{i}" for i in range(num_labels)}, label2id={f"tag{i}": i for i in range(num_labels)},
    )
    return hf_compact.CompactDistilBertForSequenceClassification(config).eval()


def assert_same_results(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        got_items, want_items = (got, want) if isinstance(want, list) else ([got], [want])
        assert [item["label"] for item in got_items] == [item["label"] for item in want_items]
        for got_item, want_item in zip(got_items, want_items):
            assert got_item["score"] == pytest.approx(want_item["score"], rel=1e-5, abs=1e-5)  # raw logits: relative


@pytest.mark.parametrize("name", ["bert", "compact_distilbert", "compact_squeezebert"])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_classify_matches_pipeline_in_input_order(models, tokenizer, name, batch_size):
    model, texts = models[name], ragged_texts()
    expected = pipeline("text-classification", model=model, tokenizer=tokenizer)(texts)
    actual = classify(model, tokenizer, texts, batch_size=batch_size)
    assert_same_results(actual, expected)
    assert {result["label"] for result in actual} == {"negative", "positive"}  # a real mix, not one constant answer


@pytest.mark.parametrize("top_k", [2, None])
def test_classify_top_k_matches_pipeline(tokenizer, top_k):
    model, texts = three_label_model(), ragged_texts()
    expected = pipeline("text-classification", model=model, tokenizer=tokenizer)(texts, top_k=top_k)
    actual = classify(model, tokenizer, texts, batch_size=4, top_k=top_k)
    assert all(len(result) == (top_k or 3) for result in actual)
    assert_same_results(actual, expected)


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "function"),
    [("multi_label_classification", 3, "sigmoid"), ("regression", 1, "none"), (None, 1, "sigmoid")],
)
def test_classify_multi_label_and_regression_follow_the_pipeline(tokenizer, problem_type, num_labels, function):
    model, texts = three_label_model(problem_type, num_labels), ragged_texts()
    expected = pipeline("text-classification", model=model, tokenizer=tokenizer)(texts, top_k=None)
    actual = classify(model, tokenizer, texts, batch_size=5, top_k=None)
    assert_same_results(actual, expected)
    with torch.no_grad():
        logits = model(**tokenizer(texts[:1], return_tensors="pt")).logits[0]
    scores = torch.sigmoid(logits) if function == "sigmoid" else logits
    assert sorted(item["score"] for item in actual[0]) == pytest.approx(sorted(scores.tolist()), abs=1e-5)
    if problem_type == "multi_label_classification":
        assert not any(sum(item["score"] for item in result) == pytest.approx(1.0) for result in actual)


def test_classify_function_to_apply_override(tokenizer):
    model, texts = three_label_model(), ragged_texts(9)
    expected = pipeline("text-classification", model=model, tokenizer=tokenizer)(texts, function_to_apply="none")
    assert_same_results(classify(model, tokenizer, texts, function_to_apply="none"), expected)


def test_classify_keeps_training_mode_and_handles_edge_inputs(models, tokenizer):
    model = models["compact_distilbert"]
    model.train()
    try:
        single = classify(model, tokenizer, "w1 w2 w3")
        assert model.training
    finally:
        model.eval()
    assert_same_results(single, pipeline("text-classification", model=model, tokenizer=tokenizer)(["w1 w2 w3"]))
    assert classify(model, tokenizer, []) == []


def test_classify_truncates_to_max_length(models, tokenizer):
    model, texts = models["compact_distilbert"], ragged_texts(8)
    expected = pipeline("text-classification", model=model, tokenizer=tokenizer)(texts, truncation=True, max_length=6)
    assert_same_results(classify(model, tokenizer, texts, max_length=6), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top_k=0"),
        ({"function_to_apply": "tanh"}, "function_to_apply='tanh'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_length": 0}, "max_length=0"),
    ],
)
def test_classify_rejects_bad_arguments(models, tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        classify(models["compact_distilbert"], tokenizer, ["w1 w2"], **kwargs)


def test_length_sorted_batches_and_padding():
    batches = length_sorted_batches([5, 2, 9, 2, 7], batch_size=2)
    assert [list(batch) for batch in batches] == [[1, 3], [0, 4], [2]]
    encodings = {"input_ids": [[1, 2, 3], [4]], "attention_mask": [[1, 1, 1], [1]]}
    right = pad_batch(encodings, [1, 0], pad_token_id=9)
    assert right["input_ids"].tolist() == [[4, 9, 9], [1, 2, 3]]
    assert right["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    left = pad_batch(encodings, [1], pad_token_id=9, padding_side="left")
    assert left["input_ids"].tolist() == [[4]]
    with pytest.raises(ValueError, match="padding_side='middle'"):
        pad_batch(encodings, [0], padding_side="middle")


@pytest.mark.parametrize("name", ["bert", "compact_squeezebert"])
def test_pipeline_subclass_matches_stock_pipeline(models, tokenizer, name):
    model, texts = models[name], ragged_texts()
    stock = pipeline("text-classification", model=model, tokenizer=tokenizer)
    fast = pipeline(
        "text-classification", model=model, tokenizer=tokenizer, pipeline_class=LengthSortedTextClassificationPipeline
    )
    assert isinstance(fast, LengthSortedTextClassificationPipeline)
    assert_same_results(fast(texts), stock(texts))
    assert_same_results(fast(texts, batch_size=3), stock(texts))
    assert_same_results(fast(texts, top_k=2), stock(texts, top_k=2))
    assert_same_results(fast(texts, top_k=None), stock(texts, top_k=None))
    assert_same_results(fast(texts[0]), stock(texts[0]))  # a single text keeps the stock path and format
    pair = {"text": "w1 w2", "text_pair": "w3"}
    assert_same_results([fast(pair)], [stock(pair)])


def test_pipeline_subclass_with_top_k_in_constructor(models, tokenizer):
    model, texts = models["compact_distilbert"], ragged_texts(11)
    stock = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
    fast = pipeline(
        "text-classification", model=model, tokenizer=tokenizer, top_k=None, batch_size=4,
        pipeline_class=LengthSortedTextClassificationPipeline,
    )
    assert_same_results(fast(texts), stock(texts))


def test_enable_length_sorted_pipeline_only_for_compact_types(models, tokenizer, tmp_path):
    for name in ("bert", "compact_distilbert"):
        models[name].save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    texts = ragged_texts(10)
    enable_length_sorted_pipeline()
    try:
        enable_length_sorted_pipeline()  # idempotent
        compact = pipeline("sentiment-analysis", model=str(tmp_path / "compact_distilbert"))
        bert = pipeline("sentiment-analysis", model=str(tmp_path / "bert"))
        assert type(compact) is LengthSortedTextClassificationPipeline
        assert type(bert) is TextClassificationPipeline
        explicit = pipeline(
            "sentiment-analysis", model=str(tmp_path / "bert"), pipeline_class=LengthSortedTextClassificationPipeline
        )
        assert type(explicit) is LengthSortedTextClassificationPipeline
        assert_same_results(compact(texts), classify(models["compact_distilbert"], tokenizer, texts))
    finally:
        disable_length_sorted_pipeline()
    restored = pipeline("sentiment-analysis", model=str(tmp_path / "compact_distilbert"))
    assert type(restored) is TextClassificationPipeline


@pytest.mark.parametrize("name", ["compact_distilbert", "compact_squeezebert"])
def test_classify_and_the_pipeline_run_the_kernels_and_leave_the_model_as_it_was(models, tokenizer, name, monkeypatch,
                                                                                kernel_cache):
    model, texts = models[name], ragged_texts()
    optimized_during = []
    original = kernels.KernelSelector.choose

    def choose(self, module, *args, **kwargs):
        optimized_during.append(kernels.is_optimized(model))
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(kernels.KernelSelector, "choose", choose)
    monkeypatch.setattr(kernels, "_default_selector", kernels.KernelSelector(repeats=1))
    with torch.inference_mode():
        reference = classify(model, tokenizer, texts[:1])  # warms the cache of this shape class
    classified = classify(model, tokenizer, texts, batch_size=4)
    assert optimized_during and all(optimized_during)  # the dispatchers ran, choosing by measurement
    assert not kernels.is_optimized(model)  # and were removed afterwards
    assert reference[0]["label"] == classified[texts.index(texts[0])]["label"]
    assert kernel_cache.exists()
    optimized_during.clear()
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer,
                          pipeline_class=LengthSortedTextClassificationPipeline)
    assert_same_results(classifier(texts, batch_size=4), classified)
    assert optimized_during and not kernels.is_optimized(model)
