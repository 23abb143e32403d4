"""Fast text classification of real, ragged text: tokenize once, sort by length, pad each batch to its own longest.

`pipeline("text-classification")` runs one text at a time by default; with `batch_size=n` it pads every batch of `n`
texts, taken in input order, to the longest text of that batch. On short, ragged text (reviews, tweets, queries)
most of that padding is wasted work. Here texts are tokenized in one call, sorted by token length and cut into
batches of similar length, so a batch is padded by a token or two at most; the results come back in the input order,
with the pipeline's labels and scores.

- `classify(model, tokenizer, texts)` does this for any sequence-classification model;
- `LengthSortedTextClassificationPipeline` does it inside the pipeline API:
  `pipeline("text-classification", model=..., pipeline_class=LengthSortedTextClassificationPipeline)`;
- `enable_length_sorted_pipeline()` makes it the class that `pipeline("text-classification")` (and
  `"sentiment-analysis"`) builds for the compact model types, leaving every other model type on transformers' own
  `TextClassificationPipeline`.

The helpers `encode_texts`, `length_sorted_batches`, `pad_batch` and `format_scores` are shared with the ONNX Runtime
classifier in `hf_compact.onnx_export`.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.text_classification import ClassificationFunction, TextClassificationPipeline
from transformers.tokenization_utils_base import LARGE_INTEGER

from .kernels import optimized
from .model_types import COMPACT_MODEL_TYPES


DEFAULT_BATCH_SIZE = 32
FUNCTIONS_TO_APPLY = ("default", "softmax", "sigmoid", "none")
_TASK = "text-classification"


# --------------------------------------------------------------------------------------------------------------------
# Shared building blocks
# --------------------------------------------------------------------------------------------------------------------


def encode_texts(tokenizer, texts: Sequence[str], max_length: int | None = None, **tokenizer_kwargs) -> dict:
    """Tokenize all `texts` in one call, without padding; returns the tokenizer's lists (`input_ids`, ...).

    With `max_length=None` a text is cut to the tokenizer's `model_max_length` when the tokenizer has a real limit
    (a text the pipeline would reject as too long for the model is truncated instead), and kept whole otherwise.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string; wrap a single text in a list: [text].")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"texts[{position}] is a {type(text).__name__}, not a string; pass a list of strings (text pairs go "
                "through the pipeline as {'text': ..., 'text_pair': ...})."
            )
    if max_length is None:
        limit = getattr(tokenizer, "model_max_length", None)
        if limit is not None and limit < LARGE_INTEGER:
            max_length = int(limit)
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be a positive number of tokens, or None.")
        tokenizer_kwargs.setdefault("truncation", True)
        tokenizer_kwargs.setdefault("max_length", max_length)
    return dict(tokenizer(list(texts), padding=False, **tokenizer_kwargs))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices of the inputs, sorted by length (ties in input order) and cut into batches of at most `batch_size`.

    Consecutive inputs in length order differ by little, so each batch pads to nearly every member's own length.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(
    encodings: dict,
    indices: Sequence[int],
    *,
    pad_token_id: int = 0,
    padding_side: str = "right",
    keys: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Rows `indices` of unpadded `encodings`, padded to the batch's longest row, as int64 arrays.

    `input_ids` is padded with `pad_token_id`, every other field (attention mask, token types) with 0.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side={padding_side!r} is not supported; use 'right' or 'left'.")
    keys = [key for key in (keys or encodings) if key in encodings]
    rows = encodings["input_ids"]
    width = max(len(rows[i]) for i in indices)
    batch = {}
    for key in keys:
        fill = pad_token_id if key == "input_ids" else 0
        array = np.full((len(indices), width), fill, dtype=np.int64)
        for row, index in enumerate(indices):
            values = encodings[key][index]
            if padding_side == "right":
                array[row, : len(values)] = values
            else:
                array[row, width - len(values) :] = values
        batch[key] = array
    return batch


