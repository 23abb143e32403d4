"""Configuration of the compact_squeezebert model type: SqueezeBERT's architecture, every size configurable."""

from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


# Checkpoints of these types load into this configuration as they are; other families must be converted.
COMPATIBLE_MODEL_TYPES = ("compact_squeezebert", "squeezebert")


@strict
class CompactSqueezeBertConfig(PreTrainedConfig):
    r"""
    Configuration of a [`CompactSqueezeBertModel`]: a SqueezeBERT-style encoder (word, position and token-type
    embeddings; the q, k, v, post-attention, intermediate and output projections as grouped 1x1 convolutions, each
    with its own number of groups; post-LayerNorm blocks; a tanh pooler). The field names are SqueezeBERT's, so an
    upstream `squeezebert` `config.json` loads into this class unchanged.

    A projection with `g` groups splits its input and output channels into `g` blocks and connects block `k` of the
    input only to block `k` of the output: it costs `1/g` of a dense projection's multiply-adds and parameters. Each
    `*_groups` must divide both channel counts of its projection.

    Args:
        vocab_size (`int`, *optional*, defaults to 30522):
            Size of the vocabulary: the number of distinct token ids the embeddings accept.
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the embeddings and of every block's output.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of blocks.
        num_attention_heads (`int`, *optional*, defaults to 12):
            Number of attention heads in each block; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 3072):
            Width of the feed-forward (intermediate) projection inside each block.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the intermediate projection and of the MLM head; any key of `transformers.activations.ACT2FN`.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout probability on embeddings, block outputs and before the classification heads, in [0, 1).
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout probability on the attention probabilities, in [0, 1).
        max_position_embeddings (`int`, *optional*, defaults to 512):
            Longest sequence the model accepts (rows of the position embedding table).
        type_vocab_size (`int`, *optional*, defaults to 2):
            Number of token types (segments) the token-type embeddings accept.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of the weight matrices.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of every LayerNorm.
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token (its embedding is initialised to zeros).
        bos_token_id (`int`, *optional*):
            Id of the beginning-of-sequence token, unused by the encoder itself.
        eos_token_id (`int` or `list[int]`, *optional*):
            Id(s) of the end-of-sequence token, unused by the encoder itself.
        embedding_size (`int`, *optional*, defaults to 768):
            Width of the embedding vectors; must equal `hidden_size` (kept for checkpoint compatibility).
        q_groups (`int`, *optional*, defaults to 4):
            Groups of the query projection (hidden -> hidden).
        k_groups (`int`, *optional*, defaults to 4):
            Groups of the key projection (hidden -> hidden).
        v_groups (`int`, *optional*, defaults to 4):
            Groups of the value projection (hidden -> hidden).
        post_attention_groups (`int`, *optional*, defaults to 1):
            Groups of the projection after attention (hidden -> hidden).
        intermediate_groups (`int`, *optional*, defaults to 4):
            Groups of the intermediate projection (hidden -> intermediate).
        output_groups (`int`, *optional*, defaults to 4):
            Groups of the output projection (intermediate -> hidden).
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Whether the masked-LM decoder shares its weight with the word embeddings.
        teacher_layer_map (`list[int]`, *optional*):
            For a student built from a teacher, the 0-based teacher layer each block was initialised from. Recorded
            by `hf_compact.convert_to_compact`; informational only.

    Example:

    ```python
    >>> from hf_compact import CompactSqueezeBertConfig, CompactSqueezeBertModel
    >>> config = CompactSqueezeBertConfig(hidden_size=384, embedding_size=384, num_hidden_layers=3,
    ...                                   num_attention_heads=12, intermediate_size=1536)
    >>> model = CompactSqueezeBertModel(config)
    >>> model.encoder.layers[0].attention.query.groups
    4
    ```
    """

    model_type = "compact_squeezebert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    embedding_size: int = 768
    q_groups: int = 4
    k_groups: int = 4
    v_groups: int = 4
    post_attention_groups: int = 1
    intermediate_groups: int = 4
    output_groups: int = 4
    tie_word_embeddings: bool = True
    teacher_layer_map: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_architecture()  # a plain ValueError at construction, before any weight is built

    def group_channels(self) -> dict[str, tuple[int, int]]:
        """(input channels, output channels) of the projection each `*_groups` field splits."""
        hidden, intermediate = self.hidden_size, self.intermediate_size
        return {
            "q_groups": (hidden, hidden),
            "k_groups": (hidden, hidden),
            "v_groups": (hidden, hidden),
            "post_attention_groups": (hidden, hidden),
            "intermediate_groups": (hidden, intermediate),
            "output_groups": (intermediate, hidden),
        }

    def validate_architecture(self):
        """Reject sizes that cannot build a model, naming the field, its value and what would work."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "embedding_size",
        ):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name}={value} is invalid: {name} must be a positive integer.")
        if self.hidden_size % self.num_attention_heads != 0:
            divisors = [h for h in range(1, 65) if self.hidden_size % h == 0]
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} does not divide hidden_size={self.hidden_size}. "
                f"Use num_attention_heads in {divisors} or change hidden_size."
            )
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                f"embedding_size={self.embedding_size} must equal hidden_size={self.hidden_size}: the first block "
                f"reads the embeddings directly. Set embedding_size={self.hidden_size}."
            )
        for name, (channels_in, channels_out) in self.group_channels().items():
            groups = getattr(self, name)
            if groups <= 0 or channels_in % groups or channels_out % groups:
                common = [g for g in range(1, min(channels_in, channels_out) + 1)
                          if channels_in % g == 0 and channels_out % g == 0 and g <= 64]
                raise ValueError(
                    f"{name}={groups} is invalid: the groups must divide both the {channels_in} input and the "
                    f"{channels_out} output channels of that projection. Use one of {common}."
                )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} is invalid: a dropout probability must be in [0, 1).")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not a known activation; use one of {sorted(ACT2FN)}.")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps={self.layer_norm_eps} is invalid: it must be a small positive number.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} is outside the vocabulary (vocab_size={self.vocab_size})."
            )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type not in COMPATIBLE_MODEL_TYPES:
            raise ValueError(
                f"This checkpoint is of model type {model_type!r}, another family than compact_squeezebert (which "
                f"loads {COMPATIBLE_MODEL_TYPES} checkpoints directly). For a BERT-family teacher, build a student "
                f"with `hf_compact.convert_to_compact(folder, 'compact_squeezebert')`."
            )
        config_dict = {key: value for key, value in config_dict.items() if key != "model_type"}
        return super().from_dict(config_dict, **kwargs)


__all__ = ["CompactSqueezeBertConfig"]
