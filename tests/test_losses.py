"""Each distillation loss against values computed by hand, the loss assembly, and the layer maps."""

import math

import pytest
import torch
from types import SimpleNamespace

from hf_compact import losses
from hf_compact.distillation import DistillationConfig, Distiller
from hf_compact.layer_map import default_layer_map, parse_layer_map


def test_soft_target_kl_matches_the_formula():
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    temperature = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / temperature) for v in t_row]
        q = [math.exp(v / temperature) for v in s_row]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * temperature**2
    assert losses.soft_target_kl(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-6)
    assert losses.soft_target_kl(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_target_kl_on_tokens_counts_real_tokens_only():
    student = torch.randn(2, 3, 4)
    teacher = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    padded = teacher.clone()
    padded[0, 2] = 100.0  # padding positions must not matter
    expected = losses.soft_target_kl(student[mask.bool()], teacher[mask.bool()], 1.0)
    assert losses.soft_target_kl(student, padded, 1.0, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_soft_target_kl_rejects_mismatched_heads_and_bad_temperature():
    with pytest.raises(ValueError, match="number of labels"):
        losses.soft_target_kl(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="temperature=0"):
        losses.soft_target_kl(torch.zeros(2, 2), torch.zeros(2, 2), 0)


def test_hidden_cosine_and_mse_by_hand():
    student = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [9.0, -9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # token 1: orthogonal (1 - 0); token 2: parallel (1 - 1); token 3 is padding
    assert losses.hidden_cosine(student, teacher, mask).item() == pytest.approx(0.5)
    # squared errors: (1 + 1) and (1 + 1) over 4 values
    assert losses.hidden_mse(student, teacher, mask).item() == pytest.approx(1.0)
    projection = torch.nn.Linear(2, 3)
    assert losses.hidden_mse(student, torch.zeros(1, 3, 3), mask, projection).item() >= 0
    with pytest.raises(ValueError, match="projection"):
        losses.hidden_mse(student, torch.zeros(1, 3, 3), mask)
    with pytest.raises(ValueError, match="equal widths"):
        losses.hidden_cosine(student, torch.zeros(1, 3, 3), mask)


def test_attention_kl_by_hand():
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (batch 1, head 1, query 2, key 2)
    student = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 0.0) / 2
    assert losses.attention_kl(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    only_first = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    assert losses.attention_kl(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx(only_first, rel=1e-5)
    with pytest.raises(ValueError, match="relation loss"):
        losses.attention_kl(student, torch.zeros(1, 2, 2, 2))


def test_relation_kl_compares_models_of_different_widths():
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    relation = losses.self_relation(hidden, 2, mask)
    assert relation.shape == (2, 2, 5, 5)
    torch.testing.assert_close(relation.sum(-1), torch.ones(2, 2, 5))
    assert relation[1, :, :, 3:].abs().max() < 1e-6  # no probability on padded keys
    # The same relations in a wider space (the width duplicated) give zero loss.
    # (scores divide by sqrt(head_dim), which doubles: scaling by 2 ** -0.25 keeps every score the same)
    wide = torch.cat([hidden.view(2, 5, 2, 4)] * 2, dim=-1).view(2, 5, 16) * 2**-0.25
    assert losses.relation_kl(hidden, wide, mask, 2).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.relation_kl(hidden, torch.randn(2, 5, 12), mask, 2).item() > 0


def test_distiller_weights_and_parts():
    student = SimpleNamespace(
        logits=torch.tensor([[1.0, 0.0]]),
        loss=torch.tensor(0.7),
        hidden_states=[torch.ones(1, 2, 4)] * 3,
        attentions=[torch.full((1, 2, 2, 2), 0.5)] * 2,
    )
    teacher = SimpleNamespace(
        logits=torch.tensor([[0.0, 1.0]]),
        hidden_states=[torch.ones(1, 2, 4)] * 5,
        attentions=[torch.full((1, 2, 2, 2), 0.5)] * 4,
    )
    config = DistillationConfig(temperature=1.0, kd_weight=2.0, ce_weight=0.5, cos_weight=1.0, attention_weight=1.0)
    distiller = Distiller(config, layer_map=[1, 3], student_width=4, teacher_width=4, student_heads=2,
                          teacher_heads=2)
    total, parts = distiller(student, teacher_outputs=teacher)
    kd = losses.soft_target_kl(student.logits, teacher.logits, 1.0).item()
    assert parts["kd"] == pytest.approx(2.0 * kd)
    assert parts["ce"] == pytest.approx(0.35)
    assert parts["cos"] == pytest.approx(0.0, abs=1e-6) and parts["attention"] == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-6)
    assert config.needs_teacher_forward and not DistillationConfig(ce_weight=1.0).needs_teacher_forward


def test_distiller_builds_a_projection_only_when_widths_differ():
    assert Distiller(DistillationConfig(mse_weight=1.0), [0], 8, 8).projection is None
    projection = Distiller(DistillationConfig(mse_weight=1.0), [0], 8, 16).projection
    assert projection.in_features == 8 and projection.out_features == 16
    with pytest.raises(ValueError, match="mse_weight"):
        Distiller(DistillationConfig(cos_weight=1.0), [0], 8, 16)


def test_distillation_config_errors():
    with pytest.raises(ValueError, match="temperature=-1"):
        DistillationConfig(temperature=-1)
    with pytest.raises(ValueError, match="Every loss weight is 0"):
        DistillationConfig(kd_weight=0)
    with pytest.raises(ValueError, match="kd"):
        DistillationConfig(kd_weight=-1)


@pytest.mark.parametrize("teacher,student,strategy,expected", [
    (6, 3, "uniform", [1, 3, 5]),
    (12, 6, "uniform", [1, 3, 5, 7, 9, 11]),
    (12, 6, "alternate", [0, 2, 4, 6, 8, 10]),
    (12, 4, "uniform", [2, 5, 8, 11]),
    (4, 4, "uniform", [0, 1, 2, 3]),
    (6, 1, "uniform", [5]),
])
def test_default_layer_maps(teacher, student, strategy, expected):
    assert default_layer_map(teacher, student, strategy) == expected


def test_layer_map_errors():
    with pytest.raises(ValueError, match="num_student_layers=7 exceeds"):
        default_layer_map(6, 7)
    with pytest.raises(ValueError, match="strategy='every'"):
        default_layer_map(6, 3, "every")
    with pytest.raises(ValueError, match="num_teacher_layers=0"):
        default_layer_map(0, 3)
    assert parse_layer_map("0, 2,5", 6, 3) == [0, 2, 5]
    with pytest.raises(ValueError, match="has 2 entries but the student has 3"):
        parse_layer_map("1,2", 6, 3)
    with pytest.raises(ValueError, match=r"names layers \[9\]"):
        parse_layer_map("1,2,9", 6, 3)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_layer_map("a,b", 6, 2)
