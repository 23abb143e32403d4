"""Make the compact model types known to transformers and, on request, to PEFT.

`register()` runs once on `import hf_compact`. After it:

- `AutoConfig`, `AutoModel` and every matching `AutoModelFor*` class resolve `compact_distilbert` and
  `compact_squeezebert`, so `AutoModelForSequenceClassification.from_pretrained(folder)` and
  `pipeline("sentiment-analysis", model=folder)` work on a saved folder;
- `AutoTokenizer` falls back to BERT's WordPiece tokenizer for these types when a folder does not name one, read
  from the folder's vocabulary; a folder with no vocabulary raises a ValueError saying how to fix it (instead of a
  tokenizer that maps every word to `[UNK]`).

Nothing else changes on import. Two registrations edit other libraries' tables, so they are explicit calls:

- `register_peft()` writes the compact types' default adapter targets into PEFT's tables, so that
  `get_peft_model(model, LoraConfig(r=8))` works with no `target_modules`;
- `hf_compact.inference.enable_length_sorted_pipeline()` makes `pipeline("text-classification")` build the
  length-sorted pipeline for the compact types.

```python
>>> import hf_compact
>>> hf_compact.register_peft()  # doctest: +SKIP
>>> from peft import LoraConfig, get_peft_model  # doctest: +SKIP
>>> model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8))  # doctest: +SKIP
```
"""

from __future__ import annotations

import importlib

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
)

from .model_types import COMPACT_TYPES


AUTO_CLASSES = {
    "Model": AutoModel,
    "ForMaskedLM": AutoModelForMaskedLM,
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForTokenClassification": AutoModelForTokenClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForMultipleChoice": AutoModelForMultipleChoice,
}

# The PEFT methods whose per-model-type defaults are the attention query and value projections, as LoRA's are for
# BERT: each keeps its own table, `peft.utils.constants.TRANSFORMERS_MODELS_TO_<METHOD>_TARGET_MODULES_MAPPING`.
# (IA3, BEFT, LN-tuning and OSF target other modules and are left alone.) A method the installed PEFT lacks is skipped.
PEFT_METHODS = (
    "LORA",
    "ADALORA",
    "ADAMSS",
    "BOFT",
    "C3A",
    "DEFT",
    "DELORA",
    "FOURIERFT",
    "FROD",
    "GLORA",
    "GRALORA",
    "HIRA",
    "HRA",
    "LILY",
    "LOHA",
    "LOKR",
    "MISS",
    "OFT",
    "PEANUT",
    "POLY",
    "PSOFT",
    "PVERA",
    "RANDLORA",
    "ROAD",
    "SHIRA",
    "SUPERTUNING",
    "TINYLORA",
    "UNILORA",
    "VBLORA",
    "VERA",
    "WAVEFT",
)

_registered = False


def compact_config_class(model_type: str) -> type[PreTrainedConfig]:
    """The configuration class of a compact model type (`CompactDistilBertConfig`, ...)."""
    compact = COMPACT_TYPES[model_type]
    module = importlib.import_module(f"{__package__}.modeling.configuration_{compact.name}")
    return getattr(module, compact.class_prefix + "Config")


def compact_model_class(model_type: str, head: str) -> type[PreTrainedModel]:
    """The class of a compact model type with one of the `AUTO_CLASSES` heads
    (`compact_model_class("compact_distilbert", "ForSequenceClassification")`)."""
    if head not in AUTO_CLASSES:
        raise ValueError(f"head={head!r} is not one of the compact heads {sorted(AUTO_CLASSES)}.")
    compact = COMPACT_TYPES[model_type]
    module = importlib.import_module(f"{__package__}.modeling.modeling_{compact.name}")
    return getattr(module, compact.class_prefix + head)


def has_vocabulary(tokenizer) -> bool:
    """Whether `tokenizer` knows more than its special tokens. A BERT tokenizer loaded from a folder with no
    `vocab.txt` or `tokenizer.json` holds only `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` and `[MASK]`."""
    return len(tokenizer.get_vocab()) > len(set(tokenizer.all_special_tokens))


class CompactWordPieceTokenizer(BertTokenizer):
    """What `AutoTokenizer` builds for a compact folder that names no tokenizer class: BERT's WordPiece tokenizer
    read from the folder's vocabulary (a plain `BertTokenizer`, so the folder it saves loads anywhere), or a
    ValueError naming the folder when it holds no vocabulary."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> BertTokenizer:
        tokenizer = BertTokenizer.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if not has_vocabulary(tokenizer):
            folder = str(pretrained_model_name_or_path)
            raise ValueError(
                f"{folder} holds no tokenizer vocabulary (no tokenizer.json or vocab.txt): a tokenizer built from it "
                f"would map every word to [UNK]. Save the teacher's tokenizer into the folder: "
                f"`AutoTokenizer.from_pretrained(teacher).save_pretrained({folder!r})` (students from "
                f"`hf_compact.convert_to_compact(teacher, ...)` save it with `save_pretrained`)."
            )
        return tokenizer


def register() -> None:
    """Register both compact model types with `AutoConfig`, the `AutoModel*` classes and `AutoTokenizer`
    (idempotent; run by `import hf_compact`)."""
    global _registered
    if _registered:
        return
    for model_type in COMPACT_TYPES:
        config_class = compact_config_class(model_type)
        AutoConfig.register(model_type, config_class, exist_ok=True)
        for head, auto_class in AUTO_CLASSES.items():
            auto_class.register(config_class, compact_model_class(model_type, head), exist_ok=True)
        AutoTokenizer.register(config_class, tokenizer_class=CompactWordPieceTokenizer, exist_ok=True)
    _registered = True


def register_peft() -> list[str]:
    """Give PEFT default adapter targets for the compact types: the attention query and value projections
    (`q_lin`/`v_lin` for compact_distilbert, `query`/`value` for compact_squeezebert), written into the table of
    each method in `PEFT_METHODS`. Afterwards `get_peft_model(model, LoraConfig(r=8))` needs no `target_modules`.

    Imports PEFT. Idempotent, and an entry PEFT or the caller already has for a compact type is kept.

    Returns:
        The names of the PEFT tables that hold the compact types' entries.

    Raises:
        ImportError: when PEFT is not installed.
    """
    from peft.utils import constants

    tables = []
    for method in PEFT_METHODS:
        name = f"TRANSFORMERS_MODELS_TO_{method}_TARGET_MODULES_MAPPING"
        table = getattr(constants, name, None)
        if table is None:
            continue
        for model_type, compact in COMPACT_TYPES.items():
            table.setdefault(model_type, list(compact.lora_target_modules))
        tables.append(name)
    return tables


__all__ = [
    "AUTO_CLASSES",
    "CompactWordPieceTokenizer",
    "PEFT_METHODS",
    "compact_config_class",
    "compact_model_class",
    "has_vocabulary",
    "register",
    "register_peft",
]