def resolve_function_to_apply(config, function_to_apply: str | ClassificationFunction | None = "default"):
    """The function the text-classification pipeline applies to this model's logits.

    `"default"` (or None) follows the pipeline: none for regression, sigmoid for multi-label or a single label,
    softmax for several labels.
    """
    if function_to_apply is None or function_to_apply == "default":
        if config.problem_type == "regression":
            return ClassificationFunction.NONE
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return ClassificationFunction.SIGMOID
        if config.problem_type == "single_label_classification" or config.num_labels > 1:
            return ClassificationFunction.SOFTMAX
        if getattr(config, "function_to_apply", None) is not None:
            return resolve_function_to_apply(config, config.function_to_apply)
        return ClassificationFunction.NONE
    if isinstance(function_to_apply, ClassificationFunction):
        return function_to_apply
    if isinstance(function_to_apply, str) and function_to_apply.lower() in FUNCTIONS_TO_APPLY:
        return ClassificationFunction[function_to_apply.upper()]
    raise ValueError(f"function_to_apply={function_to_apply!r} is not supported; use one of {FUNCTIONS_TO_APPLY}.")


def apply_function(logits: np.ndarray, function: ClassificationFunction) -> np.ndarray:
    """Softmax, sigmoid or identity over the last axis of float32 `logits`, computed as the pipeline computes it."""
    logits = np.asarray(logits, dtype=np.float32)
    if function == ClassificationFunction.SOFTMAX:
        shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if function == ClassificationFunction.SIGMOID:
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def check_top_k(top_k) -> None:
    """Raise a ValueError unless `top_k` is a positive integer or None."""
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer, or None for every label.")


def format_scores(scores: np.ndarray, id2label: dict, top_k: int | None = 1) -> list:
    """Pipeline-style results for a (texts, labels) score matrix.

    `top_k=1`: one `{"label", "score"}` per text (the best label). `top_k=k`: a list of the `k` best per text, best
    first. `top_k=None`: every label per text, best first.
    """
    check_top_k(top_k)
    results = []
    for row in scores:
        if top_k == 1:
            best = int(row.argmax())
            results.append({"label": id2label[best], "score": row[best].item()})
            continue
        ranked = [{"label": id2label[i], "score": score.item()} for i, score in enumerate(row)]
        ranked.sort(key=lambda item: item["score"], reverse=True)
        results.append(ranked if top_k is None else ranked[:top_k])
    return results


