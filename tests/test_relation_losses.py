"""MiniLM-v2 self-attention relation distillation: the loss against a hand-written reference, the recording of each
model family's q, k and v projections, and the loss wired into the distiller between real models."""

import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, SqueezeBertConfig, SqueezeBertModel

from hf_compact import convert_to_compact, losses
from hf_compact.distillation import AttentionProjections, DistillationConfig, Distiller, attention_projection_modules


def relations_by_hand(vectors, heads, mask_row):
    """softmax over real keys of <x_q, x_k> / sqrt(d) for each relation head, as nested lists [head][query][key]."""
    width = len(vectors[0])
    size = width // heads
    out = []
    for head in range(heads):
        part = [v[head * size:(head + 1) * size] for v in vectors]
        rows = []
        for query in part:
            scores = [sum(a * b for a, b in zip(query, key)) / math.sqrt(size) for key in part]
            exps = [math.exp(s) if real else 0.0 for s, real in zip(scores, mask_row)]
            rows.append([e / sum(exps) for e in exps])
        out.append(rows)
    return out


def relation_kl_by_hand(student, teacher, mask, heads):
    """KL(teacher || student) of the relations, averaged over heads and real queries."""
    total, count = 0.0, 0
    for s_vectors, t_vectors, mask_row in zip(student, teacher, mask):
        s_rel = relations_by_hand(s_vectors, heads, mask_row)
        t_rel = relations_by_hand(t_vectors, heads, mask_row)
        for head in range(heads):
            for query, real in enumerate(mask_row):
                if real:
                    total += sum(p * math.log(p / q) for p, q in zip(t_rel[head][query], s_rel[head][query]) if p)
                    count += 1
    return total / count


def test_attention_relation_kl_matches_a_hand_written_reference():
    generator = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 3, 4, generator=generator) for _ in range(3)]  # q, k, v of width 4
    teacher = [torch.randn(2, 3, 6, generator=generator) for _ in range(3)]  # width 6: widths may differ
    mask = [[1, 1, 1], [1, 1, 0]]
    expected = sum(relation_kl_by_hand(s.tolist(), t.tolist(), mask, 2) for s, t in zip(student, teacher))
    got = losses.attention_relation_kl(student, teacher, torch.tensor(mask), num_relation_heads=2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Without a mask every token counts.
    full = [[1, 1, 1], [1, 1, 1]]
    expected = sum(relation_kl_by_hand(s.tolist(), t.tolist(), full, 2) for s, t in zip(student, teacher))
    assert losses.attention_relation_kl(student, teacher, None, 2).item() == pytest.approx(expected, rel=1e-5)


def test_attention_relation_kl_is_zero_for_equal_relations_and_checks_its_inputs():
    qkv = [torch.randn(2, 4, 8) for _ in range(3)]
    assert losses.attention_relation_kl(qkv, [t.clone() for t in qkv], None, 4).item() == pytest.approx(0, abs=1e-6)
    assert losses.attention_relation_kl(qkv, [qkv[1], qkv[0], qkv[2]], None, 4).item() > 0  # q and k swapped
    with pytest.raises(ValueError, match="query, key and value"):
        losses.attention_relation_kl(qkv[:2], qkv[:2])
    with pytest.raises(ValueError, match="num_relation_heads=3"):
        losses.attention_relation_kl(qkv, qkv, None, 3)


def tiny_bert(layers=4, hidden=32, heads=4):
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=64,
                                      max_position_embeddings=32)).eval()


INPUTS = {"input_ids": torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]]),
          "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}


@pytest.mark.parametrize("student_type", ["compact_distilbert", "compact_squeezebert"])
def test_recorded_projections_are_those_of_the_chosen_layer(student_type):
    teacher = tiny_bert()
    models = {"bert": teacher, student_type: convert_to_compact(teacher, student_type, layers=[0, 2]).eval()}
    for name, model in models.items():
        layers = attention_projection_modules(model)
        assert len(layers) == model.config.num_hidden_layers, name
        recorded = AttentionProjections(model, layer=-1)
        with torch.no_grad():
            hidden = model(**INPUTS, output_hidden_states=True).hidden_states
        q, k, v = recorded.take()
        assert recorded.attention_mask is INPUTS["attention_mask"]
        with pytest.raises(ValueError, match="since they were last taken"):
            recorded.take()  # each forward pass's projections are taken once
        recorded.remove()
        with torch.no_grad():
            model(**INPUTS)
            expected = [projection(hidden[-2]) for projection in layers[-1]]  # the last layer's, of its input
        assert recorded.outputs == [None] * 3  # no hooks left
        for got, want in zip((q, k, v), expected):
            torch.testing.assert_close(got, want)


