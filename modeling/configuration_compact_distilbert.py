"""Configuration of the compact_distilbert model type: DistilBERT's architecture, every size configurable."""

from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


# Checkpoints of these types load into this configuration as they are; other families must be converted.
COMPATIBLE_MODEL_TYPES = ("compact_distilbert", "distilbert")


@strict
class CompactDistilBertConfig(PreTrainedConfig):
    r"""
    Configuration of a [`CompactDistilBertModel`]: a DistilBERT-style encoder (word and position embeddings with no
    token types, post-LayerNorm transformer blocks, GELU feed-forward). The field names are DistilBERT's, so an
    upstream `distilbert` `config.json` loads into this class unchanged; `hidden_size`, `num_hidden_layers`,
    `num_attention_heads` and `intermediate_size` are accepted as aliases.

    Args:
        vocab_size (`int`, *optional*, defaults to 30522):
            Size of the vocabulary: the number of distinct token ids the embeddings accept.
        max_position_embeddings (`int`, *optional*, defaults to 512):
            Longest sequence the model accepts (rows of the position embedding table).
        sinusoidal_pos_embds (`bool`, *optional*, defaults to `False`):
            Whether the position embeddings are fixed sinusoids instead of learned vectors.
        n_layers (`int`, *optional*, defaults to 6):
            Number of transformer blocks.
        n_heads (`int`, *optional*, defaults to 12):
            Number of attention heads in each block; must divide `dim`.
        dim (`int`, *optional*, defaults to 768):
            Width of the embeddings and of every block's output.
        hidden_dim (`int`, *optional*, defaults to 3072):
            Width of the feed-forward layer inside each block.
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout probability on embeddings and block outputs, in [0, 1).
        attention_dropout (`float`, *optional*, defaults to 0.1):
            Dropout probability on the attention probabilities, in [0, 1).
        activation (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward layer and of the MLM head; any key of `transformers.activations.ACT2FN`.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of the weight matrices.
        qa_dropout (`float`, *optional*, defaults to 0.1):
            Dropout probability before the question-answering head, in [0, 1).
        seq_classif_dropout (`float`, *optional*, defaults to 0.2):
            Dropout probability before the sequence-classification and multiple-choice heads, in [0, 1).
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token (its embedding is initialised to zeros).
        eos_token_id (`int` or `list[int]`, *optional*):
            Id(s) of the end-of-sequence token, unused by the encoder itself.
        bos_token_id (`int`, *optional*):
            Id of the beginning-of-sequence token, unused by the encoder itself.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Whether the masked-LM output projection shares its weight with the word embeddings.
        teacher_layer_map (`list[int]`, *optional*):
            For a student built from a teacher, the 0-based teacher layer each block was initialised from. Recorded
            by `hf_compact.convert_to_compact`; informational only.

    Example:

    ```python
    >>> from hf_compact import CompactDistilBertConfig, CompactDistilBertModel
    >>> config = CompactDistilBertConfig(dim=384, n_layers=3, n_heads=12, hidden_dim=1536)
    >>> model = CompactDistilBertModel(config)
    >>> config.hidden_size, config.num_hidden_layers
    (384, 3)
    ```
    """

    model_type = "compact_distilbert"
    attribute_map = {
        "hidden_size": "dim",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "hidden_dim",
    }

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    n_layers: int = 6
    n_heads: int = 12
    dim: int = 768
    hidden_dim: int = 4 * 768
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    qa_dropout: float | int = 0.1
    seq_classif_dropout: float | int = 0.2
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = None
    bos_token_id: int | None = None
    tie_word_embeddings: bool = True
    teacher_layer_map: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_architecture()  # a plain ValueError at construction, before any weight is built

    def validate_architecture(self):
        """Reject sizes that cannot build a model, naming the field, its value and what would work."""
        for name in ("vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim", "hidden_dim"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name}={value} is invalid: {name} must be a positive integer.")
        if self.dim % self.n_heads != 0:
            divisors = [h for h in range(1, self.dim + 1) if self.dim % h == 0 and h <= 64]
            raise ValueError(
                f"n_heads={self.n_heads} does not divide dim={self.dim}: each head needs dim / n_heads channels. "
                f"Use n_heads in {divisors} or change dim."
            )
        for name in ("dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} is invalid: a dropout probability must be in [0, 1).")
        if self.activation not in ACT2FN:
            raise ValueError(
                f"activation={self.activation!r} is not a known activation; use one of {sorted(ACT2FN)}."
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} is outside the vocabulary (vocab_size={self.vocab_size})."
            )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type not in COMPATIBLE_MODEL_TYPES:
            raise ValueError(
                f"This checkpoint is of model type {model_type!r}, another family than compact_distilbert (which "
                f"loads {COMPATIBLE_MODEL_TYPES} checkpoints directly). For a BERT-family teacher, build a student "
                f"with `hf_compact.convert_to_compact(folder, 'compact_distilbert')`."
            )
        config_dict = {key: value for key, value in config_dict.items() if key != "model_type"}
        return super().from_dict(config_dict, **kwargs)


__all__ = ["CompactDistilBertConfig"]
