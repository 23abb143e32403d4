"""Transfer sets in recipes/distill.py: texts without labels (--unlabeled_file) and augmented copies of the training
texts (--augment) learnt from the teacher's soft targets alone, scored once and cached, counted in results.json."""

import json
import math

import datasets
import pytest
import torch
from torch.nn import functional as F
from transformers import BertConfig, BertForSequenceClassification

from conftest import VOCAB, synthetic_rows
from hf_compact.augmentation import augment_texts
from hf_compact.data import UNLABELED, load_recipe_dataset, load_unlabeled_texts, mix_unlabeled
from hf_compact.distill_arguments import TransferArguments
from hf_compact.distill_training import labelled_cross_entropy, student_forward, transfer_sets
from hf_compact.distillation import DistillationConfig, Distiller
from test_distill_recipe import cache_entries, common, run


BATCH = 32  # the per-device batch of test_distill_recipe.FAST


@pytest.fixture(scope="module")
def splits(synthetic_csv):
    """The synthetic data's splits as the recipe makes them (split seed 42)."""
    return load_recipe_dataset(train_file=str(synthetic_csv))


@pytest.fixture(scope="module")
def unlabeled_files(tmp_path_factory, splits):
    """A JSON Lines file of 96 new texts and 2 of the test split's (which a run must leave out), with a column the
    recipe ignores, and a text file of 32 more, one a line, with blank lines between some."""
    folder = tmp_path_factory.mktemp("unlabeled")
    rows = [{"text": row["text"], "source": "synthetic"} for row in synthetic_rows(96, seed=5)]
    rows += [{"text": text, "source": "test split"} for text in splits["test"]["text"][:2]]
    jsonl = folder / "more.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = folder / "more.txt"
    lines = [row["text"] for row in synthetic_rows(32, seed=6)]
    text.write_text("\n".join(lines[:16]) + "\n\n\n" + "\n".join(lines[16:]) + "\n")
    return jsonl, text


def expected_augmented(splits, copies, seed):
    scored = set(splits["validation"]["text"]) | set(splits["test"]["text"])
    return [t for t in augment_texts(splits["train"]["text"], copies, seed, "[MASK]") if t not in scored]


def test_unlabeled_and_augmented_texts_are_trained_on_cached_and_recorded(
    trained_teacher, synthetic_csv, unlabeled_files, splits, tmp_path
):
    jsonl, text = unlabeled_files
    flags = ["--student_layers", "2", "--num_train_epochs", "1", "--ce_weight", "0.5", "--latency_batches", "0",
             "--teacher_cache_dir", tmp_path / "cache", "--unlabeled_file", jsonl, "--unlabeled_file", text,
             "--augment", "2"]
    first = run(common(trained_teacher, synthetic_csv, tmp_path / "student", *flags))
    training = json.loads((tmp_path / "student" / "results.json").read_text())["training"]

    augmented = len(expected_augmented(splits, 2, seed=42))
    assert 0.8 * 2 * len(splits["train"]) < augmented <= 2 * len(splits["train"])
    assert training["unlabeled_examples"] == 96 + 32  # the two test texts left out, blank lines are no texts
    assert training["augmented_examples"] == augmented
    assert training["unlabeled_files"] == ["more.jsonl", "more.txt"]  # names only: never a local folder
    assert training["augmentation"] == {"copies": 2, "mask_prob": 0.1, "dropout_prob": 0.1, "ngram_prob": 0.25}
    # One epoch saw every labelled and unlabelled example: the steps grew by exactly the transfer set's batches.
    assert training["steps"] == math.ceil((len(splits["train"]) + 128 + augmented) / BATCH)
    assert math.ceil(len(splits["train"]) / BATCH) < training["steps"]
    assert training["teacher_cache"] is True
    # The teacher's logits on train, validation, test, the unlabelled files and the augmented copies: one entry each.
    cached = cache_entries(tmp_path / "cache")
    assert len(cached) == 5 and "Teacher logits" in first.stderr

    again = run(common(trained_teacher, synthetic_csv, tmp_path / "again", *flags, "--max_steps", "2"))
    assert cache_entries(tmp_path / "cache") == cached  # every part read back, none computed again
    assert "Teacher logits" not in again.stderr
    assert json.loads((tmp_path / "again" / "results.json").read_text())["training"]["unlabeled_examples"] == 128


