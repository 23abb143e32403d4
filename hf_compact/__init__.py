"""hf_compact: compact, fast BERT-family students for the Hugging Face ecosystem.

Importing the package registers the `compact_distilbert` and `compact_squeezebert` model types with transformers'
Auto classes, AutoTokenizer and PEFT's adapter defaults.

```python
>>> import hf_compact
>>> from transformers import AutoConfig, AutoModelForSequenceClassification
>>> config = AutoConfig.for_model("compact_distilbert", vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
>>> type(AutoModelForSequenceClassification.from_config(config)).__name__
'CompactDistilBertForSequenceClassification'
```
"""

from .conversion import convert_to_compact
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
from .grouped_init import fit_grouped_projections
from .registration import register
from .upstream import save_as_upstream


register()

__version__ = "0.1.0"

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
    "save_as_upstream",
    "__version__",
]
