"""Tokenizers travel with converted students, and a compact folder without a vocabulary is refused clearly."""

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

import hf_compact


SENTENCES = [
    "A gripping, beautifully acted film.",
    "Two hours I will never get back!",
    "The plot of 'Inception' (2010) is un-be-lie-va-bly convoluted, yet its score by Hans Zimmer soars.",
    "Déjà vu: naïve heroes, café scenes and 42 explosions.",
    "supercalifragilisticexpialidocious",
]


@pytest.mark.parametrize("target", ["compact_distilbert", "compact_squeezebert"])
@pytest.mark.parametrize("source_kind", ["folder", "model"])
def test_a_student_saves_the_teachers_tokenizer(minilm_path, target, source_kind, tmp_path):
    teacher_tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    source = minilm_path if source_kind == "folder" else AutoModel.from_pretrained(minilm_path)
    student = hf_compact.convert_to_compact(source, target, num_hidden_layers=2, head="ForSequenceClassification")
    student.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer(SENTENCES)["input_ids"] == teacher_tokenizer(SENTENCES)["input_ids"]
    assert len(tokenizer) == len(teacher_tokenizer) == 30522


@pytest.mark.parametrize("as_folder", [False, True])
def test_a_tokenizer_can_be_given_explicitly(tokenizer_dir, as_folder, tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(
        BertConfig(vocab_size=55, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    expected = AutoTokenizer.from_pretrained(tokenizer_dir)
    given = str(tokenizer_dir) if as_folder else expected
    student = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=1, tokenizer=given)
    student.save_pretrained(tmp_path)
    texts = ["w1 w2 w3", "w7 w49 unknown"]
    assert AutoTokenizer.from_pretrained(tmp_path)(texts)["input_ids"] == expected(texts)["input_ids"]


def test_pipeline_on_a_saved_student_classifies_like_the_student(trained_teacher, tmp_path):
    teacher_tokenizer = AutoTokenizer.from_pretrained(trained_teacher)
    student = hf_compact.convert_to_compact(trained_teacher, "compact_distilbert", num_hidden_layers=2)
    student.save_pretrained(tmp_path)
    texts = ["w0 w9 w10 w11", "w12 w13 w14", "w20 w3 w30 w31 w32", "w40 w41"]
    encoded = teacher_tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        probabilities = student(**encoded).logits.softmax(-1)
    predictions = pipeline("sentiment-analysis", model=str(tmp_path), device="cpu")(texts)
    for prediction, row in zip(predictions, probabilities):
        assert prediction["label"] == student.config.id2label[int(row.argmax())]
        assert prediction["score"] == pytest.approx(float(row.max()), abs=1e-5)


@pytest.mark.parametrize("target", ["compact_distilbert", "compact_squeezebert"])
def test_a_compact_folder_without_a_vocabulary_is_refused(target, tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(
        BertConfig(vocab_size=55, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    student = hf_compact.convert_to_compact(teacher, target, num_hidden_layers=1)  # no tokenizer anywhere
    student.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)no tokenizer vocabulary.*" + str(tmp_path) + r".*save_pretrained"):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no tokenizer vocabulary"):
        pipeline("sentiment-analysis", model=str(tmp_path), device="cpu")


def test_copies_and_pickles_of_a_student_save_their_own_weights_and_the_tokenizer(tokenizer_dir, tmp_path):
    import copy
    import pickle

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(
        BertConfig(vocab_size=55, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    student = hf_compact.convert_to_compact(teacher, "compact_distilbert", tokenizer=str(tokenizer_dir))
    for name, clone in (("copy", copy.deepcopy(student)), ("pickle", pickle.loads(pickle.dumps(student)))):
        with torch.no_grad():
            clone.classifier.bias.fill_(3.0)
        clone.save_pretrained(tmp_path / name)
        reloaded = hf_compact.CompactDistilBertForSequenceClassification.from_pretrained(tmp_path / name)
        torch.testing.assert_close(reloaded.classifier.bias, torch.full((2,), 3.0))
        assert AutoTokenizer.from_pretrained(tmp_path / name)("w1 w2")["input_ids"] == [2, 6, 7, 3]
    assert not torch.equal(student.classifier.bias, torch.full((2,), 3.0))
