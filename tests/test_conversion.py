"""convert_to_compact: upstream BERT-family checkpoints become compact students with the teacher's weights."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    SqueezeBertConfig,
    SqueezeBertForSequenceClassification,
)

import hf_compact
from hf_compact.conversion import _block_diagonal_to_dense, _dense_to_block_diagonal


TINY_BERT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
SQUEEZE_DENSE = dict(q_groups=1, k_groups=1, v_groups=1, post_attention_groups=1, intermediate_groups=1, output_groups=1)


def _inputs(batch=3, seq=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 99, (batch, seq), generator=generator)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    return input_ids, attention_mask


def _teacher(cls, **overrides):
    torch.manual_seed(0)
    return cls(BertConfig(**{**TINY_BERT, **overrides})).eval()


@pytest.mark.parametrize("target", ["compact_distilbert", "compact_squeezebert"])
def test_bert_with_every_layer_kept_is_exactly_the_teacher(target):
    teacher = _teacher(BertModel)
    overrides = SQUEEZE_DENSE if target == "compact_squeezebert" else {}
    student = hf_compact.convert_to_compact(teacher, target, layers=[0, 1, 2, 3], **overrides)
    input_ids, attention_mask = _inputs()
    with torch.no_grad():
        expected = teacher(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        actual = student(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    mask = attention_mask.bool()
    assert len(actual.hidden_states) == len(expected.hidden_states)
    for ours, theirs in zip(actual.hidden_states, expected.hidden_states):
        assert (ours - theirs)[mask].abs().max() < 1e-5


def test_layer_subset_matches_the_teacher_layers_it_was_built_from():
    teacher = _teacher(BertForSequenceClassification, num_labels=3)
    student = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=2)
    assert isinstance(student, hf_compact.CompactDistilBertForSequenceClassification)
    assert student.config.teacher_layer_map == [1, 3]
    assert student.config.n_layers == 2 and student.config.num_labels == 3
    layer = student.distilbert.transformer.layer[1]
    source = teacher.bert.encoder.layer[3]
    torch.testing.assert_close(layer.attention.q_lin.weight, source.attention.self.query.weight)
    torch.testing.assert_close(layer.ffn.lin2.bias, source.output.dense.bias)
    torch.testing.assert_close(student.classifier.weight, teacher.classifier.weight)
    torch.testing.assert_close(student.pre_classifier.weight, teacher.bert.pooler.dense.weight)
    # token type 0 is folded into the position embeddings
    torch.testing.assert_close(
        student.distilbert.embeddings.position_embeddings.weight,
        teacher.bert.embeddings.position_embeddings.weight + teacher.bert.embeddings.token_type_embeddings.weight[0],
    )


def test_squeezebert_student_takes_the_block_diagonal_part():
    teacher = _teacher(BertForSequenceClassification)
    student = hf_compact.convert_to_compact(teacher, "compact_squeezebert", layers=[0, 2], q_groups=4, output_groups=2)
    assert isinstance(student, hf_compact.CompactSqueezeBertForSequenceClassification)
    query = student.transformer.encoder.layers[1].attention.query.weight
    assert query.shape == (32, 8, 1)
    dense = teacher.bert.encoder.layer[2].attention.self.query.weight
    torch.testing.assert_close(query[8:16, :, 0], dense[8:16, 8:16])
    out = student.transformer.encoder.layers[0].output.conv1d.weight
    torch.testing.assert_close(out[16:, :, 0], teacher.bert.encoder.layer[0].output.dense.weight[16:, 32:])
    # The pooler and classifier are the same architecture in both: the head is copied exactly.
    torch.testing.assert_close(student.transformer.pooler.dense.weight, teacher.bert.pooler.dense.weight)


def test_block_diagonal_round_trip():
    weight = torch.randn(12, 3, 1)
    dense = _block_diagonal_to_dense(weight, groups=4)
    assert dense.shape == (12, 12)
    assert dense[0:3, 3:].abs().sum() == 0
    torch.testing.assert_close(_dense_to_block_diagonal(dense, groups=4), weight)


@pytest.mark.parametrize(
    "teacher_class,head",
    [
        (BertForMaskedLM, "ForMaskedLM"),
        (BertForTokenClassification, "ForTokenClassification"),
        (BertForQuestionAnswering, "ForQuestionAnswering"),
    ],
)
@pytest.mark.parametrize("target", ["compact_distilbert", "compact_squeezebert"])
def test_every_head_converts_and_keeps_the_head_weights(teacher_class, head, target):
    teacher = _teacher(teacher_class)
    student = hf_compact.convert_to_compact(teacher, target, num_hidden_layers=2)
    assert type(student).__name__.endswith(head)
    input_ids, attention_mask = _inputs()
    with torch.no_grad():
        out = student(input_ids, attention_mask=attention_mask)
    assert torch.isfinite(out[0]).all()
    if head == "ForMaskedLM":
        assert student.get_output_embeddings().weight.data_ptr() == student.get_input_embeddings().weight.data_ptr()


def test_mlm_student_with_every_layer_predicts_like_the_teacher():
    teacher = _teacher(BertForMaskedLM)
    student = hf_compact.convert_to_compact(teacher, "compact_squeezebert", layers=[0, 1, 2, 3], **SQUEEZE_DENSE)
    input_ids, attention_mask = _inputs()
    with torch.no_grad():
        expected = teacher(input_ids, attention_mask=attention_mask).logits
        actual = student(input_ids, attention_mask=attention_mask).logits
    mask = attention_mask.bool()
    assert (expected - actual)[mask].abs().max() < 1e-4


def test_upstream_distilbert_and_squeezebert_convert_within_their_family(tmp_path):
    torch.manual_seed(0)
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=99, dim=32, n_layers=4, n_heads=4, hidden_dim=37, max_position_embeddings=64)
    ).eval()
    distil.save_pretrained(tmp_path / "distil")
    student = hf_compact.convert_to_compact(tmp_path / "distil", "compact_distilbert", layers=[0, 1, 2, 3])
    input_ids, attention_mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            student(input_ids, attention_mask=attention_mask).logits,
            distil(input_ids, attention_mask=attention_mask).logits,
            atol=1e-5,
            rtol=0,
        )
    squeeze = SqueezeBertForSequenceClassification(
        SqueezeBertConfig(**{**TINY_BERT, "embedding_size": 32}, q_groups=2, k_groups=2, v_groups=2)
    ).eval()
    student = hf_compact.convert_to_compact(squeeze, "compact_squeezebert", num_hidden_layers=2)
    assert student.config.q_groups == 2 and student.config.num_hidden_layers == 2
    torch.testing.assert_close(
        student.transformer.encoder.layers[0].attention.query.weight,
        squeeze.transformer.encoder.layers[1].attention.query.weight,
    )


def test_bad_requests_raise_clear_errors():
    teacher = _teacher(BertForSequenceClassification)
    with pytest.raises(ValueError, match="target_type='roberta'"):
        hf_compact.convert_to_compact(teacher, "roberta")
    with pytest.raises(ValueError, match=r"layers=\[0, 7\].*\[7\]"):
        hf_compact.convert_to_compact(teacher, "compact_distilbert", layers=[0, 7])
    with pytest.raises(ValueError, match="vocab_size=50"):
        hf_compact.convert_to_compact(teacher, "compact_distilbert", vocab_size=50)
    with pytest.raises(ValueError, match="dim=64"):
        hf_compact.convert_to_compact(teacher, "compact_distilbert", dim=64)
    with pytest.raises(ValueError, match="output_groups"):
        hf_compact.convert_to_compact(teacher, "compact_squeezebert", output_groups=5)


def test_another_family_is_refused(tmp_path):
    from transformers import RobertaConfig, RobertaModel

    roberta = RobertaModel(RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         intermediate_size=37))
    with pytest.raises(ValueError, match="'roberta'"):
        hf_compact.convert_to_compact(roberta, "compact_distilbert")
    roberta.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'roberta'"):
        hf_compact.convert_to_compact(tmp_path, "compact_squeezebert")
