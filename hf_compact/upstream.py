"""Save a compact model as transformers' own `distilbert` / `squeezebert` folder, for tools that know only those.

`compact_distilbert` is DistilBERT's architecture and `compact_squeezebert` SqueezeBERT's, with the same parameter
names and shapes: that is why upstream checkpoints load into the compact classes as they are (each compact
registry, `hf_compact.model_types.COMPACT_TYPES`, names the upstream type each compact type reads). `save_as_upstream` goes the other way:
it builds the matching upstream class (`DistilBertForSequenceClassification`, `SqueezeBertForMaskedLM`, ...), loads
the compact weights into it, checks that every weight found its place, and lets that class write the folder. The
folder then loads with transformers alone, no `trust_remote_code`, and gives the compact model's outputs.

Example:

```python
>>> import tempfile, torch, transformers
>>> import hf_compact
>>> config = hf_compact.CompactDistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
>>> student = hf_compact.CompactDistilBertForSequenceClassification(config).eval()
>>> folder = hf_compact.save_as_upstream(student, tempfile.mkdtemp())
>>> upstream = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
>>> type(upstream).__name__
'DistilBertForSequenceClassification'
>>> inputs = torch.tensor([[2, 7, 9, 3]])
>>> torch.allclose(upstream(inputs).logits, student(inputs).logits, atol=1e-6)
True
```
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .conversion import _load_tokenizer
from .model_types import COMPACT_TYPES
from .registration import AUTO_CLASSES


logger = logging.get_logger(__name__)

# Configuration keys the upstream class writes itself, and `auto_map`, which names the compact model code that an
# upstream folder does not hold.
_KEYS_NOT_CARRIED = ("model_type", "architectures", "transformers_version", "auto_map")


def save_as_upstream(
    model: PreTrainedModel,
    save_directory: str | os.PathLike,
    *,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
) -> str:
    """Save a `compact_distilbert` / `compact_squeezebert` model of any head as the equivalent upstream
    `distilbert` / `squeezebert` folder: `config.json` with the upstream model type and architecture,
    `model.safetensors` in the upstream checkpoint format, and the tokenizer.

    Args:
        model: a compact model (`CompactDistilBertForSequenceClassification`, `CompactSqueezeBertModel`, ...).
        save_directory: the folder to write.
        tokenizer: the tokenizer to save beside the weights (a tokenizer, or a folder / Hub name to load one from);
            defaults to the one the model carries from `hf_compact.convert_to_compact`.

    Returns:
        `save_directory`, as a string.

    Raises:
        ValueError, before anything is written, when `model` is not a compact model of one of the six heads, or when
        its weights are not exactly the upstream class's (unmerged PEFT adapters, replaced modules): merge adapters
        with `merge_and_unload()` first.

    Every compact configuration field exists upstream; `teacher_layer_map` is kept as an extra, informational field.
    Upstream SqueezeBERT builds a pooler in every head; where the compact head has none (masked LM, token
    classification, question answering), the pooler is saved as zeros: those heads never read it. Upstream classes
    keep their own behaviour, e.g. `SqueezeBertModel` returns attention scores before the softmax.
    """
    upstream = _upstream_model_for(model)
    state_dict = model.state_dict()
    try:
        loaded = upstream.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # a weight of another shape
        raise ValueError(f"{type(model).__name__}'s weights do not fit {type(upstream).__name__}: {error}") from error
    missing = set(loaded.missing_keys)
    if getattr(model.base_model, "pooler", "not a pooler head") is None:
        with torch.no_grad():
            for parameter in upstream.base_model.pooler.parameters():
                parameter.zero_()
        missing = {key for key in missing if ".pooler." not in f".{key}"}
    if missing or loaded.unexpected_keys:
        raise ValueError(
            f"{type(model).__name__} cannot be saved as {type(upstream).__name__}: weights upstream lacks "
            f"{sorted(loaded.unexpected_keys)[:4]}, weights it needs and the model lacks {sorted(missing)[:4]}. "
            f"Merge PEFT adapters into the weights first (`model = model.merge_and_unload()`) and undo other module "
            f"replacements."
        )

    upstream.save_pretrained(save_directory)
    tokenizer = _load_tokenizer(tokenizer) if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        logger.warning(
            "%s carries no tokenizer and none was given: %s holds none. Save the teacher's tokenizer into it.",
            type(model).__name__,
            save_directory,
        )
    else:
        tokenizer.save_pretrained(save_directory)
    return str(save_directory)


def _upstream_model_for(model: PreTrainedModel) -> PreTrainedModel:
    """The upstream class matching `model`'s type and head, built from its configuration in its dtype."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    name = type(model).__name__
    compact = COMPACT_TYPES.get(model_type)
    if compact is None or not name.startswith(compact.class_prefix):
        raise ValueError(
            f"save_as_upstream saves {' or '.join(COMPACT_TYPES)} models; got {name} (model type "
            f"{model_type!r}). For a PEFT model, merge its adapters first: `model = model.merge_and_unload()`."
        )
    head = name[len(compact.class_prefix) :]
    if head not in AUTO_CLASSES:
        raise ValueError(f"{name} has no upstream counterpart; the heads that do are {sorted(AUTO_CLASSES)}.")
    fields = {key: value for key, value in model.config.to_dict().items() if key not in _KEYS_NOT_CARRIED}
    upstream_config = AutoConfig.for_model(compact.upstream, **fields)
    return AUTO_CLASSES[head].from_config(upstream_config).to(model.dtype)


__all__ = ["save_as_upstream"]
