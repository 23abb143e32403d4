"""Checks that a masked-LM teacher's head is trained before its soft targets are distilled.

A BERT checkpoint saved without its masked-LM head (a sentence encoder such as all-MiniLM-L6-v2, or a fine-tuned
classifier) still loads as `AutoModelForMaskedLM`: transformers starts the head from random weights, and its
predictions are noise. Two checks catch that:

- `require_mlm_head`: the checkpoint holds every weight of the head (read from its safetensors files).
- `seeded_perplexity` / `check_mlm_teacher`: on a few batches of the run's own texts, masked with a fixed seed, the
  head's perplexity is far below the vocabulary size (a head that guesses uniformly scores about the vocabulary
  size).

Only the masked-LM soft-target loss needs the head. The hidden-state and attention-relation losses read the
teacher's encoder alone, so a teacher without a head is fine for general distillation with `kd_weight=0`; such a
run neither measures nor records the teacher's perplexity (`unused_mlm_head` says why).

```python
>>> from transformers import AutoModelForMaskedLM, AutoTokenizer
>>> from hf_compact.mlm_checks import check_mlm_teacher
>>> teacher = AutoModelForMaskedLM.from_pretrained("bert-folder")  # doctest: +SKIP
>>> tokenizer = AutoTokenizer.from_pretrained("bert-folder")  # doctest: +SKIP
>>> check_mlm_teacher(teacher, tokenizer, ["a few lines of the training text", "..."]).perplexity  # doctest: +SKIP
4.1
```
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch
from safetensors import safe_open
from torch.nn import functional as F
from transformers.utils import logging


logger = logging.get_logger(__name__)
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# A trained head's perplexity is far below the vocabulary size; one that guesses uniformly scores about the size.
MAX_PERPLEXITY_SHARE = 0.1
GENERAL_DISTILLATION_REMEDY = (
    "Distil with --kd_weight 0 and the hidden-state and attention-relation losses (--cos_weight / --mse_weight, "
    "--attention_relation_weight), which use only the teacher's encoder and need no masked-LM head; or give a "
    "teacher saved with its trained masked-LM head."
)


def is_masked_lm(model) -> bool:
    """Whether `model` is a masked-LM model (its logits are over the vocabulary at every token)."""
    return type(model).__name__.endswith("ForMaskedLM")


def _weights_file(name_or_path: str, filename: str) -> str | None:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)


def checkpoint_keys(name_or_path: str) -> set[str]:
    """The tensor names stored in a model's safetensors checkpoint (one file, or the shards of an index)."""
    index = _weights_file(name_or_path, WEIGHTS_INDEX_NAME)
    if index:
        with open(index) as handle:
            return set(json.load(handle)["weight_map"])
    weights = _weights_file(name_or_path, WEIGHTS_NAME)
    if not weights:
        raise SystemExit(f"{name_or_path} holds no {WEIGHTS_NAME} (hf_compact reads safetensors checkpoints only).")
    with safe_open(weights, framework="pt") as handle:
        return set(handle.keys())


def mlm_head_missing_keys(model, name_or_path: str | None = None) -> list[str]:
    """The weights of `model`'s masked-LM head that its checkpoint (`name_or_path`, default: the folder it was loaded
    from) does not hold, so that transformers initialised them. Weights tied to others (the decoder and the word
    embeddings) count as held when what they are tied to is, and a missing tensor is named once."""
    name_or_path = name_or_path or model.name_or_path
    stored = checkpoint_keys(name_or_path)
    prefix = model.base_model_prefix + "."
    stored |= {prefix + key for key in stored}  # an encoder saved on its own has no prefix
    names_by_storage: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names_by_storage.setdefault(tensor.data_ptr(), []).append(name)
    missing, named = [], set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(prefix) or tensor.data_ptr() in named:
            continue  # the encoder (the other checks' business), or a tensor already named under another name
        if not any(alias in stored for alias in names_by_storage[tensor.data_ptr()]):
            missing.append(name)
            named.add(tensor.data_ptr())
    return missing


def require_mlm_head(model, name_or_path: str | None = None) -> None:
    """Stop with a message naming the missing weights when `model`'s checkpoint has no (complete) masked-LM head. A
    model built in memory (no checkpoint to read) is let through with a warning: only the perplexity check applies."""
    if not (name_or_path or model.name_or_path):
        logger.warning("The masked-LM teacher was not loaded from a checkpoint: its head cannot be checked there.")
        return
    missing = mlm_head_missing_keys(model, name_or_path)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise SystemExit(
            f"The teacher {name_or_path or model.name_or_path} has no trained masked-LM head: its checkpoint lacks "
            f"{shown}, so transformers initialised them at random and its soft targets (--kd_weight) would be "
            f"noise. {GENERAL_DISTILLATION_REMEDY}"
        )


def unused_mlm_head(teacher, soft_target_weight: float | None = None) -> str | None:
    """Why a masked-LM teacher's head plays no part in a run, in words, or None when it does: the soft-target loss
    is off (`soft_target_weight` 0), or the checkpoint the teacher was loaded from lacks the head's weights
    (transformers initialised them at random). Its perplexity then says nothing about the teacher and is not
    measured. With `soft_target_weight` above 0, a head missing from the checkpoint stops the run instead
    (`require_mlm_head`); None (unknown) decides by the checkpoint alone."""
    reasons = []
    if soft_target_weight is not None and soft_target_weight <= 0:
        reasons.append("the soft-target loss is off (--kd_weight 0)")
    missing = mlm_head_missing_keys(teacher) if teacher.name_or_path else []
    if missing:
        reasons.append(f"its checkpoint holds no masked-LM head ({len(missing)} of the head's weights missing, "
                       "initialised at random)")
    return " and ".join(reasons) or None


