"""Teacher logits computed once, stored on disk, reused while teacher and data are the same.

Logit-only distillation (soft targets, hard labels) needs the teacher's logits for each training example and
nothing else from it. `teacher_logits_column` runs the teacher once over a tokenised split, stores its logits (all
of them, or the top k per example) as an Arrow dataset under `cache_dir/<key>/`, and returns them as a column to
add to the split. The key hashes the teacher's weights and configuration, the exact token ids and the precision of
the forward pass, so a cache is reused across epochs and runs only when the teacher, the data, the tokenizer and the
precision are all unchanged. Training under mixed precision can take its soft targets from a forward pass in the
same precision (`autocast_dtype=torch.bfloat16`): what the teacher would give inside the training loop, faster to
compute where the hardware has native bf16.

```python
>>> column = teacher_logits_column(teacher, tokenized["train"], "outputs/cache", collator)  # doctest: +SKIP
>>> train = tokenized["train"].add_column("teacher_logits", column)  # doctest: +SKIP
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import datasets
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.utils import logging


logger = logging.get_logger(__name__)

MASKED_LOGIT = -1e4  # logit given to classes outside a stored top-k: softmax gives them no probability


def cache_key(
    teacher: torch.nn.Module,
    dataset: datasets.Dataset,
    top_k: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> str:
    """A hash of the teacher (weights and config), the token ids of every example, top_k and the autocast dtype."""
    digest = hashlib.sha256()
    config = getattr(teacher, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    update_with_weights(digest, teacher)
    for column in ("input_ids", "token_type_ids"):
        if column in dataset.column_names:
            for ids in dataset.with_format("numpy", columns=[column]).iter(batch_size=4096):
                for row in ids[column]:
                    digest.update(np.asarray(row, dtype=np.int64).tobytes())
                    digest.update(b"|")
    digest.update(f"top_k={top_k}".encode())
    if autocast_dtype is not None:  # float32 keys are those of earlier versions: their caches stay valid
        digest.update(f"autocast={autocast_dtype}".encode())
    return digest.hexdigest()[:24]


def update_with_weights(digest, module: torch.nn.Module) -> None:
    """Feed every tensor of `module`'s state dict, with its name, to a hashlib `digest`."""
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())


