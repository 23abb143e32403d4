"""recipes/distill.py --task mlm end to end as general (task-agnostic) distillation: raw text, no labels, a teacher
without a masked-LM head, the hidden-state and attention-relation losses; the soft-target loss refused for it; the
saved student as the start of a task student."""

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoModelForMaskedLM

from hf_compact.distill_models import load_teacher, student_from_folder
from test_distill_recipe import RECIPE, common, run


def distill_in_process(args):
    """The recipe's `main` in this process, with every progress report it sends kept."""
    sys.path.insert(0, str(Path(RECIPE).parent))
    import distill

    reports = []
    try:
        results = distill.main([str(a) for a in args], progress=reports.append)
    finally:
        AcceleratorState._reset_state(True)
    return results, reports


GENERAL = ["--task", "mlm", "--kd_weight", "0", "--cos_weight", "1", "--attention_relation_weight", "1",
           "--relation_heads", "4", "--student_layers", "2", "--learning_rate", "2e-3", "--latency_batches", "0"]


@pytest.mark.parametrize("student", [["compact_distilbert"], ["compact_squeezebert", "--student_groups", "2"]],
                         ids=lambda student: student[0])
def test_general_distillation_from_a_teacher_without_an_mlm_head(trained_teacher, synthetic_csv, tmp_path, student,
                                                                 capsys, caplog):
    out = tmp_path / "general"
    with caplog.at_level(logging.WARNING, logger="hf_compact.distill_evaluation"):
        results, reports = distill_in_process(common(trained_teacher, synthetic_csv, out, *GENERAL,
                                                     "--student_type", *student, "--num_train_epochs", "2"))
    assert results.training.loss_weights["kd"] == 0 and results.training.loss_weights["attention_relation"] == 1
    # The teacher's head was initialised at random and is not used: no perplexity of it is measured or recorded.
    assert "masked-LM head is not used" in caplog.text and "no masked-LM head" in caplog.text
    printed = capsys.readouterr().out
    assert "teacher mlm_loss" not in printed
    assert results.teacher.metrics is None
    recorded = json.loads((out / "results.json").read_text())["teacher"]
    assert "metrics" not in recorded and "no masked-LM head" in recorded["metrics_not_measured"]
    # Nor is the student's: with --kd_weight 0 and --ce_weight 0 nothing trains its head, so its perplexity would
    # measure random weights; the log, the record and the card say so instead.
    student_record = json.loads((out / "results.json").read_text())["student"]
    assert results.student.metrics == {} and student_record["metrics"] == {}
    assert "masked-LM head is not trained" in student_record["metrics_not_measured"]
    assert "student mlm_loss" not in printed and "masked-LM head is not trained" in printed
    card = (out / "README.md").read_text()
    assert "perplexity" not in card.lower() and "masked-LM head is not trained" in card
    assert results.training.teacher_cache is False  # the relation loss reads the teacher at every step
    steps = [report.metrics for report in reports if report.stage == "train"]
    assert len(steps) > 8 and all({"cos", "attention_relation"} <= set(step) for step in steps)
    first, last = (sum(step["attention_relation"] for step in part) / 4 for part in (steps[:4], steps[-4:]))
    assert last < first  # the student's last layer learns the teacher's q/k/v relations
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.model_type == student[0] and model.config.num_hidden_layers == 2

    # The task stage starts from it: its encoder, the classifier teacher's labels, the map it was distilled with.
    teacher = load_teacher(str(trained_teacher), "sequence-classification")
    task_student, layers = student_from_folder(str(out), "sequence-classification", teacher)
    assert type(task_student).__name__.endswith("ForSequenceClassification") and layers == [1, 3]
    assert task_student.config.id2label == teacher.config.id2label
    task_encoder = task_student.base_model.state_dict()
    for name, tensor in model.base_model.state_dict().items():
        assert torch.equal(task_encoder[name], tensor), name

    # ... and through the recipe: --student_init starts task distillation from the general-distilled student.
    task, _ = distill_in_process(common(trained_teacher, synthetic_csv, tmp_path / "task", "--student_init", out,
                                        "--student_type", student[0], "--num_train_epochs", "1",
                                        "--latency_batches", "0"))
    assert task.training.init == "a saved compact student (--student_init)" and task.training.layer_map == [1, 3]
    assert task.student.metrics["accuracy"] > 0


def test_only_a_compact_model_starts_a_student(trained_teacher):
    teacher = load_teacher(str(trained_teacher), "sequence-classification")
    with pytest.raises(SystemExit, match="--student_init .* is a 'bert' model"):
        student_from_folder(str(trained_teacher), "sequence-classification", teacher)


def test_the_soft_target_loss_needs_a_trained_mlm_head(trained_teacher, synthetic_csv, tmp_path):
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "kd", "--task", "mlm", "--kd_weight", "1",
                        "--student_layers", "2"), expect_ok=False)
    assert result.returncode == 1
    assert "has no trained masked-LM head" in result.stderr and "cls.predictions.transform.dense.weight" in (
        result.stderr)
    assert "--kd_weight 0" in result.stderr
    assert not (tmp_path / "kd").exists()  # refused before anything was written