def test_a_run_without_a_transfer_set_records_none(trained_teacher, synthetic_csv, tmp_path):
    run(common(trained_teacher, synthetic_csv, tmp_path / "plain", "--student_layers", "2", "--max_steps", "1",
               "--latency_batches", "0", "--no_teacher_cache"))
    training = json.loads((tmp_path / "plain" / "results.json").read_text())["training"]
    assert not {"unlabeled_examples", "augmented_examples", "unlabeled_files", "augmentation"} & set(training)


def test_bad_unlabelled_files_fail_before_training_with_a_clear_message(
    trained_teacher, synthetic_csv, unlabeled_files, tmp_path
):
    jsonl, _ = unlabeled_files
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "header.csv").write_text("text\n")
    (tmp_path / "review.jsonl").write_text(json.dumps({"review": "w1 w7 w9"}) + "\n")
    (tmp_path / "blank.csv").write_text('text\nw1 w7\n""\n')
    cases = {
        tmp_path / "missing.jsonl": "--unlabeled_file: no file",
        tmp_path / "empty.jsonl": "is empty",
        tmp_path / "header.csv": "empty or malformed",
        tmp_path / "review.jsonl": "has no column 'text' (its columns: ['review']); name its text column with "
                                   "--unlabeled_text_column",
        tmp_path / "blank.csv": "has empty or missing texts",
    }
    for number, (path, message) in enumerate(cases.items()):
        out = tmp_path / f"out{number}"
        result = run(common(trained_teacher, synthetic_csv, out, "--unlabeled_file", jsonl, path), expect_ok=False)
        assert result.returncode != 0 and message in result.stderr, (path, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and str(path.name) in result.stderr
        assert not out.exists()
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "column", "--unlabeled_file",
                        tmp_path / "review.jsonl", "--unlabeled_text_column", "review", "--max_steps", "1",
                        "--latency_batches", "0", "--no_teacher_cache"))
    assert result.returncode == 0


@pytest.mark.parametrize("flags, message", [
    (["--augment", "2", "--kd_weight", "0", "--ce_weight", "1"], "need a loss from the teacher"),
    (["--augment", "2", "--task", "token-classification", "--label_column", "label"], "does not take them"),
    (["--augment", "2", "--task", "mlm"], "put the texts in --train_file"),
    (["--augment", "2", "--text_pair_column", "label"], "not pairs"),
    (["--augment", "-1"], "--augment must be 0 or more"),
    (["--augment", "2", "--augment_mask_prob", "0.7", "--augment_dropout_prob", "0.7"], "at most 1"),
    (["--augment", "2", "--augment_ngram_prob", "1.5"], "--augment_ngram_prob must be in [0, 1]"),
])
def test_transfer_flags_that_cannot_work_are_refused_before_any_work(
    trained_teacher, synthetic_csv, tmp_path, flags, message
):
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "out", *flags), expect_ok=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]


def test_the_label_loss_averages_over_labelled_examples_only():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([2, UNLABELED, 0, UNLABELED, 1])
    loss = labelled_cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(logits[[0, 2, 4]], labels[[0, 2, 4]]).item(), rel=1e-6)
    loss.backward()
    assert logits.grad[[1, 3]].abs().sum() == 0  # no gradient reaches the unlabelled examples through it
    assert logits.grad[[0, 2, 4]].abs().sum() > 0

    logits.grad = None
    none = labelled_cross_entropy(logits, torch.full((5,), UNLABELED))  # a batch of transfer examples alone
    none.backward()
    assert none.item() == 0 and torch.isfinite(none) and logits.grad.abs().sum() == 0


def tiny_classifier():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(config).eval()


