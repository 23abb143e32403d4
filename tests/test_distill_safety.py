"""recipes/distill.py loses nothing: every check before any work, old outputs replaced only by finished ones,
resume past damaged checkpoints, teacher-cache entries verified, checkpoints without the frozen teacher."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from test_distill_recipe import common, run, run_killed


def keep_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keep.txt").write_text("earlier results")
    return folder / "keep.txt"


def test_overwrite_with_a_typo_keeps_the_old_folder(trained_teacher, synthetic_csv, tmp_path):
    kept = keep_file(tmp_path / "out")
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "out", "--overwrite_output_dir",
                        "--text_column", "reviw"), expect_ok=False)
    assert result.returncode != 0 and "['reviw'] not found" in result.stderr + result.stdout
    assert kept.read_text() == "earlier results"


def test_overwrite_replaces_the_old_folder_once_the_new_model_is_saved(trained_teacher, synthetic_csv, tmp_path):
    kept = keep_file(tmp_path / "out")
    run(common(trained_teacher, synthetic_csv, tmp_path / "out", "--overwrite_output_dir", "--student_layers", "1",
               "--max_steps", "2", "--latency_batches", "0"))
    assert not kept.exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".teacher_cache", "out"]  # no staging folder beside it


def test_an_output_folder_that_cannot_be_created_fails_before_training(trained_teacher, synthetic_csv, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "a_file" / "out"), expect_ok=False)
    assert result.returncode != 0
    assert "is a file, not a folder" in result.stderr
    assert "Teacher logits" not in result.stderr and "distilling" not in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--student_layers", "0"], "--student_layers must be positive"),
        (["--student_feed_forward_groups", "0"], "--student_feed_forward_groups must be positive"),
        (["--student_type", "compact_squeezebert", "--student_feed_forward_groups", "5"],
         "The student cannot be built: intermediate_groups=5 is invalid"),
        (["--save_total_limit", "0"], "--save_total_limit must be positive"),
        (["--max_length", "100"], "--max_length 100 is longer than"),
    ],
)
def test_impossible_settings_fail_before_any_work(trained_teacher, synthetic_csv, tmp_path, flags, message):
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "out", *flags), expect_ok=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_does_not_match_the_teachers_embeddings_is_refused(tokenizer_dir, synthetic_csv, tmp_path):
    teacher = tmp_path / "teacher"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(teacher)
    for name in os.listdir(tokenizer_dir):  # a 55-token vocabulary beside 30,522 embeddings
        (teacher / name).write_bytes((tokenizer_dir / name).read_bytes())
    result = run(common(teacher, synthetic_csv, tmp_path / "out"), expect_ok=False)
    assert result.returncode != 0 and "does not belong to this teacher" in result.stderr, result.stderr[-2000:]


def test_integer_labels_keep_their_ids_for_a_teacher_with_named_labels(trained_teacher, tmp_path):
    from conftest import synthetic_rows, write_csv

    rows = [{"text": r["text"], "label": int(r["label"] == "positive")} for r in synthetic_rows(200, seed=3)]
    data = write_csv(tmp_path / "ids.csv", rows)
    run(common(trained_teacher, data, tmp_path / "out", "--student_layers", "1", "--max_steps", "2",
               "--latency_batches", "0"))


def test_resume_falls_back_past_a_damaged_checkpoint(trained_teacher, synthetic_csv, tmp_path):
    args = ["--student_layers", "2", "--num_train_epochs", "1", "--save_steps", "3", "--save_total_limit", "3",
            "--learning_rate", "1e-3", "--no_teacher_cache", "--latency_batches", "0"]
    run(common(trained_teacher, synthetic_csv, tmp_path / "whole", *args))
    run_killed(common(trained_teacher, synthetic_csv, tmp_path / "resumed", *args), at_step=7)
    newest = tmp_path / "resumed" / "checkpoints" / "checkpoint_1"  # step 6
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated, as by a full disk
    resumed = run(common(trained_teacher, synthetic_csv, tmp_path / "resumed", *args,
                         "--resume_from_checkpoint", "last"))
    assert f"checkpoint {newest} is damaged" in resumed.stdout
    assert "resumed from" in resumed.stdout and "checkpoint_0 (3 batches done)" in resumed.stdout
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    again = load_file(tmp_path / "resumed" / "model.safetensors")
    for name in whole:
        torch.testing.assert_close(again[name], whole[name], rtol=0, atol=0)


def test_checkpoints_hold_the_student_not_the_frozen_teacher(trained_teacher, synthetic_csv, tmp_path):
    out = tmp_path / "out"
    run(common(trained_teacher, synthetic_csv, out, "--student_layers", "1", "--max_steps", "2",
               "--save_steps", "2", "--cos_weight", "1", "--latency_batches", "0"))
    checkpoint = out / "checkpoints" / "checkpoint_0"
    files = sorted(p.name for p in checkpoint.glob("*.safetensors"))
    assert files == ["model.safetensors"]  # the teacher would be a second model file
    assert not any(name.startswith("bert.") for name in load_file(checkpoint / "model.safetensors"))


def test_training_logs_stay_out_of_what_is_published(trained_teacher, synthetic_csv, tmp_path):
    from hf_compact.hub import files_to_publish

    out = tmp_path / "out"
    run(common(trained_teacher, synthetic_csv, out, "--student_layers", "1", "--max_steps", "2",
               "--latency_batches", "0", "--report_to", "tensorboard"))
    written = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    assert any("tfevents" in name for name in written)  # the logs are there, for the user
    published = files_to_publish(out)
    assert "model.safetensors" in published
    assert not [name for name in published if "tfevents" in name or name.endswith("hparams.yml")], published


def test_nan_message_names_the_newest_checkpoint_by_number(tmp_path):
    from hf_compact.checkpointing import PROGRESS_FILE, list_checkpoints

    for number in (9, 10, 2, 11):
        (tmp_path / f"checkpoint_{number}").mkdir()
        if number != 11:  # a checkpoint still being written (no progress file yet) is not one
            (tmp_path / f"checkpoint_{number}" / PROGRESS_FILE).write_text("{}")
    assert [Path(p).name for p in list_checkpoints(tmp_path)] == ["checkpoint_2", "checkpoint_9", "checkpoint_10"]


def test_a_damaged_teacher_cache_entry_is_rebuilt(trained_teacher, synthetic_csv, tmp_path):
    args = ["--student_layers", "1", "--max_steps", "2", "--latency_batches", "0",
            "--teacher_cache_dir", tmp_path / "cache"]
    first = run(common(trained_teacher, synthetic_csv, tmp_path / "a", *args))
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    arrow = sorted(entries[0].glob("*.arrow"))[0]
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 3])
    again = run(common(trained_teacher, synthetic_csv, tmp_path / "b", *args))
    assert f"Teacher cache entry {entries[0]} is damaged" in again.stderr
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b")]
    assert results[0]["teacher"]["metrics"] == results[1]["teacher"]["metrics"]
    assert "damaged" not in first.stderr


def test_label_ids_in_another_order_than_the_teachers_are_refused(trained_teacher, tmp_path):
    from conftest import synthetic_rows, write_csv

    rows = [{"text": r["text"], "label": int(r["label"] == "negative")} for r in synthetic_rows(200, seed=3)]
    data = write_csv(tmp_path / "swapped.csv", rows)  # 0 = positive here, 0 = negative for the teacher
    result = run(common(trained_teacher, data, tmp_path / "out"), expect_ok=False)
    assert result.returncode != 0 and "do not follow the teacher's id2label" in result.stderr, result.stderr[-2000:]
    assert "distilling" not in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_mistyped_teacher_folder_is_named_as_such(synthetic_csv, tmp_path):
    result = run(common(tmp_path / "teachr", synthetic_csv, tmp_path / "out"), expect_ok=False)
    assert result.returncode != 0 and "there is no such local folder" in result.stderr, result.stderr[-2000:]


def test_a_hub_id_that_is_not_owner_name_is_refused_even_without_a_push(trained_teacher, synthetic_csv, tmp_path):
    result = run(common(trained_teacher, synthetic_csv, tmp_path / "out", "--hub_model_id", "badid"),
                 expect_ok=False)
    assert result.returncode != 0 and "Invalid Hub repo id 'badid'" in result.stderr


def test_the_grouped_fit_reports_the_examples_it_used(trained_teacher, synthetic_csv, tmp_path):
    run(common(trained_teacher, synthetic_csv, tmp_path / "out", "--student_type", "compact_squeezebert",
               "--student_groups", "2", "--student_layers", "1", "--max_steps", "1", "--max_train_samples", "100",
               "--latency_batches", "0"))
    init = json.loads((tmp_path / "out" / "results.json").read_text())["training"]["init"]
    assert "on 100 training examples" in init
