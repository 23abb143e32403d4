"""Masked-LM teacher checks: a trained head passes; a head missing from the checkpoint, or present but freshly
initialised, is refused with a message that says what was found and fits the case; the perplexity is seeded."""

import logging
import random

import datasets
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers import BertConfig, BertForMaskedLM, BertTokenizer, DataCollatorForLanguageModeling

from conftest import VOCAB, WORDS, write_csv
from hf_compact import convert_to_compact, distill_evaluation
from hf_compact.distill_evaluation import evaluate_teacher
from hf_compact.distill_models import load_teacher, preflight
from hf_compact.distillation import DistillationConfig, Distiller
from hf_compact.mlm_checks import (
    check_mlm_teacher,
    checkpoint_keys,
    mlm_head_missing_keys,
    require_mlm_head,
    seeded_masks,
    seeded_perplexity,
    unused_mlm_head,
)
from test_general_distillation import distill_in_process


HEAD = ["cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"]


def counting_texts(n: int, seed: int) -> list[str]:
    """Runs of consecutive words ("w7 w8 w9 ..."): a masked word follows from its neighbours, so a trained head
    reaches a low perplexity."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        start = rng.randrange(len(WORDS))
        texts.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(rng.randint(6, 12))))
    return texts


def mlm_config():
    return BertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, max_position_embeddings=64)


@pytest.fixture(scope="module")
def trained_mlm(tmp_path_factory, tokenizer_dir):
    """A tiny BertForMaskedLM trained 450 steps on counting texts, saved with its tokenizer."""
    folder = tmp_path_factory.mktemp("mlm-teacher")
    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForMaskedLM(mlm_config())
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    encoded = [tokenizer(text) for text in counting_texts(640, seed=0)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(450):
        model(**collator([encoded[(step * 32 + k) % len(encoded)] for k in range(32)])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fresh_head_mlm(tmp_path_factory, trained_mlm):
    """The trained teacher's encoder under a newly initialised head of the same config: every head weight is in the
    checkpoint, none is trained."""
    folder = tmp_path_factory.mktemp("fresh-head")
    trained = BertForMaskedLM.from_pretrained(trained_mlm)
    torch.manual_seed(1)
    fresh = BertForMaskedLM(trained.config)
    fresh.bert.load_state_dict(trained.bert.state_dict())
    fresh.save_pretrained(folder)
    BertTokenizer.from_pretrained(trained_mlm).save_pretrained(folder)
    return folder


def test_a_trained_head_passes_with_a_seeded_perplexity(trained_mlm):
    teacher = load_teacher(str(trained_mlm), "mlm")
    tokenizer = BertTokenizer.from_pretrained(trained_mlm)
    texts = counting_texts(200, seed=5)  # the run's own texts, not the teacher's training ones
    assert mlm_head_missing_keys(teacher) == []
    measured = check_mlm_teacher(teacher, tokenizer, texts)
    assert measured.perplexity < len(VOCAB) / 10 and measured.vocab_size == len(VOCAB)
    assert measured.texts == 64 and measured.masked_tokens >= 64  # 4 batches of 16, at least a token per text
    torch.manual_seed(123)  # the global random state plays no part
    assert seeded_perplexity(teacher, tokenizer, texts) == measured
    other = seeded_perplexity(teacher, tokenizer, texts, seed=1)
    assert other != measured and other.perplexity < len(VOCAB) / 10
    first, again = next(seeded_masks(tokenizer, texts)), next(seeded_masks(tokenizer, texts))
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    masked = first["labels"] != -100
    assert (first["input_ids"][masked] == tokenizer.mask_token_id).all()
    assert not masked[first["attention_mask"] == 0].any() and not masked[:, 0].any()  # no padding, no [CLS]
    assert teacher.training is False


def test_a_freshly_initialised_head_is_refused_by_its_perplexity(fresh_head_mlm):
    teacher = load_teacher(str(fresh_head_mlm), "mlm")
    tokenizer = BertTokenizer.from_pretrained(fresh_head_mlm)
    require_mlm_head(teacher)  # every head weight is in the checkpoint ...
    with pytest.raises(SystemExit) as refused:  # ... but it guesses
        check_mlm_teacher(teacher, tokenizer, counting_texts(200, seed=5))
    message = str(refused.value)
    assert "scores a perplexity of" in message and f"vocabulary of {len(VOCAB)} tokens" in message
    assert "below 5.5" in message and "masked tokens of 64 training texts" in message
    assert "--kd_weight 0" in message and "--attention_relation_weight" in message


def test_a_classifier_checkpoint_has_no_head_and_serves_general_distillation_only(
    trained_teacher, tokenizer_dir
):
    teacher = load_teacher(str(trained_teacher), "mlm")  # its encoder loads; transformers initialises the head
    assert type(teacher).__name__ == "BertForMaskedLM"
    missing = mlm_head_missing_keys(teacher)
    assert sorted(missing) == sorted(HEAD)  # the decoder is tied to the word embeddings, which the checkpoint holds
    with pytest.raises(SystemExit) as refused:
        require_mlm_head(teacher)
    message = str(refused.value)
    assert "has no trained masked-LM head" in message and "cls.predictions.transform.dense.weight" in message
    assert "--kd_weight 0" in message and "attention-relation losses" in message

    student = convert_to_compact(teacher, "compact_distilbert", layers=[1, 3])
    with pytest.raises(SystemExit, match="no trained masked-LM head"):
        Distiller.between(DistillationConfig(kd_weight=1.0, cos_weight=1.0), [1, 3], student, teacher)
    distiller = Distiller.between(DistillationConfig(kd_weight=0, cos_weight=1.0, attention_relation_weight=1.0),
                                  [1, 3], student, teacher)
    distiller.remove_hooks()

    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": counting_texts(32, seed=2)})})
    preflight("mlm", teacher, student, tokenizer, data, None, 32, soft_target_weight=0.0)
    with pytest.raises(SystemExit, match="no trained masked-LM head"):
        preflight("mlm", teacher, student, tokenizer, data, None, 32, soft_target_weight=1.0)


def test_preflight_measures_the_head_on_the_named_text_column(fresh_head_mlm, trained_mlm):
    tokenizer = BertTokenizer.from_pretrained(trained_mlm)
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": counting_texts(64, seed=3)})})
    for folder, passes in ((trained_mlm, True), (fresh_head_mlm, False)):
        teacher = load_teacher(str(folder), "mlm")
        student = convert_to_compact(teacher, "compact_distilbert", layers=[1])
        if passes:
            preflight("mlm", teacher, student, tokenizer, data, None, 32, text_column="body", soft_target_weight=1)
        else:
            with pytest.raises(SystemExit, match="perplexity"):
                preflight("mlm", teacher, student, tokenizer, data, None, 32, text_column="body",
                          soft_target_weight=1)


def test_sharded_checkpoints_are_read_through_their_index(trained_mlm, tmp_path):
    BertForMaskedLM.from_pretrained(trained_mlm).save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert checkpoint_keys(str(tmp_path)) == checkpoint_keys(str(trained_mlm))
    assert mlm_head_missing_keys(BertForMaskedLM.from_pretrained(tmp_path)) == []


def test_the_real_minilm_has_no_mlm_head(minilm_path):
    teacher = load_teacher(minilm_path, "mlm")
    assert "cls.predictions.transform.dense.weight" in mlm_head_missing_keys(teacher)
    with pytest.raises(SystemExit) as refused:
        require_mlm_head(teacher)
    message = str(refused.value)
    assert "cls.predictions" in message and "--kd_weight 0" in message


def teacher_evaluation(teacher, tokenizer, soft_target_weight):
    """`evaluate_teacher` of a --task mlm run on seeded masks of counting texts."""
    loaders = {"validation": list(seeded_masks(tokenizer, counting_texts(64, seed=4), num_batches=2))}
    try:
        return evaluate_teacher("mlm", teacher, None, loaders, Accelerator(cpu=True), None, 16,
                                soft_target_weight=soft_target_weight)[0]["validation"]
    finally:
        AcceleratorState._reset_state(True)


def test_the_perplexity_of_an_unused_head_is_neither_measured_nor_logged_as_a_score(
    trained_mlm, trained_teacher, monkeypatch, caplog
):
    tokenizer = BertTokenizer.from_pretrained(trained_mlm)
    trained, headless = load_teacher(str(trained_mlm), "mlm"), load_teacher(str(trained_teacher), "mlm")
    assert unused_mlm_head(trained, 1.0) is None and unused_mlm_head(trained) is None
    assert unused_mlm_head(trained, 0.0) == "the soft-target loss is off (--kd_weight 0)"
    assert "no masked-LM head (5 of the head's weights missing" in unused_mlm_head(headless)
    assert "--kd_weight 0" in unused_mlm_head(headless, 0.0) and "no masked-LM head" in unused_mlm_head(headless, 0.0)

    # The soft targets on and the head in the checkpoint: the teacher's perplexity is measured, as before.
    measured = teacher_evaluation(trained, tokenizer, soft_target_weight=1.0)
    assert set(measured) == {"mlm_loss", "perplexity"} and measured["perplexity"] < len(VOCAB) / 10

    def measuring(*args):
        raise AssertionError("the perplexity of an unused head was measured")

    monkeypatch.setattr(distill_evaluation, "evaluate_mlm", measuring)
    for teacher, weight, reason in ((trained, 0.0, "--kd_weight 0"), (headless, None, "no masked-LM head"),
                                    (headless, 0.0, "--kd_weight 0")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_compact.distill_evaluation"):
            assert teacher_evaluation(teacher, tokenizer, soft_target_weight=weight) == {}
        message = caplog.text
        assert "masked-LM head is not used" in message and reason in message, message
        assert "neither measured nor recorded" in message


def test_general_distillation_from_a_trained_head_records_no_teacher_perplexity(trained_mlm, tmp_path, capsys):
    """--kd_weight 0 leaves even a trained head unused: the results hold no teacher perplexity and say why, and none
    is measured or printed."""
    corpus = write_csv(tmp_path / "corpus.csv", [{"text": text} for text in counting_texts(160, seed=6)])
    results, _ = distill_in_process(["--task", "mlm", "--teacher", trained_mlm, "--train_file", corpus,
                                     "--output_dir", tmp_path / "general", "--kd_weight", "0", "--cos_weight", "1",
                                     "--student_layers", "1", "--max_steps", "2", "--latency_batches", "0",
                                     "--report_to", "none", "--max_length", "32", "--no_model_card"])
    assert results.teacher.metrics is None
    assert results.teacher.extra == {
        "metrics_not_measured": "its masked-LM head is not used: the soft-target loss is off (--kd_weight 0)"}
    assert set(results.student.metrics) == {"mlm_loss", "perplexity"}
    printed = capsys.readouterr()
    assert "teacher validation not measured" in printed.out + printed.err