@torch.inference_mode()
def compute_teacher_logits(
    teacher: torch.nn.Module,
    dataset: datasets.Dataset,
    collator,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    show_progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> list[np.ndarray]:
    """The teacher's logits for every example, in dataset order (padding positions removed for token tasks), from a
    float32 forward pass, or one under autocast to `autocast_dtype`; returned as float32 either way."""
    device = torch.device(device or next(teacher.parameters()).device)
    teacher.eval()
    inputs = dataset.remove_columns([c for c in dataset.column_names if c in ("labels", "length", "teacher_logits")])
    # Batches of similar lengths waste little on padding; the logits go back to dataset order below.
    order = np.argsort([len(ids) for ids in inputs["input_ids"]], kind="stable")
    loader = DataLoader(inputs.select(order), batch_size=batch_size, shuffle=False, collate_fn=collator)
    logits: list[np.ndarray | None] = [None] * len(order)
    position = 0
    precision = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.inference_mode(), precision:
        for batch in tqdm(loader, desc="Teacher logits", disable=not show_progress):
            batch = {k: v.to(device) for k, v in batch.items()}
            output = teacher(**batch).logits.float().cpu()
            if output.dim() == 3:  # token-level: keep each example's real tokens only
                lengths = batch["attention_mask"].sum(-1).tolist()
                rows = [row[:n].numpy() for row, n in zip(output, lengths)]
            else:
                rows = [row.numpy() for row in output]
            for row in rows:
                logits[order[position]] = row
                position += 1
    return logits


def teacher_logits_column(
    teacher: torch.nn.Module,
    dataset: datasets.Dataset,
    cache_dir: str | os.PathLike,
    collator,
    *,
    top_k: int | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> list:
    """Teacher logits for `dataset` (one entry per example), from `cache_dir` when a matching cache exists; computed in
    float32, or under autocast to `autocast_dtype` (a separate cache entry)."""
    if len(dataset) == 0:
        raise ValueError("Cannot compute teacher logits for an empty dataset.")
    key = cache_key(teacher, dataset, top_k, autocast_dtype)
    path = os.path.join(cache_dir, key)
    os.makedirs(os.path.join(cache_dir, ".locks"), exist_ok=True)
    # Independent runs sharing a cache (seeds trained side by side) compute each entry once: the first one to take
    # the lock computes and writes it, the others wait and read it.
    with FileLock(os.path.join(cache_dir, ".locks", key + ".lock")):
        if os.path.isdir(path):
            try:
                rows = _read_entry(path, top_k, len(dataset))
                logger.info("Teacher logits found in %s", path)
                return rows
            except DamagedEntry as error:
                logger.warning("Teacher cache entry %s is damaged (%s); computing it again.", path, error)
        logits = compute_teacher_logits(
            teacher, dataset, collator, batch_size, show_progress=show_progress, autocast_dtype=autocast_dtype
        )
        bad = sum(not np.isfinite(row).all() for row in logits)
        if bad:
            raise ValueError(
                f"The teacher gives non-finite logits (NaN or inf) for {bad} of {len(logits)} examples: its weights "
                "are damaged or it overflows in this precision (try it in float32). Nothing was cached."
            )
        if top_k is not None:
            order = [np.argsort(-row, axis=-1)[..., :top_k] for row in logits]
            table = {
                "topk_indices": [o.astype(np.int32) for o in order],
                "topk_values": [np.take_along_axis(row, o, axis=-1) for row, o in zip(logits, order)],
                "num_classes": [row.shape[-1] for row in logits],
            }
        else:
            table = {"logits": logits}
        staging = tempfile.mkdtemp(prefix=".teacher-cache-", dir=cache_dir)
        try:
            datasets.Dataset.from_dict(table).save_to_disk(staging)
            if os.path.isdir(path):
                shutil.rmtree(path)
            os.replace(staging, path)  # readers see a complete cache or none
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return _read_entry(path, top_k, len(dataset))


def add_teacher_logits(
    teacher: torch.nn.Module, dataset: datasets.Dataset, cache_dir: str | os.PathLike, collator, **kwargs
) -> datasets.Dataset:
    """`dataset` with a `teacher_logits` column from `teacher_logits_column` (same keywords)."""
    column = teacher_logits_column(teacher, dataset, cache_dir, collator, **kwargs)
    return dataset.add_column("teacher_logits", [row.tolist() for row in column])


class DamagedEntry(Exception):
    """A cache entry that cannot be read whole, has the wrong number of rows, or holds non-finite logits."""


def _read_entry(path: str, top_k: int | None, num_examples: int) -> list:
    try:
        cached = datasets.load_from_disk(path)
        rows = _expand(cached, top_k)  # reads every row: a truncated file fails here, not in the training loop
    except Exception as error:
        raise DamagedEntry(f"{type(error).__name__}: {error}") from error
    if len(rows) != num_examples:
        raise DamagedEntry(f"{len(rows)} rows for {num_examples} examples")
    bad = sum(not np.isfinite(row).all() for row in rows)
    if bad:
        raise DamagedEntry(f"non-finite logits in {bad} rows")
    return rows


def _expand(cached: datasets.Dataset, top_k: int | None) -> list:
    if top_k is None:
        return [np.asarray(row, dtype=np.float32) for row in cached.with_format("numpy")["logits"]]
    rows = []
    for indices, values, num_classes in zip(cached["topk_indices"], cached["topk_values"], cached["num_classes"]):
        indices, values = np.asarray(indices), np.asarray(values, dtype=np.float32)
        full = np.full((*indices.shape[:-1], num_classes), MASKED_LOGIT, dtype=np.float32)
        np.put_along_axis(full, indices, values, axis=-1)
        rows.append(full)
    return rows


__all__ = [
    "MASKED_LOGIT",
    "add_teacher_logits",
    "cache_key",
    "compute_teacher_logits",
    "teacher_logits_column",
    "update_with_weights",
]