def untrained_mlm_head(objective, teacher, from_scratch: bool = False) -> str | None:
    """Why a masked-LM student's head is random weights at the end of a run, in words, or None when it is not:
    neither the teacher's soft targets (`objective.kd_weight`) nor the masked tokens' labels (`objective.ce_weight`)
    train it, as in general distillation on hidden states and attention relations alone, and it started at random
    (`from_scratch`, or copied from a teacher whose checkpoint holds no masked-LM head). Its perplexity would then
    say nothing about the student, so it is not measured. A head copied from a trained teacher head is measured: it
    reads the student's hidden states as the teacher's head reads the teacher's."""
    if objective.kd_weight > 0 or objective.ce_weight > 0:
        return None
    if from_scratch:
        start = "it starts at random (--init scratch)"
    elif teacher.name_or_path and mlm_head_missing_keys(teacher):
        start = "it starts from the teacher's, which the teacher's checkpoint does not hold (initialised at random)"
    else:
        return None
    return (f"{start}, and neither the soft-target loss (--kd_weight 0) nor the masked-token loss (--ce_weight 0) "
            "trains it")


def seeded_masks(
    tokenizer, texts: list[str], num_batches: int = 4, batch_size: int = 16, max_length: int = 128,
    mask_probability: float = 0.15, seed: int = 0,
):
    """Batches of `texts` (drawn with `seed`) with about `mask_probability` of each text's tokens replaced by the
    mask token (at least one per text), and the labels of the masked positions (-100 elsewhere). The same seed gives
    the same batches and masks, whatever the global random state."""
    if tokenizer.mask_token_id is None:
        raise ValueError(f"The tokenizer {tokenizer.name_or_path} has no mask token: it cannot score a masked LM.")
    texts = [text for text in texts if isinstance(text, str) and text.strip()]
    if not texts:
        raise ValueError("No non-empty texts to mask.")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(texts), generator=generator)[: num_batches * batch_size].tolist()
    for start in range(0, len(chosen), batch_size):
        encoded = tokenizer([texts[i] for i in chosen[start:start + batch_size]], padding=True, truncation=True,
                            max_length=max_length, return_special_tokens_mask=True, return_tensors="pt")
        maskable = ~encoded.pop("special_tokens_mask").bool() & encoded["attention_mask"].bool()
        draws = torch.rand(maskable.shape, generator=generator).masked_fill(~maskable, 2.0)
        masked = draws < mask_probability
        masked[torch.arange(len(draws)), draws.argmin(-1)] |= maskable.any(-1)  # at least one token per text
        encoded["labels"] = encoded["input_ids"].masked_fill(~masked, -100)
        encoded["input_ids"] = encoded["input_ids"].masked_fill(masked, tokenizer.mask_token_id)
        yield encoded


@dataclass
class MaskedPerplexity:
    """A masked LM's perplexity on seeded masks: the value, how many masked tokens it was measured on, from how many
    texts, and the model's vocabulary size."""

    perplexity: float
    masked_tokens: int
    texts: int
    vocab_size: int


@torch.no_grad()
def seeded_perplexity(model, tokenizer, texts: list[str], num_batches: int = 4, batch_size: int = 16,
                      max_length: int = 128, seed: int = 0) -> MaskedPerplexity:
    """exp of the mean cross-entropy of `model` on the masked tokens of `seeded_masks(...)`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, num_texts = 0.0, 0, 0
    try:
        for batch in seeded_masks(tokenizer, texts, num_batches, batch_size, max_length, seed=seed):
            labels = batch.pop("labels").to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            total += float(F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum"))
            count += int((labels != -100).sum())
            num_texts += len(labels)
    finally:
        model.train(was_training)
    return MaskedPerplexity(math.exp(min(total / count, 50.0)), count, num_texts, model.config.vocab_size)


def check_mlm_teacher(teacher, tokenizer, texts: list[str], max_share: float = MAX_PERPLEXITY_SHARE,
                      **masking) -> MaskedPerplexity:
    """Stop unless `teacher`'s masked-LM head is in its checkpoint (`require_mlm_head`) and scores a perplexity below
    `max_share` of the vocabulary size on seeded masks of `texts` (the run's own training texts); returns what was
    measured. `masking`: `seeded_perplexity`'s settings (batches, batch size, length, seed)."""
    require_mlm_head(teacher)
    measured = seeded_perplexity(teacher, tokenizer, texts, **masking)
    limit = max_share * measured.vocab_size
    if not measured.perplexity < limit:
        raise SystemExit(
            f"The teacher {teacher.name_or_path}'s masked-LM head scores a perplexity of {measured.perplexity:.1f} "
            f"on {measured.masked_tokens} masked tokens of {measured.texts} training texts (seeded masks), not far "
            f"below its vocabulary of {measured.vocab_size} tokens (a trained head: below {limit:.1f}); a head that "
            f"guesses uniformly scores about {measured.vocab_size}. Its head is untrained or was trained on other "
            f"text or another tokenizer, so its soft targets would be noise. {GENERAL_DISTILLATION_REMEDY}"
        )
    return measured


__all__ = [
    "MaskedPerplexity",
    "check_mlm_teacher",
    "checkpoint_keys",
    "is_masked_lm",
    "mlm_head_missing_keys",
    "require_mlm_head",
    "seeded_masks",
    "seeded_perplexity",
    "untrained_mlm_head",
    "unused_mlm_head",
]
