"""hf_compact: compact, fast BERT-family students for the Hugging Face ecosystem.

Importing the package registers the `compact_distilbert` and `compact_squeezebert` model types with transformers'
`AutoConfig`, `AutoModel*` classes and `AutoTokenizer`, and does nothing else: it does not import PEFT and leaves
transformers' pipelines as they are. The rest is loaded on first use (`hf_compact.convert_to_compact`,
`hf_compact.conversion`, ...), and two registrations that change other libraries' tables are explicit calls:

- `hf_compact.register_peft()`: PEFT's LoRA (and the other adapters with per-architecture defaults) target the
  compact types' attention query and value projections when no `target_modules` is given;
- `hf_compact.inference.enable_length_sorted_pipeline()`: `pipeline("text-classification")` on a compact model
  sorts a list of texts by length and pads each batch only to its own longest text.

```python
>>> import hf_compact
>>> from transformers import AutoConfig, AutoModelForSequenceClassification
>>> config = AutoConfig.for_model("compact_distilbert", vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
>>> type(AutoModelForSequenceClassification.from_config(config)).__name__
'CompactDistilBertForSequenceClassification'
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .modeling.configuration_compact_distilbert import CompactDistilBertConfig
from .modeling.configuration_compact_squeezebert import CompactSqueezeBertConfig
from .modeling.modeling_compact_distilbert import (
    CompactDistilBertForMaskedLM,
    CompactDistilBertForMultipleChoice,
    CompactDistilBertForQuestionAnswering,
    CompactDistilBertForSequenceClassification,
    CompactDistilBertForTokenClassification,
    CompactDistilBertModel,
    CompactDistilBertPreTrainedModel,
)
from .modeling.modeling_compact_squeezebert import (
    CompactSqueezeBertForMaskedLM,
    CompactSqueezeBertForMultipleChoice,
    CompactSqueezeBertForQuestionAnswering,
    CompactSqueezeBertForSequenceClassification,
    CompactSqueezeBertForTokenClassification,
    CompactSqueezeBertModel,
    CompactSqueezeBertPreTrainedModel,
)
from .registration import register, register_peft


if TYPE_CHECKING:
    from .conversion import convert_to_compact
    from .grouped_init import fit_grouped_projections
    from .upstream import save_as_upstream


register()

__version__ = "0.1.0"

# Public functions of submodules that load on first use, by the submodule that defines them.
_LAZY_FUNCTIONS = {
    "convert_to_compact": "conversion",
    "fit_grouped_projections": "grouped_init",
    "save_as_upstream": "upstream",
}


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _LAZY_FUNCTIONS:
        value = getattr(importlib.import_module(f".{_LAZY_FUNCTIONS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule not imported yet: hf_compact.conversion, hf_compact.inference, ...
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_FUNCTIONS})


__all__ = [
    "CompactDistilBertConfig",
    "CompactDistilBertForMaskedLM",
    "CompactDistilBertForMultipleChoice",
    "CompactDistilBertForQuestionAnswering",
    "CompactDistilBertForSequenceClassification",
    "CompactDistilBertForTokenClassification",
    "CompactDistilBertModel",
    "CompactDistilBertPreTrainedModel",
    "CompactSqueezeBertConfig",
    "CompactSqueezeBertForMaskedLM",
    "CompactSqueezeBertForMultipleChoice",
    "CompactSqueezeBertForQuestionAnswering",
    "CompactSqueezeBertForSequenceClassification",
    "CompactSqueezeBertForTokenClassification",
    "CompactSqueezeBertModel",
    "CompactSqueezeBertPreTrainedModel",
    "convert_to_compact",
    "fit_grouped_projections",
    "register",
    "register_peft",
    "save_as_upstream",
    "__version__",
]
