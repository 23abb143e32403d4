"""ONNX export of the compact models, a torch-vs-ONNX Runtime check, int8 dynamic quantisation, and a text classifier
that runs an exported model through ONNX Runtime.

```python
>>> from hf_compact.onnx_export import OnnxClassifier, export_onnx, quantize_onnx_int8
>>> export_onnx(student, "student.onnx")  # doctest: +SKIP
'student.onnx'
>>> quantize_onnx_int8("student.onnx", "student-int8.onnx")  # doctest: +SKIP
'student-int8.onnx'
>>> OnnxClassifier("student-int8.onnx", tokenizer)(["a gripping, funny film"])  # doctest: +SKIP
[{'label': 'positive', 'score': 0.97}]
```

The graph is the models' reference computation: CPU kernels attached by `hf_compact.kernels.optimize` are set aside
while exporting. Export uses torch's default exporter (`torch.onnx.export(..., dynamo=True)`, built on
`torch.export`; it needs the `onnxscript` package). Every head of both compact types exports, and BERT-family models
with the same inputs do too:

- inputs `input_ids` and `attention_mask`, plus `token_type_ids` for models with segment embeddings (SqueezeBERT-style,
  BERT), all int64 of shape (batch, sequence), or (batch, choices, sequence) for multiple choice, every axis dynamic;
- outputs named after the model's output fields: `logits`; `start_logits` and `end_logits` for question answering;
  `last_hidden_state` (and `pooler_output` where the model has a pooler) for the bare encoder.

The label names and problem type are stored in the ONNX file's metadata, so `OnnxClassifier` gives the same labels and
scores as `hf_compact.inference.classify` on the torch model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
from transformers import PreTrainedModel

from .kernels import reference_only
from .inference import DEFAULT_BATCH_SIZE, BatchClassifier, encode_texts, length_sorted_batches, pad_batch


DEFAULT_TOLERANCE = 1e-4
METADATA_KEY = "hf_compact.classification"
# Fields of a model output that describe internals rather than results; never exported.
_SKIPPED_OUTPUTS = ("loss", "hidden_states", "attentions")


class OnnxVerificationError(RuntimeError):
    """The exported ONNX model disagrees with the torch model by more than the tolerance."""


def onnx_input_names(model: PreTrainedModel) -> list[str]:
    """The graph inputs `export_onnx` gives `model`: input_ids, attention_mask (+ token_type_ids with segment
    embeddings)."""
    names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", None):
        names.append("token_type_ids")
    return names


def _is_multiple_choice(model: PreTrainedModel) -> bool:
    return type(model).__name__.endswith("ForMultipleChoice")


def dummy_inputs(
    model: PreTrainedModel, batch_size: int = 2, sequence_length: int = 16, num_choices: int = 2, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random int64 inputs for `model` with the last row padded by a few tokens (so the attention mask matters)."""
    if sequence_length < 2:
        raise ValueError(f"sequence_length={sequence_length} is too short; use at least 2 tokens.")
    limit = model.config.max_position_embeddings
    if sequence_length > limit:
        raise ValueError(
            f"sequence_length={sequence_length} exceeds the model's max_position_embeddings={limit}; "
            f"use at most {limit}."
        )
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, num_choices, sequence_length) if _is_multiple_choice(model) else (batch_size, sequence_length)
    low = min(5, model.config.vocab_size - 1)  # above the special tokens when the vocabulary allows
    input_ids = torch.randint(low, model.config.vocab_size, shape, generator=generator)
    attention_mask = torch.ones(shape, dtype=torch.long)
    attention_mask[-1, ..., max(1, sequence_length - 3) :] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, model.config.pad_token_id or 0)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in onnx_input_names(model):
        token_type_ids = torch.zeros(shape, dtype=torch.long)
        token_type_ids[..., sequence_length // 2 :] = 1
        inputs["token_type_ids"] = token_type_ids * attention_mask
    return inputs


def _output_names(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> list[str]:
    with torch.inference_mode():
        outputs = model(**inputs, return_dict=True)
    return [name for name, value in outputs.items() if name not in _SKIPPED_OUTPUTS and torch.is_tensor(value)]


class _OnnxExportWrapper(torch.nn.Module):
    """Input tensors in, a tuple of the named output fields out: the form the exporter traces."""

    def __init__(self, model: PreTrainedModel, output_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.output_names = list(output_names)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        outputs = self.model(**inputs, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's deprecation notes and its log lines about optional operator libraries."""
    registration_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_logger.level
    registration_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        registration_logger.setLevel(level)


def _classification_metadata(model: PreTrainedModel) -> dict[str, str]:
    config = model.config
    info = {
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "num_labels": config.num_labels,
        "problem_type": config.problem_type,
        "id2label": {str(i): label for i, label in config.id2label.items()},
        "function_to_apply": getattr(config, "function_to_apply", None),
    }
    return {METADATA_KEY: json.dumps(info)}


def _write_metadata(path: str, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(path)
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def _read_metadata(path: str) -> dict:
    import onnx

    proto = onnx.load(path, load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def export_onnx(
    model: PreTrainedModel,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    sequence_length: int = 16,
    tolerance: float = DEFAULT_TOLERANCE,
) -> str:
    """Export `model` (any compact head, or a BERT-family model with the same inputs) to an ONNX file.

    The exporter traces the model (in eval mode) on random inputs of batch 2 and `sequence_length` tokens with
    batch, sequence (and choices) axes dynamic, then checks the file with ONNX Runtime on inputs of another batch
    size and length.

    Args:
        model: the model to export; its training mode is restored afterwards.
        path: where to write the `.onnx` file, weights included (so models up to protobuf's 2 GB; parent folders
            are created).
        opset: ONNX opset version; None takes the exporter's recommended one.
        sequence_length: length of the example inputs used for tracing (at most `max_position_embeddings`).
        tolerance: largest absolute difference allowed between torch and ONNX Runtime outputs.

    Returns:
        `path`, as a string.

    Raises:
        OnnxVerificationError: the exported model's outputs differ from torch's by more than `tolerance`.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        inputs = dummy_inputs(model, batch_size=2, sequence_length=sequence_length)
        input_names = list(inputs)
        output_names = _output_names(model, inputs)
        batch = torch.export.Dim("batch")
        sequence = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
        if _is_multiple_choice(model):
            axes = {0: batch, 1: torch.export.Dim("choices"), 2: sequence}
        else:
            axes = {0: batch, 1: sequence}
        wrapper = _OnnxExportWrapper(model, output_names)
        with _quiet_exporter(), reference_only(model):
            torch.onnx.export(
                wrapper,
                tuple(inputs.values()),
                path,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamic_shapes={name: dict(axes) for name in input_names},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        _write_metadata(path, _classification_metadata(model))
        check = dummy_inputs(model, batch_size=3, sequence_length=max(2, sequence_length - 5), seed=1)
        difference = verify_onnx(model, path, check)
    finally:
        model.train(was_training)
    if not difference <= tolerance:
        raise OnnxVerificationError(
            f"The ONNX model at {path} differs from the torch model by {difference:.3g} (max abs), more than the "
            f"tolerance {tolerance:g}. Export in float32 with the model in eval mode, or pass a larger tolerance."
        )
    return path


def _session(path: str, num_threads: int | None = None, spin_wait: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def verify_onnx(model: PreTrainedModel, path: str | os.PathLike, inputs: dict) -> float:
    """Largest absolute difference between the torch model's outputs and the ONNX model's on `inputs`.

    `inputs` maps input names to int tensors or arrays; the ones the ONNX graph takes are used for both models.
    Every ONNX output is compared with the torch output field of the same name.
    """
    session = _session(os.fspath(path))
    names = [node.name for node in session.get_inputs()]
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"inputs lacks {missing}; the ONNX model at {path} takes {names}.")
    arrays = {name: np.asarray(inputs[name], dtype=np.int64) for name in names}
    onnx_outputs = session.run(None, arrays)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
            torch_outputs = model(**tensors, return_dict=True)
    finally:
        model.train(was_training)
    difference = 0.0
    for node, value in zip(session.get_outputs(), onnx_outputs):
        if node.name not in torch_outputs:
            raise ValueError(f"The ONNX output {node.name!r} has no counterpart among the model's outputs.")
        expected = torch_outputs[node.name].float().numpy()
        if expected.shape != value.shape:
            raise OnnxVerificationError(
                f"ONNX output {node.name!r} has shape {value.shape}, the torch model gives {expected.shape}."
            )
        difference = max(difference, float(np.abs(expected - value).max(initial=0.0)))
    return difference


def quantize_onnx_int8(path: str | os.PathLike, output_path: str | os.PathLike) -> str:
    """Dynamic int8 quantisation (`onnxruntime.quantization.quantize_dynamic`, int8 weights, activations quantised
    per batch at run time) of the ONNX model at `path`, written to `output_path`, metadata kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path, output_path = os.fspath(path), os.fspath(output_path)
    if os.path.abspath(path) == os.path.abspath(output_path):
        raise ValueError(f"output_path={output_path!r} must differ from the input path; the input is read as written.")
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with _quiet_quantiser():
        quantize_dynamic(path, output_path, weight_type=QuantType.QInt8)
    return _copy_metadata(path, output_path)


@contextlib.contextmanager
def _quiet_quantiser():
    """Silence the quantiser's advice to run its shape pre-processing first (no speed-up for these graphs)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _copy_metadata(path: str, output_path: str) -> str:
    metadata = _read_metadata(path)
    if metadata:
        _write_metadata(output_path, {METADATA_KEY: json.dumps(metadata)})
    return output_path


def quantize_onnx_int8_static(
    path: str | os.PathLike,
    output_path: str | os.PathLike,
    tokenizer,
    calibration_texts: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> str:
    """Static int8 quantisation (`onnxruntime.quantization.quantize_static`) of the matrix multiplies of the ONNX
    model at `path`: int8 weights, and activation ranges calibrated once on `calibration_texts` (run in
    length-sorted batches of `batch_size`), written to `output_path`, metadata kept."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path, output_path = os.fspath(path), os.fspath(output_path)
    if not calibration_texts:
        raise ValueError("Static int8 quantisation needs calibration texts (a few hundred training texts).")
    input_names = [node.name for node in _session(path).get_inputs()]
    encodings = encode_texts(tokenizer, calibration_texts)
    if "token_type_ids" in input_names and "token_type_ids" not in encodings:
        encodings["token_type_ids"] = [[0] * len(ids) for ids in encodings["input_ids"]]
    lengths = [len(ids) for ids in encodings["input_ids"]]
    batches = [
        pad_batch(encodings, indices, pad_token_id=tokenizer.pad_token_id or 0, keys=input_names)
        for indices in length_sorted_batches(lengths, batch_size)
    ]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    with _quiet_quantiser():
        quantize_static(path, output_path, Reader(), quant_format=QuantFormat.QOperator,
                        op_types_to_quantize=["MatMul"], activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return _copy_metadata(path, output_path)


class OnnxClassifier(BatchClassifier):
    """Classify texts with an exported sequence-classification model through ONNX Runtime.

    Texts are batched as in `hf_compact.inference.classify` (one tokenization call, length-sorted batches, each
    padded to its own longest text) and results come back in input order, in the text-classification pipeline's
    format: `classifier(texts)`, `classifier.logits(texts)`. Labels and the problem type come from the metadata
    `export_onnx` writes; pass `config` (the model's config) to override them.

    Args:
        path: the `.onnx` file (float32 or int8).
        tokenizer: the model's tokenizer.
        config: optional config with `id2label`, `num_labels` and `problem_type`.
        num_threads: ONNX Runtime intra-op threads; None lets ONNX Runtime choose.
        spin_wait: let ONNX Runtime's threads spin-wait for the next call after each one (its own default) instead
            of sleeping. Off here: spinning threads take the cores from whatever else runs in the process
            (tokenization, another model) and gain little when the process does nothing else.
    """

    def __init__(self, path: str | os.PathLike, tokenizer, *, config=None, num_threads: int | None = None,
                 spin_wait: bool = False):
        self.path = os.fspath(path)
        self.tokenizer = tokenizer
        self.session = _session(self.path, num_threads, spin_wait)
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        if config is None:
            info = _read_metadata(self.path)
            if not info:
                raise ValueError(
                    f"{self.path} carries no label metadata (it was not written by export_onnx); "
                    "pass config=model.config."
                )
            config = SimpleNamespace(
                num_labels=info["num_labels"],
                problem_type=info["problem_type"],
                id2label={int(i): label for i, label in info["id2label"].items()},
                function_to_apply=info.get("function_to_apply"),
            )
        self.config = config

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.path!r})"

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output_name], {name: batch[name] for name in self.input_names})[0]


__all__ = [
    "DEFAULT_TOLERANCE",
    "OnnxClassifier",
    "OnnxVerificationError",
    "dummy_inputs",
    "export_onnx",
    "onnx_input_names",
    "quantize_onnx_int8",
    "quantize_onnx_int8_static",
    "verify_onnx",
]