def test_upstream_squeezebert_projections_are_recorded_channels_last():
    torch.manual_seed(0)
    upstream = SqueezeBertModel(SqueezeBertConfig(vocab_size=60, hidden_size=32, embedding_size=32,
                                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                  max_position_embeddings=32)).eval()
    compact = convert_to_compact(upstream, "compact_squeezebert", layers=[0, 1]).eval()
    records = [AttentionProjections(model, layer=1) for model in (upstream, compact)]
    with torch.no_grad():
        upstream(**INPUTS)
        compact(**INPUTS)
    upstream_qkv, compact_qkv = (r.take() for r in records)
    for got, want in zip(upstream_qkv, compact_qkv):
        assert got.shape == (2, 5, 32)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_distiller_relation_loss_between_a_teacher_and_a_student():
    teacher = tiny_bert()
    student = convert_to_compact(teacher, "compact_distilbert", layers=[0, 1, 2, 3]).eval()  # the same function
    config = DistillationConfig(kd_weight=0, attention_relation_weight=2.0, relation_heads=2)
    assert config.uses_teacher and config.needs_teacher_forward and not config.needs_hidden_states
    assert config.output_flags() == {"output_hidden_states": False, "output_attentions": False}

    distiller = Distiller.between(config, [0, 1, 2, 3], student, teacher)
    assert distiller.relation_layers == (3, 3)
    teacher_outputs = config.teacher_outputs(teacher, INPUTS)
    total, parts = distiller(student(**INPUTS), teacher_outputs=teacher_outputs)
    assert set(parts) == {"attention_relation"} and parts["attention_relation"] == pytest.approx(0, abs=1e-6)
    distiller.remove_hooks()

    # Against teacher layer 1 the student's last layer differs; the loss trains only what feeds that layer's q/k/v.
    config = DistillationConfig(kd_weight=0, attention_relation_weight=2.0, relation_heads=2, relation_teacher_layer=1)
    distiller = Distiller.between(config, [0, 1, 2, 3], student, teacher)
    assert distiller.relation_layers == (3, 1)
    teacher_outputs = config.teacher_outputs(teacher, INPUTS)
    student.train()
    total, parts = distiller(student(**INPUTS), teacher_outputs=teacher_outputs)
    assert parts["attention_relation"] == pytest.approx(total.item()) and total.item() > 0
    total.backward()
    layers = student.distilbert.transformer.layer
    assert layers[3].attention.q_lin.weight.grad.abs().sum() > 0
    assert layers[3].attention.out_lin.weight.grad is None  # after the q/k/v projections: not in the loss
    assert all(p.grad is None for p in teacher.parameters())
    distiller.remove_hooks()


def test_distiller_relation_loss_weights_masks_and_errors():
    teacher, student = tiny_bert(layers=4, hidden=32), tiny_bert(layers=2, hidden=24, heads=3)
    config = DistillationConfig(kd_weight=0, attention_relation_weight=1.0, relation_heads=4)
    distiller = Distiller.between(config, [1, 3], student, teacher)
    assert distiller.relation_layers == (1, 3)
    teacher_outputs = config.teacher_outputs(teacher, INPUTS)
    student_outputs = student(**INPUTS)
    student_qkv = [t.detach().clone() for t in distiller.student_projections.outputs]
    teacher_qkv = [t.clone() for t in distiller.teacher_projections.outputs]
    # The sentence-level case (no mask given): the mask the student ran with is used.
    _, parts = distiller(student_outputs, teacher_outputs=teacher_outputs)
    expected = losses.attention_relation_kl(student_qkv, teacher_qkv, INPUTS["attention_mask"], 4).item()
    assert parts["attention_relation"] == pytest.approx(expected, rel=1e-5)
    distiller.remove_hooks()

    with pytest.raises(ValueError, match="relation_heads=5 must divide both widths"):
        Distiller.between(DistillationConfig(attention_relation_weight=1.0, relation_heads=5), [1, 3], student,
                          teacher)
    with pytest.raises(ValueError, match="relation_teacher_layer=4: layer=4 is outside the model's 4 attention"):
        Distiller.between(DistillationConfig(attention_relation_weight=1.0, relation_teacher_layer=4), [1, 3],
                          student, teacher)
    plain = Distiller(config, [1, 3], 24, 32)
    with pytest.raises(ValueError, match="Distiller.between"):
        plain(student_outputs, teacher_outputs=teacher_outputs)
    assert DistillationConfig(kd_weight=0, attention_relation_weight=1).weights()["attention_relation"] == 1
    with pytest.raises(ValueError, match="attention_relation"):
        DistillationConfig(kd_weight=0, attention_relation_weight=0)
