"""Side-by-side speed of several models on the same real texts, in one process, and the machine it ran on.

Timings are only comparable when taken together: `compare_speed` runs every model on the same length-sorted
batches, a whole pass per model at a time in an order that rotates from one pass to the next (so a slow spell of
the machine hits them all alike, and no engine's idle threads slow the next model down), and reports medians over
repeated passes.

```python
>>> from hf_compact.benchmarking import compare_speed
>>> speed = compare_speed({"teacher": teacher, "student": student}, tokenizer, texts, batch_size=32)  # doctest: +SKIP
>>> speed["models"]["student"]["texts_per_s"] / speed["models"]["teacher"]["texts_per_s"]  # doctest: +SKIP
```
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .inference import encode_texts, length_sorted_batches, pad_batch


if TYPE_CHECKING:
    from .inference import BatchClassifier


def hardware_name() -> str:
    """The GPU's name where one is used, else the CPU model."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_name()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or the platform's processor name."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix extensions that decide how fast float32, bf16 and int8 kernels run."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


# Environment variables that cap the instruction sets torch's libraries use (oneDNN, MKL, ATen's own kernels): with
# them a CPU runs as one without its newer extensions, so its timings are not its own.
INSTRUCTION_SET_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def instruction_set_limits() -> dict[str, str]:
    """The instruction-set caps set in the environment (see `INSTRUCTION_SET_LIMITS`), name -> value."""
    return {name: os.environ[name] for name in INSTRUCTION_SET_LIMITS if os.environ.get(name)}


def environment_info() -> dict:
    """What a timing depends on: hardware, threads and library versions."""
    import transformers

    return {
        "hardware": hardware_name(),
        "cpu_flags": cpu_flags(),
        "instruction_set_limits": instruction_set_limits(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _timed(forward: Callable, batch) -> float:
    start = time.perf_counter()
    forward(batch)
    return time.perf_counter() - start


@contextlib.contextmanager
def serving(models: Mapping[str, torch.nn.Module], warmup_batches: Sequence[Mapping] = ()) -> Iterator[None]:
    """Run the block as `classify` runs a model: in eval mode under `torch.inference_mode`, with the CPU kernels
    that win on this machine attached (`hf_compact.kernels.optimized`; nothing changes for other models). Every
    model first runs `warmup_batches` untimed, so kernel choices and first-call allocations happen outside the
    timings."""
    from .kernels import optimized

    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(optimized(model.eval()))
        stack.enter_context(torch.inference_mode())
        for batch in warmup_batches:
            for model in models.values():
                model(**batch)
        yield


def median_batch_ms(models: Mapping[str, torch.nn.Module], batches: Sequence[Mapping]) -> dict[str, float]:
    """Median forward time (ms) of each model over the same `batches`, the models taking turns batch by batch after
    an untimed pass over them all (see `serving`)."""
    if not batches:
        raise ValueError("median_batch_ms needs at least one batch.")
    times = {name: [] for name in models}
    with serving(models, warmup_batches=batches):
        for batch in batches:
            for name, model in models.items():
                times[name].append(1000 * _timed(lambda inputs: model(**inputs), batch))
    return {name: statistics.median(values) for name, values in times.items()}


def _batch_forward(model) -> Callable[[Mapping[str, np.ndarray]], object]:
    """One padded numpy batch -> the model's output, for a torch model or a `BatchClassifier` (ONNX Runtime, ...)."""
    from .inference import BatchClassifier, TorchClassifier

    if isinstance(model, BatchClassifier):
        return model.forward
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids")
            if key in TorchClassifier(model, None).input_names]

    def forward(batch):
        return model(**{key: torch.from_numpy(batch[key]) for key in keys if key in batch})

    return forward


def compare_speed(
    models: Mapping[str, torch.nn.Module | BatchClassifier],
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    repeats: int = 3,
    max_length: int = 128,
    single_text_samples: int = 64,
) -> dict:
    """Throughput (texts/s over all `texts` in length-sorted batches) and single-text latency of each model.

    A model is a torch model or a `hf_compact.inference.BatchClassifier` (`TorchClassifier`, the ONNX Runtime
    `OnnxClassifier`, a variant from `hf_compact.precision.load_variant`), so float32, bf16 and int8 engines compare
    in one run. Torch models run as `classify` runs them (see `serving`: compact models with the CPU kernels that win
    here). Every model sees the same batches and runs a whole pass over them at a time, the order of the models
    rotating from one pass to the next: an engine whose threads keep spinning after a call (ONNX Runtime's do by
    default) would take the cores from a model run between its batches. The figures are medians over `repeats`
    passes (after an untimed pass over every batch); single-text latency is the median over the first
    `single_text_samples` texts, one at a time.
    """
    from .inference import BatchClassifier, TorchClassifier

    if not texts:
        raise ValueError("compare_speed needs at least one text.")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1.")
    encodings = encode_texts(tokenizer, texts, max_length=max_length)
    if "token_type_ids" not in encodings:
        encodings["token_type_ids"] = [[0] * len(ids) for ids in encodings["input_ids"]]
    lengths = [len(ids) for ids in encodings["input_ids"]]
    pad_id = tokenizer.pad_token_id or 0
    batches = [pad_batch(encodings, indices, pad_token_id=pad_id) for indices in length_sorted_batches(lengths, batch_size)]
    singles = [pad_batch(encodings, [i], pad_token_id=pad_id) for i in range(min(single_text_samples, len(texts)))]
    forwards = {name: _batch_forward(model) for name, model in models.items()}
    torch_models = {
        name: model.model if isinstance(model, TorchClassifier) else model
        for name, model in models.items()
        if isinstance(model, (torch.nn.Module, TorchClassifier))
    }
    names = list(models)
    passes = {name: [] for name in names}
    with serving(torch_models):
        for name in names:
            for batch in batches + singles:
                forwards[name](batch)
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                passes[name].append(sum(_timed(forwards[name], batch) for batch in batches))
        single = {name: [_timed(forwards[name], batch) for batch in singles] for name in names}

    results = {}
    for name in models:
        seconds = statistics.median(passes[name])
        results[name] = {
            "seconds_per_pass": seconds,
            "texts_per_s": len(texts) / seconds,
            "ms_per_batch": 1000 * seconds / len(batches),
            "single_text_ms": 1000 * statistics.median(single[name]),
        }
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "batches": len(batches),
        "mean_tokens": sum(lengths) / len(lengths),
        "repeats": repeats,
        **environment_info(),
        "models": results,
    }


__all__ = [
    "compare_speed", "cpu_name", "environment_info", "hardware_name", "instruction_set_limits", "median_batch_ms",
    "serving",
]
