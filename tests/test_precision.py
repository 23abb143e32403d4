"""Lower-precision variants: the grouped projections in a form that quantises, the gate, the folders kept and
refused, loading through the usual entry points, and bad input refused before any work."""

import os

import numpy as np
import onnx
import pytest
import torch
from conftest import synthetic_rows
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertTokenizer, pipeline

import hf_compact
from hf_compact import precision
from hf_compact.inference import classify
from hf_compact.onnx_export import export_onnx
from hf_compact.precision import (
    GroupedLinear,
    gate,
    load_variant,
    make_variants,
    parse_precisions,
    ungroup_projections,
)
from hf_compact.results import RunResults


def _texts_and_labels(n=96, seed=5):
    rows = synthetic_rows(n, seed=seed)
    return [row["text"] for row in rows], [1 if row["label"] == "positive" else 0 for row in rows]


@pytest.fixture(scope="module")
def squeezebert_folder(trained_teacher, tmp_path_factory):
    """A grouped student converted from the trained tiny BERT (2 groups everywhere), saved with its tokenizer."""
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher).eval()
    groups = dict.fromkeys(hf_compact.model_types.SQUEEZEBERT_GROUP_FIELDS, 2)
    student = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2, **groups)
    folder = tmp_path_factory.mktemp("squeezebert")
    student.save_pretrained(folder)
    BertTokenizer.from_pretrained(trained_teacher).save_pretrained(folder)
    return str(folder)


def test_parse_precisions():
    assert parse_precisions("bf16, INT8,bf16") == ["bf16", "int8"]
    assert parse_precisions(None) == [] and parse_precisions("") == []
    with pytest.raises(ValueError, match="Unknown precision 'fp8'; choose from bf16, int8"):
        parse_precisions("bf16,fp8")


