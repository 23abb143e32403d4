"""Make the compact model types known to transformers and PEFT.

`register()` runs once on `import hf_compact`. After it:

- `AutoConfig`, `AutoModel` and every matching `AutoModelFor*` class resolve `compact_distilbert` and
  `compact_squeezebert`, so `AutoModelForSequenceClassification.from_pretrained(folder)` and
  `pipeline("sentiment-analysis", model=folder)` work on a saved folder;
- `AutoTokenizer` falls back to BERT's WordPiece tokenizer for these types when a folder does not name one, read
  from the folder's vocabulary; a folder with no vocabulary raises a ValueError saying how to fix it (instead of a
  tokenizer that maps every word to `[UNK]`);
- PEFT's LoRA (and the other adapters that keep per-architecture defaults) knows which modules to target, so
  `get_peft_model(model, LoraConfig(r=8))` works with no `target_modules`.
"""

from __future__ import annotations

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
)

from .modeling import modeling_compact_distilbert, modeling_compact_squeezebert
from .modeling.configuration_compact_distilbert import CompactDistilBertConfig
from .modeling.configuration_compact_squeezebert import CompactSqueezeBertConfig


AUTO_CLASSES = {
    "Model": AutoModel,
    "ForMaskedLM": AutoModelForMaskedLM,
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForTokenClassification": AutoModelForTokenClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForMultipleChoice": AutoModelForMultipleChoice,
}

MODEL_TYPES = {
    "compact_distilbert": (CompactDistilBertConfig, modeling_compact_distilbert, "CompactDistilBert"),
    "compact_squeezebert": (CompactSqueezeBertConfig, modeling_compact_squeezebert, "CompactSqueezeBert"),
}

# The attention value and query projections, as for BERT in PEFT's own table.
LORA_TARGET_MODULES = {
    "compact_distilbert": ["q_lin", "v_lin"],
    "compact_squeezebert": ["query", "value"],
}

_registered = False


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
    """Register both compact model types with the Auto classes, AutoTokenizer, PEFT and the text-classification
    pipeline (idempotent)."""
    global _registered
    if _registered:
        return
    for model_type, (config_class, module, prefix) in MODEL_TYPES.items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        for head, auto_class in AUTO_CLASSES.items():
            auto_class.register(config_class, getattr(module, prefix + head), exist_ok=True)
        AutoTokenizer.register(config_class, tokenizer_class=CompactWordPieceTokenizer, exist_ok=True)
    _register_peft_defaults()
    # pipeline("text-classification" / "sentiment-analysis") on a compact model sorts a list of texts by length and
    # pads each batch only to its own longest text; every other model keeps transformers' own pipeline.
    from .inference import enable_length_sorted_pipeline

    enable_length_sorted_pipeline(tuple(MODEL_TYPES))
    _registered = True


def _register_peft_defaults() -> None:
    try:
        from peft.utils import constants
    except ImportError:  # PEFT is optional at run time
        return
    for model_type, modules in LORA_TARGET_MODULES.items():
        constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault(model_type, list(modules))
        # Adapters whose defaults are copies of LoRA's table, built when PEFT was imported.
        for name in dir(constants):
            table = getattr(constants, name)
            if (
                name.endswith("_TARGET_MODULES_MAPPING")
                and isinstance(table, dict)
                and table is not constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
                and table.get("bert") == constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get("bert")
            ):
                table.setdefault(model_type, list(modules))
