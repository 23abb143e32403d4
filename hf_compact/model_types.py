"""The one list of model types hf_compact knows: the two compact types it defines and the upstream BERT-family types
it reads. Every other module asks this one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompactType:
    """A model type hf_compact defines."""

    name: str  # the `model_type` in config.json
    class_prefix: str  # CompactDistilBert -> CompactDistilBertForSequenceClassification, ...
    upstream: str  # transformers' own type with the same computation, whose checkpoints it loads
    grouped: bool  # SqueezeBERT-style grouped projections
    lora_target_modules: tuple[str, ...]  # the attention query and value projections, as PEFT's table has for BERT
    description: str


COMPACT_TYPES: dict[str, CompactType] = {
    "compact_distilbert": CompactType(
        name="compact_distilbert",
        class_prefix="CompactDistilBert",
        upstream="distilbert",
        grouped=False,
        lora_target_modules=("q_lin", "v_lin"),
        description="DistilBERT-style encoder (dense projections, fewer layers)",
    ),
    "compact_squeezebert": CompactType(
        name="compact_squeezebert",
        class_prefix="CompactSqueezeBert",
        upstream="squeezebert",
        grouped=True,
        lora_target_modules=("query", "value"),
        description="SqueezeBERT-style encoder with grouped 1x1-convolution projections",
    ),
}

COMPACT_MODEL_TYPES: tuple[str, ...] = tuple(COMPACT_TYPES)
# Types a teacher or a conversion source may have: BERT and the upstream and compact families.
SOURCE_MODEL_TYPES: tuple[str, ...] = ("bert", "distilbert", "squeezebert", *COMPACT_MODEL_TYPES)
# The grouped projections of a SqueezeBERT-style configuration, by config field.
SQUEEZEBERT_GROUP_FIELDS: tuple[str, ...] = (
    "q_groups",
    "k_groups",
    "v_groups",
    "post_attention_groups",
    "intermediate_groups",
    "output_groups",
)


def family(model_type: str) -> str | None:
    """`"distilbert"` or `"squeezebert"` for a type of either family (upstream or compact), else None."""
    for compact in COMPACT_TYPES.values():
        if model_type in (compact.name, compact.upstream):
            return compact.upstream
    return None


def is_grouped(model_type: str) -> bool:
    """Whether a type of this name has SqueezeBERT-style grouped projections."""
    return family(model_type) == "squeezebert"


__all__ = [
    "COMPACT_MODEL_TYPES",
    "COMPACT_TYPES",
    "CompactType",
    "SOURCE_MODEL_TYPES",
    "SQUEEZEBERT_GROUP_FIELDS",
    "family",
    "is_grouped",
]