def sorted_logits(
    encodings: dict,
    forward: Callable[[dict[str, np.ndarray]], np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pad_token_id: int = 0,
    padding_side: str = "right",
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Run `forward` (padded numpy batch -> logits array) over length-sorted batches; logits in input order."""
    lengths = [len(ids) for ids in encodings["input_ids"]]
    logits = None
    for indices in length_sorted_batches(lengths, batch_size):
        batch = pad_batch(encodings, indices, pad_token_id=pad_token_id, padding_side=padding_side, keys=keys)
        output = np.asarray(forward(batch), dtype=np.float32)
        if logits is None:
            logits = np.empty((len(lengths), *output.shape[1:]), dtype=np.float32)
        logits[indices] = output
    return logits


def _model_input_keys(model: torch.nn.Module, encodings: dict) -> list[str]:
    """The tokenizer fields the model's forward names (input ids and attention mask also through **kwargs)."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return [key for key in encodings if key in parameters or (takes_any and key in ("attention_mask", "input_ids"))]


# --------------------------------------------------------------------------------------------------------------------
# classify
# --------------------------------------------------------------------------------------------------------------------


class BatchClassifier:
    """Base of the text classifiers that run length-sorted batches (`TorchClassifier` here, `OnnxClassifier` in
    `hf_compact.onnx_export`): a subclass sets `tokenizer`, `config` (with `id2label`, `num_labels`, `problem_type`)
    and `input_names`, and defines `forward` (one padded batch of int64 arrays -> float32 logits)."""

    tokenizer: Any
    config: Any
    input_names: list[str]

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The context a series of `forward` calls runs in (torch: inference mode, eval mode, CPU kernels)."""
        yield

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> dict:
        """`encode_texts` for this classifier's inputs (token types of zeros where the tokenizer gives none)."""
        encodings = encode_texts(self.tokenizer, texts, max_length)
        if "token_type_ids" in self.input_names and "token_type_ids" not in encodings:
            encodings["token_type_ids"] = [[0] * len(ids) for ids in encodings["input_ids"]]
        missing = [name for name in self.input_names if name not in encodings]
        if missing:
            raise ValueError(f"The tokenizer gives no {missing}, which {self!r} takes.")
        return encodings

    def logits(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None):
        """Raw logits, (len(texts), num_labels) float32, in input order."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            return np.zeros((0, self.config.num_labels), dtype=np.float32)
        encodings = self.encode(texts, max_length)
        with self.running():
            return sorted_logits(
                encodings,
                self.forward,
                batch_size=batch_size,
                pad_token_id=self.tokenizer.pad_token_id or 0,
                padding_side=getattr(self.tokenizer, "padding_side", "right"),
                keys=self.input_names,
            )

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        top_k: int | None = 1,
        function_to_apply: str = "default",
    ) -> list:
        """Pipeline-style results for `texts`, in input order (arguments as in `classify`)."""
        if isinstance(texts, str):
            texts = [texts]
        function = resolve_function_to_apply(self.config, function_to_apply)
        check_top_k(top_k)
        if len(texts) == 0:
            return []
        logits = self.logits(texts, batch_size=batch_size, max_length=max_length)
        return format_scores(apply_function(logits, function), self.config.id2label, top_k)


class TorchClassifier(BatchClassifier):
    """A torch sequence-classification model and its tokenizer, called as `classify` calls them."""

    def __init__(self, model: PreTrainedModel, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        probe = {"input_ids": None, "attention_mask": None, "token_type_ids": None}
        self.input_names = _model_input_keys(model, probe)
        if "token_type_ids" in self.input_names and not getattr(model.config, "type_vocab_size", None):
            self.input_names.remove("token_type_ids")

    def __repr__(self) -> str:
        return f"TorchClassifier({type(self.model).__name__}, dtype={self.model.dtype})"

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        device = self.model.device
        inputs = {key: torch.from_numpy(batch[key]).to(device) for key in self.input_names if key in batch}
        return self.model(**inputs).logits.float().cpu().numpy()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), optimized(self.model):
                yield
        finally:
            self.model.train(was_training)


def classify(
    model: PreTrainedModel,
    tokenizer,
    texts: str | Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    top_k: int | None = 1,
    function_to_apply: str = "default",
) -> list:
    """Classify `texts` with a sequence-classification model, fast, with the text-classification pipeline's results.

    The texts are tokenized in one call (no padding), sorted by token length and run in batches of `batch_size`
    that are each padded to their own longest text, under `torch.inference_mode` with the model in eval mode (its
    previous mode is restored afterwards) and the CPU kernels that win on this machine attached
    (`hf_compact.kernels.optimized`). Results come back in the order of `texts`.

    Args:
        model: any `*ForSequenceClassification` model (compact students, BERT, DistilBERT, ...).
        tokenizer: its tokenizer; a fast (Rust) tokenizer makes the single tokenization call cheap.
        texts: the texts (a single string is treated as a list of one).
        batch_size: texts per forward pass.
        max_length: cut texts to this many tokens; None cuts at the tokenizer's `model_max_length` if it has one.
        top_k: 1 for one `{"label", "score"}` per text; `k` for a list of the `k` best per text, best first; None
            for every label.
        function_to_apply: `"default"` (as the pipeline: softmax for single-label, sigmoid for multi-label or one
            label, none for regression), `"softmax"`, `"sigmoid"` or `"none"`.

    Returns:
        One result per text, in input order, as `pipeline("text-classification")` gives it: a dict for `top_k=1`
        (as the pipeline called without `top_k`), a list of dicts otherwise.

    Example:

    ```python
    >>> from hf_compact.inference import classify
    >>> classify(model, tokenizer, ["a gripping, funny film", "dull"])  # doctest: +SKIP
    [{'label': 'positive', 'score': 0.97}, {'label': 'negative', 'score': 0.91}]
    ```
    """
    return TorchClassifier(model, tokenizer)(
        texts, batch_size=batch_size, max_length=max_length, top_k=top_k, function_to_apply=function_to_apply
    )


# --------------------------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------------------------


class LengthSortedTextClassificationPipeline(TextClassificationPipeline):
    """`TextClassificationPipeline` that runs a list of texts in length-sorted batches.

    A list of strings is tokenized in one call, sorted by token length, run in batches of `batch_size` (32 unless
    given to the constructor or the call) each padded to its own longest text, and returned in input order with the
    pipeline's usual output format (`top_k`, `function_to_apply` and tokenizer arguments work as usual), with the CPU
    kernels that win on this machine attached (`hf_compact.kernels.optimized`). Any other input (one string, text
    pairs, datasets, generators) goes through the stock pipeline path. Works with any sequence-classification model.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> from hf_compact.inference import LengthSortedTextClassificationPipeline
    >>> classifier = pipeline("text-classification", model=folder,  # doctest: +SKIP
    ...                       pipeline_class=LengthSortedTextClassificationPipeline)
    >>> classifier(["a gripping, funny film", "dull"])  # doctest: +SKIP
    [{'label': 'positive', 'score': 0.97}, {'label': 'negative', 'score': 0.91}]
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._batch_size is None:
            self._batch_size = DEFAULT_BATCH_SIZE

    def get_inference_context(self):
        return torch.inference_mode

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        sortable = (
            isinstance(inputs, list)
            and len(inputs) > 0
            and all(isinstance(text, str) for text in inputs)
            and not {"padding", "return_tensors"} & set(preprocess_params)
        )
        if not sortable:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        return iter(self._run_sorted(inputs, batch_size, preprocess_params, forward_params, postprocess_params))

    def _run_sorted(self, texts, batch_size, preprocess_params, forward_params, postprocess_params) -> list:
        encodings = dict(self.tokenizer(texts, **preprocess_params))
        lengths = [len(ids) for ids in encodings["input_ids"]]
        results: list = [None] * len(texts)
        with optimized(self.model):
            for indices in length_sorted_batches(lengths, batch_size):
                batch = pad_batch(
                    encodings,
                    indices,
                    pad_token_id=self.tokenizer.pad_token_id or 0,
                    padding_side=self.tokenizer.padding_side,
                )
                model_inputs = {key: torch.from_numpy(value) for key, value in batch.items()}
                logits = self.forward(model_inputs, **forward_params)["logits"]
                for row, index in enumerate(indices):
                    results[index] = self.postprocess({"logits": logits[row : row + 1]}, **postprocess_params)
        return results


class _TextClassificationPipelineByModelType(TextClassificationPipeline):
    """Task-table entry for text classification: builds `LengthSortedTextClassificationPipeline` for the model types
    in `model_types` and transformers' own `TextClassificationPipeline` for every other model."""

    model_types: tuple[str, ...] = COMPACT_MODEL_TYPES
    original_impl: Any = None

    def __new__(cls, *args, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type in cls.model_types:
            return LengthSortedTextClassificationPipeline(*args, **kwargs)
        return _resolve_class(cls.original_impl or TextClassificationPipeline)(*args, **kwargs)


def _resolve_class(impl):
    """A task-table `impl`: a class, or the dotted path of one."""
    if isinstance(impl, str):
        module_path, name = impl.rsplit(".", 1)
        return getattr(importlib.import_module(module_path), name)
    return impl


def enable_length_sorted_pipeline(model_types: Sequence[str] = COMPACT_MODEL_TYPES) -> None:
    """Make `pipeline("text-classification")` / `pipeline("sentiment-analysis")` build a
    `LengthSortedTextClassificationPipeline` for `model_types` (the compact types by default).

    Models of any other type still get transformers' own `TextClassificationPipeline` instance, and an explicit
    `pipeline_class=` still wins. The change is to transformers' task table for this process; undo it with
    `disable_length_sorted_pipeline()`. Calling it again replaces the set of model types.
    """
    model_types = tuple(model_types)
    if not all(isinstance(name, str) for name in model_types):
        raise ValueError(f"model_types={model_types!r} must be model type names such as 'compact_distilbert'.")
    entry = PIPELINE_REGISTRY.supported_tasks[_TASK]
    if entry["impl"] is not _TextClassificationPipelineByModelType:
        _TextClassificationPipelineByModelType.original_impl = entry["impl"]
        entry["impl"] = _TextClassificationPipelineByModelType
    _TextClassificationPipelineByModelType.model_types = model_types


def disable_length_sorted_pipeline() -> None:
    """Restore transformers' own text-classification entry (undoes `enable_length_sorted_pipeline`)."""
    entry = PIPELINE_REGISTRY.supported_tasks[_TASK]
    if entry["impl"] is _TextClassificationPipelineByModelType:
        entry["impl"] = _TextClassificationPipelineByModelType.original_impl


__all__ = [
    "COMPACT_MODEL_TYPES",
    "DEFAULT_BATCH_SIZE",
    "LengthSortedTextClassificationPipeline",
    "apply_function",
    "check_top_k",
    "classify",
    "disable_length_sorted_pipeline",
    "enable_length_sorted_pipeline",
    "encode_texts",
    "format_scores",
    "length_sorted_batches",
    "pad_batch",
    "resolve_function_to_apply",
    "sorted_logits",
]