def test_student_forward_gives_the_distiller_a_label_loss_without_the_unlabelled_examples():
    student = tiny_classifier()
    input_ids = torch.randint(5, len(VOCAB), (4, 6))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
             "labels": torch.tensor([1, UNLABELED, 0, UNLABELED])}
    objective = DistillationConfig(kd_weight=1.0, ce_weight=0.5)
    outputs = student_forward(student, objective, dict(batch))
    labelled = student(input_ids=input_ids[[0, 2]], attention_mask=batch["attention_mask"][[0, 2]],
                       labels=batch["labels"][[0, 2]])
    assert outputs.loss.item() == pytest.approx(labelled.loss.item(), rel=1e-5)
    teacher_logits = torch.randn(4, 2)
    _, parts = Distiller(objective, [0], 16, 16)(outputs, teacher_logits)
    assert parts["ce"] == pytest.approx(0.5 * labelled.loss.item(), rel=1e-5)  # the converted outputs keep it
    assert parts["kd"] > 0  # the soft-target loss covers all four

    alone = {**batch, "labels": torch.full((4,), UNLABELED)}  # a batch of transfer examples: the model's loss is NaN
    assert torch.isnan(student(**alone).loss) and student_forward(student, objective, alone).loss.item() == 0

    labelled_only = {**batch, "labels": torch.tensor([1, 0, 0, 1])}
    own = student(**labelled_only).loss  # a batch without transfer examples: the model's own loss, unchanged
    assert student_forward(student, objective, labelled_only).loss.item() == pytest.approx(own.item(), rel=1e-6)
    assert student_forward(student, DistillationConfig(kd_weight=1.0), dict(batch)).loss is None


def test_unlabelled_examples_join_the_training_split_marked_unlabelled(splits):
    labelled = splits["train"].rename_column("label", "labels").select(range(4))
    unlabelled = datasets.Dataset.from_dict({"text": ["w1 w2", "w3"]})
    mixed = mix_unlabeled(labelled, [unlabelled])
    assert list(mixed["labels"]) == list(labelled["labels"]) + [UNLABELED, UNLABELED]
    assert list(mixed["text"])[-2:] == ["w1 w2", "w3"]
    assert mix_unlabeled(labelled, []) is labelled


def test_transfer_sets_leave_out_texts_the_run_is_scored_on(splits, tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    path = tmp_path / "texts.txt"
    path.write_text("w1 w2 w3\n" + splits["validation"]["text"][0] + "\n")
    args = TransferArguments(unlabeled_file=[str(path)], augment=1)
    sets = transfer_sets(args, splits, tokenizer, text_column="text", label_column="label", max_length=32, seed=3)
    assert len(sets["unlabeled"]) == 1 and tokenizer.decode(sets["unlabeled"][0]["input_ids"]) == "[CLS] w1 w2 w3 [SEP]"
    assert len(sets["augmented"]) == len(expected_augmented(splits, 1, seed=3))
    assert set(sets["augmented"].column_names) == {"input_ids", "token_type_ids", "attention_mask", "length"}
    assert transfer_sets(TransferArguments(), splits, tokenizer, text_column="text", label_column="label",
                         max_length=32, seed=3) == {}

    regression = splits.cast_column("label", datasets.Value("float32"))
    with pytest.raises(ValueError, match="need class labels"):
        transfer_sets(args, regression, tokenizer, text_column="text", label_column="label", max_length=32, seed=3)


def test_unlabelled_files_of_several_formats_read_in_order(tmp_path):
    (tmp_path / "a.csv").write_text("id,text\n1,first text\n2,second text\n")
    (tmp_path / "b.txt").write_text("third text\n\n  \nfourth text\n")
    (tmp_path / "c.json").write_text(json.dumps([{"body": "fifth text"}]))
    texts = load_unlabeled_texts([str(tmp_path / "a.csv"), str(tmp_path / "b.txt")])
    assert list(texts["text"]) == ["first text", "second text", "third text", "fourth text"]
    assert texts.column_names == ["text"]
    assert load_unlabeled_texts([str(tmp_path / "c.json")], text_column="body")["text"][:] == ["fifth text"]
    with pytest.raises(ValueError, match="extension '.md'"):
        (tmp_path / "d.md").write_text("x")
        load_unlabeled_texts([str(tmp_path / "d.md")])
