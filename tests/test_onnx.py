"""ONNX export of every compact head, checked against torch; int8 quantisation; the ONNX Runtime classifier; and a
smoke run of the inference benchmark."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizer

import hf_compact
from hf_compact import onnx_export
from hf_compact.inference import classify
from hf_compact.onnx_export import (
    OnnxClassifier,
    OnnxVerificationError,
    dummy_inputs,
    export_onnx,
    quantize_onnx_int8,
    verify_onnx,
)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADS = {
    "Model": ["last_hidden_state"],
    "ForSequenceClassification": ["logits"],
    "ForTokenClassification": ["logits"],
    "ForQuestionAnswering": ["start_logits", "end_logits"],
    "ForMaskedLM": ["logits"],
    "ForMultipleChoice": ["logits"],
}
CONFIGS = {
    "CompactDistilBert": lambda: hf_compact.CompactDistilBertConfig(
        vocab_size=55, dim=32, n_layers=1, n_heads=4, hidden_dim=37, max_position_embeddings=64
    ),
    "CompactSqueezeBert": lambda: hf_compact.CompactSqueezeBertConfig(
        vocab_size=55, hidden_size=32, embedding_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    ),
}


def ragged_texts(n=40, seed=0):
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(50)}" for _ in range(rng.randint(1, 20))) for _ in range(n)]


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("prefix", list(CONFIGS))
def test_every_head_exports_and_matches_torch_on_other_shapes(tmp_path, prefix, head):
    torch.manual_seed(0)
    model = getattr(hf_compact, prefix + head)(CONFIGS[prefix]())  # built in training mode
    path = export_onnx(model, tmp_path / "model.onnx", sequence_length=16)
    assert path == str(tmp_path / "model.onnx")

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_names = [node.name for node in session.get_inputs()]
    output_names = [node.name for node in session.get_outputs()]
    segments = ["token_type_ids"] if prefix == "CompactSqueezeBert" else []
    assert input_names == ["input_ids", "attention_mask", *segments]
    pooled = ["pooler_output"] if (prefix, head) == ("CompactSqueezeBert", "Model") else []
    assert output_names == HEADS[head] + pooled
    assert all(isinstance(dim, str) for node in session.get_inputs() for dim in node.shape)  # every axis dynamic

    # Batch, length (and number of choices) all differ from the 2 x 16 (x 2) example the exporter traced.
    for batch_size, length in [(3, 11), (1, 23)]:
        inputs = dummy_inputs(model, batch_size=batch_size, sequence_length=length, num_choices=3, seed=7)
        assert verify_onnx(model, path, inputs) <= 1e-4
    assert model.training  # export and verification evaluate in eval mode, then restore the mode


def test_export_keeps_training_mode_and_raises_on_mismatch(tmp_path, monkeypatch):
    model = hf_compact.CompactDistilBertForSequenceClassification(CONFIGS["CompactDistilBert"]())
    model.train()
    monkeypatch.setattr(onnx_export, "verify_onnx", lambda *args: 0.5)
    with pytest.raises(OnnxVerificationError, match=r"differs from the torch model by 0.5 .*tolerance 0.0001"):
        export_onnx(model, tmp_path / "model.onnx")
    assert model.training
    with pytest.raises(ValueError, match="sequence_length=65 exceeds the model's max_position_embeddings=64"):
        export_onnx(model, tmp_path / "model.onnx", sequence_length=65)


def test_verify_onnx_names_missing_inputs(exported_student):
    student, fp32, _ = exported_student
    inputs = dummy_inputs(student)
    del inputs["token_type_ids"]
    with pytest.raises(ValueError, match=r"inputs lacks \['token_type_ids'\]"):
        verify_onnx(student, fp32, inputs)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return BertTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def exported_student(trained_teacher, tmp_path_factory):
    """A compact student converted from the trained tiny BERT, exported as fp32 and int8."""
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher).eval()
    student = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2)
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(student, folder / "student.onnx")
    int8 = quantize_onnx_int8(fp32, folder / "student-int8.onnx")
    return student, fp32, int8


def test_onnx_classifier_matches_classify(exported_student, tokenizer):
    student, fp32, _ = exported_student
    texts = ragged_texts()
    onnx_classifier = OnnxClassifier(fp32, tokenizer, num_threads=1)
    for batch_size in (1, 7):
        expected = classify(student, tokenizer, texts, batch_size=batch_size, top_k=None)
        actual = onnx_classifier(texts, batch_size=batch_size, top_k=None)
        for got, want in zip(actual, expected):
            assert [item["label"] for item in got] == [item["label"] for item in want]
            assert [item["score"] for item in got] == pytest.approx([item["score"] for item in want], abs=1e-5)
    assert onnx_classifier([]) == []
    assert {result["label"] for result in onnx_classifier(texts)} == {"negative", "positive"}


def test_int8_quantisation_keeps_predictions(exported_student, tokenizer):
    _, fp32, int8 = exported_student
    graph = onnx.load(int8)
    quantized_ops = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    assert any(node.op_type in quantized_ops for node in graph.graph.node)
    texts = ragged_texts(60, seed=1)
    fp32_logits = OnnxClassifier(fp32, tokenizer).logits(texts)
    int8_classifier = OnnxClassifier(int8, tokenizer)  # label metadata carried over
    int8_logits = int8_classifier.logits(texts)
    agreement = np.mean(fp32_logits.argmax(-1) == int8_logits.argmax(-1))
    assert agreement >= 0.9
    assert int8_classifier(texts[:1])[0]["label"] in ("negative", "positive")
    with pytest.raises(ValueError, match="must differ from the input path"):
        quantize_onnx_int8(fp32, fp32)


def test_onnx_classifier_needs_labels(exported_student, tmp_path, tokenizer):
    student, fp32, _ = exported_student
    path = str(tmp_path / "model.onnx")
    proto = onnx.load(fp32)
    del proto.metadata_props[:]
    onnx.save(proto, path)
    with pytest.raises(ValueError, match="carries no label metadata"):
        OnnxClassifier(path, tokenizer)
    result = OnnxClassifier(path, tokenizer, config=student.config)(["w1 w2"], top_k=None)
    assert sorted(item["label"] for item in result[0]) == ["negative", "positive"]


def test_onnx_runtime_threads_sleep_between_calls_unless_asked_to_spin(exported_student, tokenizer):
    _, fp32, _ = exported_student
    entry = "session.intra_op.allow_spinning"
    sleeping = OnnxClassifier(fp32, tokenizer, num_threads=2)
    spinning = OnnxClassifier(fp32, tokenizer, num_threads=2, spin_wait=True)
    assert sleeping.session.get_session_options().get_session_config_entry(entry) == "0"
    assert spinning.session.get_session_options().get_session_config_entry(entry) == "1"
    texts = ["a short text", "a somewhat longer text than the first one"]
    np.testing.assert_allclose(sleeping.logits(texts), spinning.logits(texts), atol=1e-6)


@pytest.mark.slow
def test_inference_benchmark_quick_run_writes_json(tmp_path):
    output = tmp_path / "inference.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [
            sys.executable, os.path.join(REPO, "benchmarks", "inference.py"),
            "--quick", "--threads", "1", "--texts", "16", "--output", str(output),
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["settings"]["quick"] is True
    assert set(report["models"]) == {"teacher", "compact_distilbert", "compact_squeezebert"}
    for entry in report["models"].values():
        assert entry["pipeline_class"] == "TextClassificationPipeline"  # the baseline is transformers' own pipeline
        methods = entry["methods"]
        assert set(methods) == {
            "pipeline", "pipeline_batch32", "classify", "length_sorted_pipeline", "onnx_fp32", "onnx_int8"
        }
        assert all(method["texts_per_s"] > 0 for method in methods.values())
        for name in ("pipeline_batch32", "classify", "length_sorted_pipeline", "onnx_fp32"):
            assert methods[name]["agreement_with_pipeline"] == 1.0
        assert 0.0 <= entry["int8_vs_fp32_agreement"] <= 1.0


def test_an_optimized_model_exports_its_reference_computation(tmp_path, monkeypatch):
    from hf_compact import kernels

    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "kernels.json"))
    torch.manual_seed(0)
    model = hf_compact.CompactSqueezeBertForSequenceClassification(CONFIGS["CompactSqueezeBert"]()).eval()
    kernels.optimize(model, kernels.KernelSelector(cache_path=None, repeats=1))
    path = export_onnx(model, tmp_path / "model.onnx")
    assert kernels.is_optimized(model)  # set aside for the export only
    graph_ops = {node.op_type for node in onnx.load(path).graph.node}
    assert "MatMul" in graph_ops or "Gemm" in graph_ops
