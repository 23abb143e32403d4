"""Padding plays no part in the distillation losses: the same examples padded to two lengths give the same loss parts
for sentence- and token-level students, whether the attention mask is given to the distiller or read from the
student's own call, and through the recipe's training loop."""

import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
)

import hf_compact  # noqa: F401  (registers the compact model types)
from hf_compact import convert_to_compact, losses
from hf_compact.distillation import DistillationConfig, Distiller
from test_distill_recipe import RECIPE, common


ROWS = [[2, 11, 12, 13, 3], [2, 14, 3], [2, 15, 16, 17, 18, 19, 3]]  # [CLS] ... [SEP], of three lengths
TOKEN_LOSSES = {"cos", "mse", "attention", "attention_relation"}


def padded(length: int) -> dict[str, torch.Tensor]:
    """ROWS padded with [PAD] (id 0) to `length` tokens."""
    input_ids = torch.tensor([row + [0] * (length - len(row)) for row in ROWS])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(),
            "token_type_ids": torch.zeros_like(input_ids)}


def tiny_teacher(head=BertForSequenceClassification):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3, initializer_range=0.2)
    return head(config).eval()


def student_of(teacher):
    """A compact_distilbert of teacher layers 1 and 3, its weights moved off the teacher's."""
    student = convert_to_compact(teacher, "compact_distilbert", layers=[1, 3])
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return student


def narrow_grouped_student():
    """A compact_squeezebert classifier narrower than the teacher (24 wide, 3 heads): the MSE loss goes through a
    projection and the attention loss compares relations."""
    torch.manual_seed(1)
    config = AutoConfig.for_model("compact_squeezebert", vocab_size=60, hidden_size=24, embedding_size=24,
                                  num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
                                  max_position_embeddings=32, num_labels=3, q_groups=2, k_groups=2, v_groups=2,
                                  intermediate_groups=2, output_groups=2, initializer_range=0.2)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")


def students():
    """(name, teacher, student, objective): a dense sentence-level student of the teacher's width, a narrower grouped
    one, and a token-level (per-token soft targets) student."""
    every_loss = dict(kd_weight=1.0, cos_weight=1.0, mse_weight=1.0, attention_weight=1.0,
                      attention_relation_weight=1.0, relation_heads=4)
    teacher = tiny_teacher()
    yield ("sentence, dense", teacher, student_of(teacher),
           DistillationConfig(**every_loss))
    yield ("sentence, grouped and narrower", teacher, narrow_grouped_student(),
           DistillationConfig(**{**every_loss, "cos_weight": 0.0}))
    tagger = tiny_teacher(BertForTokenClassification)
    yield ("token", tagger, student_of(tagger),
           DistillationConfig(**every_loss))


def loss_parts(distiller, objective, teacher, student, batch, give_mask: bool) -> dict[str, float]:
    with torch.no_grad():
        teacher_outputs = objective.teacher_outputs(teacher, batch)
        student_outputs = student(**batch, **objective.output_flags())
        mask = batch["attention_mask"] if give_mask else None
        return distiller(student_outputs, teacher_outputs=teacher_outputs, attention_mask=mask)[1]


@pytest.mark.parametrize("give_mask", [True, False], ids=["mask given", "mask of the student's call"])
def test_extra_padding_leaves_every_loss_part_unchanged(give_mask):
    for name, teacher, student, objective in students():
        teacher.set_attn_implementation("eager")
        student.set_attn_implementation("eager")
        student.eval()
        distiller = Distiller.between(objective, [1, 3], student, teacher)
        tight, loose = (loss_parts(distiller, objective, teacher, student, padded(length), give_mask)
                        for length in (7, 12))
        distiller.remove_hooks()
        assert set(tight) == {"kd"} | TOKEN_LOSSES - ({"cos"} if "narrower" in name else set()), name
        assert all(value > 1e-4 for value in tight.values()), (name, tight)  # the models differ: a test with teeth
        assert loose == pytest.approx(tight, rel=1e-4, abs=1e-6), name


def test_sentence_level_soft_targets_stay_per_example():
    """A mask given for sentence-level logits changes nothing: the KL averages over examples."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    mask = padded(12)["attention_mask"]
    per_example = sum(losses.soft_target_kl(s[None], t[None], 2.0) for s, t in zip(student, teacher)) / 3
    assert losses.soft_target_kl(student, teacher, 2.0, mask).item() == pytest.approx(per_example.item(), rel=1e-6)
    assert losses.soft_target_kl(student, teacher, 2.0).item() == pytest.approx(per_example.item(), rel=1e-6)


class ExtraPadding:
    """A collator followed by `extra` more [PAD] positions on every batch."""

    def __init__(self, collator, extra: int):
        self.collator, self.extra = collator, extra

    def __call__(self, features):
        batch = self.collator(features)
        for key, value in (("input_ids", 0), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in batch:
                batch[key] = F.pad(batch[key], (0, self.extra), value=value)
        return batch


def first_step_parts(monkeypatch, args, extra: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(RECIPE).parent))
    import distill

    collator_for_task = distill.collator_for_task
    monkeypatch.setattr(distill, "collator_for_task", lambda *a, **k: ExtraPadding(collator_for_task(*a, **k), extra))
    reports = []
    try:
        distill.main([str(a) for a in args], progress=reports.append)
    finally:
        AcceleratorState._reset_state(True)
    first = next(report.metrics for report in reports if report.stage == "train")
    return {name: value for name, value in first.items() if name not in ("loss", "lr")}


def test_the_recipes_training_loop_masks_padding_for_a_sentence_classifier(
    trained_teacher, synthetic_csv, tmp_path, monkeypatch
):
    flags = ["--student_layers", "2", "--kd_weight", "1", "--cos_weight", "1", "--mse_weight", "1",
             "--attention_weight", "1", "--attention_relation_weight", "1", "--relation_heads", "4",
             "--student_dropout", "0", "--max_steps", "1", "--latency_batches", "0", "--no_model_card"]
    tight, loose = (first_step_parts(monkeypatch, common(trained_teacher, synthetic_csv, tmp_path / f"pad{extra}",
                                                         *flags), extra)
                    for extra in (0, 9))
    assert set(tight) == {"kd"} | TOKEN_LOSSES
    assert loose == pytest.approx(tight, rel=1e-4, abs=1e-6)