def test_ungrouped_projections_compute_the_same_numbers(squeezebert_folder):
    model = AutoModelForSequenceClassification.from_pretrained(squeezebert_folder).eval()
    ungrouped = ungroup_projections(model)
    assert ungrouped is not model
    replaced = [m for m in ungrouped.modules() if isinstance(m, GroupedLinear)]
    assert len(replaced) == 2 * 6  # q, k, v, post-attention, intermediate, output in each of 2 layers
    assert not any(isinstance(m, GroupedLinear) for m in model.modules())  # the original is untouched
    inputs = {"input_ids": torch.randint(5, 55, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    with torch.inference_mode():
        torch.testing.assert_close(ungrouped(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)
    dense = hf_compact.CompactDistilBertForSequenceClassification(
        hf_compact.CompactDistilBertConfig(vocab_size=60, dim=32, n_layers=1, n_heads=4, hidden_dim=64)
    )
    assert ungroup_projections(dense) is dense


def test_grouped_projections_quantise_to_int8_matrix_multiplies(squeezebert_folder, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(squeezebert_folder).eval()
    path = export_onnx(ungroup_projections(model), tmp_path / "model.onnx")
    from hf_compact.onnx_export import quantize_onnx_int8

    quantized = onnx.load(quantize_onnx_int8(path, tmp_path / "int8.onnx"))
    integer_ops = [n for n in quantized.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    # 2 layers x 6 projections x 2 groups, plus the pooler and the classifier
    assert len(integer_ops) >= 24
    float_matmuls_with_weights = [
        n for n in quantized.graph.node
        if n.op_type in ("MatMul", "Gemm") and any(i in {t.name for t in quantized.graph.initializer} for i in n.input)
    ]
    assert float_matmuls_with_weights == []


def test_gate_measures_the_drop_against_float32():
    config = hf_compact.CompactDistilBertConfig(num_labels=2)
    reference = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    variant = reference.copy()
    variant[3] = [2.0, 0.0]  # one of four texts flips to a wrong label
    result = gate(reference, variant, [0, 1, 0, 1], config, tolerance_points=0.5)
    assert result["float32_accuracy"] == 1.0 and result["accuracy"] == 0.75
    assert result["accuracy_drop_points"] == pytest.approx(25.0)
    assert result["agreement"] == 0.75
    assert result["max_score_difference"] == pytest.approx(float(np.exp(2) / (1 + np.exp(2)) * 2 - 1), abs=1e-6)
    assert result["passed_gate"] is False
    assert gate(reference, variant, [0, 1, 0, 1], config, tolerance_points=30)["passed_gate"] is True


def timed_as(monkeypatch, float32_factor):
    """Scale the float32 model's measured speed by `float32_factor`, so which variants beat it is the test's choice."""
    import hf_compact.benchmarking as benchmarking

    real = benchmarking.compare_speed

    def compare_speed(models, *args, **kwargs):
        speed = real(models, *args, **kwargs)
        speed["models"]["float32"]["texts_per_s"] *= float32_factor
        return speed

    monkeypatch.setattr(benchmarking, "compare_speed", compare_speed)


def test_make_variants_keeps_what_passes_and_loads_everywhere(squeezebert_folder, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(squeezebert_folder, folder)
    texts, labels = _texts_and_labels()
    calibration = [row["text"] for row in synthetic_rows(64, seed=9)]
    timed_as(monkeypatch, float32_factor=0.01)  # every variant faster than float32: kept
    from hf_compact import onnx_export

    exports = []
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: exports.append(a[1]) or export_onnx(*a, **k))
    records = make_variants(folder, "bf16,int8", texts=texts, labels=labels, calibration_texts=calibration,
                            tolerance_points=5.0, repeats=1, num_threads=1)
    assert len(exports) == 1  # one float32 export, quantized by both int8 engines
    assert [r.precision for r in records] == ["bf16", "int8"]
    bf16, int8 = records
    assert bf16.engine == "torch"
    assert [t.engine for t in int8.trials] == ["onnxruntime-dynamic", "onnxruntime-static"]
    assert int8.engine == max((t for t in int8.trials if t.passed_gate), key=lambda t: t.texts_per_s).engine
    for record in records:
        assert record.passed_gate and record.path == f"variants/{record.precision}"
        assert record.agreement >= 0.9 and record.texts_per_s > 0 and record.float32_texts_per_s > 0
        assert record.file_size_bytes > 0 and record.threads == 1 and isinstance(record.cpu_flags, list)
    assert sorted(os.listdir(folder / "variants")) == ["bf16", "int8"]
    assert not [name for name in os.listdir(folder) if name.startswith(".variants-")]  # no staging left
    assert bf16.file_size_bytes < 0.6 * os.path.getsize(folder / "model.safetensors")
    # the record survives results.json
    round_trip = RunResults.from_dict({"model_name": "m", "model_type": "compact_squeezebert",
                                       "task": "text-classification", "dataset": {"name": "d"},
                                       "student": {"parameters": 1, "metrics": {"accuracy": 0.9}},
                                       "variants": [r.to_dict() for r in records]})
    assert round_trip.variants == records

    float32 = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = BertTokenizer.from_pretrained(folder)
    expected = [r["label"] for r in classify(float32, tokenizer, texts)]
    # bf16: a plain transformers folder
    served = pipeline("sentiment-analysis", model=str(folder / "variants" / "bf16"))
    assert served.model.dtype == torch.bfloat16
    agree = np.mean([r["label"] == e for r, e in zip(served(texts[:32]), expected[:32])])
    assert agree >= 0.9
    # int8: ONNX Runtime through load_variant, with classify's call and output
    int8_classifier = load_variant(folder / "variants" / "int8")
    results = int8_classifier(texts)
    assert set(results[0]) == {"label", "score"}
    assert np.mean([r["label"] == e for r, e in zip(results, expected)]) >= 0.9
    assert os.path.isfile(folder / "variants" / "int8" / "config.json")


def test_a_refused_variant_leaves_no_folder_and_says_by_how_much(squeezebert_folder, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(squeezebert_folder, folder)
    stale = folder / "variants" / "bf16"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"an earlier run's variant")
    real_gate = precision.gate

    def losing_gate(reference, logits, labels, config, tolerance_points):
        result = real_gate(reference, logits, labels, config, tolerance_points)
        return result | {"accuracy": result["float32_accuracy"] - 0.02, "accuracy_drop_points": 2.0,
                         "passed_gate": False}

    monkeypatch.setattr(precision, "gate", losing_gate)
    texts, labels = _texts_and_labels(48)
    (record,) = make_variants(folder, ["bf16"], texts=texts, labels=labels, repeats=1, num_threads=1)
    assert record.passed_gate is False and record.path is None
    assert "loses 2.00 accuracy points against float32" in record.reason
    assert "more than the tolerance of 0.5" in record.reason
    assert not (folder / "variants").exists()  # the stale variant is gone, nothing new was kept


def test_a_variant_slower_than_float32_passes_but_is_not_kept(squeezebert_folder, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(squeezebert_folder, folder)
    timed_as(monkeypatch, float32_factor=100.0)  # float32 faster than any variant
    texts, labels = _texts_and_labels(48)
    (record,) = make_variants(folder, ["bf16"], texts=texts, labels=labels, tolerance_points=100, repeats=1,
                              timing_texts=16, num_threads=1)
    assert record.passed_gate is True and record.path is None
    assert record.reason.startswith("slower than float32 on this machine")
    assert not (folder / "variants").exists()


def test_bad_requests_fail_before_any_work(squeezebert_folder, trained_teacher, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(squeezebert_folder, folder)
    before = sorted(os.listdir(folder))
    texts, labels = _texts_and_labels(8)
    with pytest.raises(ValueError, match="Unknown precision 'int4'"):
        make_variants(folder, "int4", texts=texts, labels=labels)
    with pytest.raises(ValueError, match="8 texts and 7 labels"):
        make_variants(folder, "bf16", texts=texts, labels=labels[:7])
    with pytest.raises(ValueError, match="Label id 3 is outside the model's 2 labels"):
        make_variants(folder, "bf16", texts=texts, labels=[3] * 8)
    with pytest.raises(ValueError, match="holds no config.json"):
        make_variants(tmp_path / "missing", "bf16", texts=texts, labels=labels)
    monkeypatch.setattr(precision.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime" else object())
    with pytest.raises(ValueError, match="No engine for int8 is installed: it needs onnx, onnxruntime, onnxscript"):
        make_variants(folder, "bf16,int8", texts=texts, labels=labels)
    monkeypatch.undo()
    masked_lm = tmp_path / "mlm"
    AutoModelForMaskedLM.from_pretrained(trained_teacher).save_pretrained(masked_lm)
    with pytest.raises(ValueError, match="need a sequence-classification model.*no text-classification pipeline"):
        make_variants(masked_lm, "bf16", texts=texts, labels=labels)
    assert sorted(os.listdir(folder)) == before
    assert sorted(os.listdir(masked_lm)) == ["config.json", "model.safetensors"]
