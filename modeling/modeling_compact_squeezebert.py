"""The compact_squeezebert model: SqueezeBERT's architecture, computed channels-last, in transformers 5.x form.

Parameter names and shapes are SqueezeBERT's (the grouped projections keep `nn.Conv1d`'s (out, in / groups, 1)
weights), so upstream `squeezebert` checkpoints load as they are and give the same numbers as transformers'
`SqueezeBertModel`. Unlike upstream, activations stay in (batch, sequence, channels) layout from the embeddings to
the output: LayerNorm needs no permutes, and each grouped projection is one batched matrix multiply.

This file is the reference computation, read top to bottom like transformers' own modeling files. Faster CPU
inference kernels are attached from outside by `hf_compact.kernels.optimize` and leave these numbers unchanged.

This file and `configuration_compact_squeezebert.py` are copied next to every saved checkpoint, so they import only
torch, transformers and each other.
"""

import os
import shutil
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_compact_squeezebert import CompactSqueezeBertConfig


logger = logging.get_logger(__name__)

# Every head, so a folder saved as one head loads as any other with `trust_remote_code=True`.
AUTO_MAP = {
    "AutoConfig": "configuration_compact_squeezebert.CompactSqueezeBertConfig",
    "AutoModel": "modeling_compact_squeezebert.CompactSqueezeBertModel",
    "AutoModelForMaskedLM": "modeling_compact_squeezebert.CompactSqueezeBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_compact_squeezebert.CompactSqueezeBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_compact_squeezebert.CompactSqueezeBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_compact_squeezebert.CompactSqueezeBertForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_compact_squeezebert.CompactSqueezeBertForMultipleChoice",
}


class CompactSqueezeBertEmbeddings(nn.Module):
    """Word, position and token-type embeddings, summed, LayerNorm, dropout."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = self.position_ids[:, : inputs_embeds.size(1)]
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        if token_type_ids is None:
            embeddings = embeddings + self.token_type_embeddings.weight[0]  # every token in segment 0
        else:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class CompactSqueezeBertGroupedConv(nn.Conv1d):
    """A grouped 1x1 convolution applied to channels-last input: (batch, seq, in) -> (batch, seq, out).

    It keeps `nn.Conv1d`'s parameters and their (out, in / groups, 1) layout, so SqueezeBERT checkpoints load into it
    and PEFT adapts it as a convolution (PEFT builds its LoRA factors with this same class). On the channels-last
    tensors the rest of the model keeps, it is one batched matrix multiply over the groups (a plain one when
    `groups == 1`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, *args, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, *args, **kwargs)
        if self.kernel_size != (1,) or self.stride != (1,) or self.padding not in ((0,), "valid"):
            raise ValueError(
                f"{type(self).__name__} is a 1x1 projection; got kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}."
            )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        groups = self.groups
        if groups == 1:
            return F.linear(hidden_states, self.weight.squeeze(-1), self.bias)
        *leading, channels_in = hidden_states.shape
        out_per_group = self.out_channels // groups
        grouped = hidden_states.reshape(-1, groups, channels_in // groups).transpose(0, 1)  # (g, N, in/g)
        weight = self.weight.view(groups, out_per_group, channels_in // groups).transpose(1, 2)  # (g, in/g, out/g)
        if self.bias is None:
            output = torch.bmm(grouped, weight)
        else:
            output = torch.baddbmm(self.bias.view(groups, 1, out_per_group), grouped, weight)
        return output.transpose(0, 1).reshape(*leading, self.out_channels)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    """Plain softmax attention on (batch, heads, seq, head_dim) tensors; returns (batch, seq, heads, head_dim)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = nn.functional.softmax(scores, dim=-1)
    probabilities = nn.functional.dropout(probabilities, p=dropout, training=module.training)
    output = torch.matmul(probabilities, value).transpose(1, 2).contiguous()
    return output, probabilities


class CompactSqueezeBertSelfAttention(nn.Module):
    """Multi-head self-attention whose q, k and v projections are grouped 1x1 convolutions.

    Returns the attention output and, when recorded, the attention probabilities (after softmax).
    """

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        hidden = config.hidden_size
        self.config = config
        self.head_dim = hidden // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.query = CompactSqueezeBertGroupedConv(hidden, hidden, 1, groups=config.q_groups)
        self.key = CompactSqueezeBertGroupedConv(hidden, hidden, 1, groups=config.k_groups)
        self.value = CompactSqueezeBertGroupedConv(hidden, hidden, 1, groups=config.v_groups)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        head_shape = (*input_shape, -1, self.head_dim)
        query = self.query(hidden_states).view(head_shape).transpose(1, 2)
        key = self.key(hidden_states).view(head_shape).transpose(1, 2)
        value = self.value(hidden_states).view(head_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, probabilities = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return output.reshape(*input_shape, -1), probabilities


class CompactSqueezeBertConvDropoutLayerNorm(nn.Module):
    """Grouped projection, dropout, residual, LayerNorm."""

    def __init__(self, channels_in: int, channels_out: int, groups: int, config: CompactSqueezeBertConfig):
        super().__init__()
        self.conv1d = CompactSqueezeBertGroupedConv(channels_in, channels_out, 1, groups=groups)
        self.layernorm = nn.LayerNorm(channels_out, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.dropout(self.conv1d(hidden_states)) + residual)


class CompactSqueezeBertConvActivation(nn.Module):
    """Grouped projection followed by the activation."""

    def __init__(self, channels_in: int, channels_out: int, groups: int, activation: str):
        super().__init__()
        self.conv1d = CompactSqueezeBertGroupedConv(channels_in, channels_out, 1, groups=groups)
        self.act = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1d(hidden_states))


class CompactSqueezeBertModule(GradientCheckpointingLayer):
    """One block: attention, post-attention projection + LayerNorm, intermediate projection, output + LayerNorm."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        hidden, intermediate = config.hidden_size, config.intermediate_size
        self.attention = CompactSqueezeBertSelfAttention(config)
        self.post_attention = CompactSqueezeBertConvDropoutLayerNorm(
            hidden, hidden, config.post_attention_groups, config
        )
        self.intermediate = CompactSqueezeBertConvActivation(
            hidden, intermediate, config.intermediate_groups, config.hidden_act
        )
        self.output = CompactSqueezeBertConvDropoutLayerNorm(intermediate, hidden, config.output_groups, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _ = self.attention(hidden_states, attention_mask, **kwargs)
        hidden_states = self.post_attention(attention_output, hidden_states)
        return self.output(self.intermediate(hidden_states), hidden_states)


class CompactSqueezeBertEncoder(nn.Module):
    """The stack of blocks, on (batch, seq, hidden) tensors."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        self.layers = nn.ModuleList(CompactSqueezeBertModule(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


class CompactSqueezeBertPooler(nn.Module):
    """Dense + tanh on the first token's hidden state."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class CompactSqueezeBertPredictionHeadTransform(nn.Module):
    """Dense, activation, LayerNorm before the MLM decoder."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class CompactSqueezeBertLMPredictionHead(nn.Module):
    """Transform, then the decoder onto the vocabulary (its weight tied to the word embeddings by default)."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        self.transform = CompactSqueezeBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class CompactSqueezeBertOnlyMLMHead(nn.Module):
    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__()
        self.predictions = CompactSqueezeBertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


class CompactSqueezeBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation, attention back-ends, and saving with the model code for `trust_remote_code`."""

    config: CompactSqueezeBertConfig
    config_class = CompactSqueezeBertConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": CompactSqueezeBertModule,
        "attentions": CompactSqueezeBertSelfAttention,
    }

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, CompactSqueezeBertGroupedConv):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, CompactSqueezeBertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, CompactSqueezeBertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus this model's code next to the weights and an `auto_map` naming
        every head, so the folder loads with `trust_remote_code=True` where hf_compact is not installed."""
        if kwargs.get("is_main_process", True):
            os.makedirs(save_directory, exist_ok=True)
            here = os.path.dirname(os.path.abspath(__file__))
            for name in ("configuration_compact_squeezebert.py", "modeling_compact_squeezebert.py"):
                shutil.copyfile(os.path.join(here, name), os.path.join(save_directory, name))
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


class CompactSqueezeBertModel(CompactSqueezeBertPreTrainedModel):
    """The bare encoder with its pooler: returns the last hidden state and the pooled first token.

    With `add_pooling_layer=False` (the heads that read every token: masked LM, token classification, question
    answering) the pooler is not built and `pooler_output` is None, so every parameter takes part in training.

    `output_attentions=True` returns attention probabilities (after softmax), as other transformers models do;
    transformers' own `SqueezeBertModel` returns the scores before the softmax.

    Example:

    ```python
    >>> import torch
    >>> from hf_compact import CompactSqueezeBertConfig, CompactSqueezeBertModel
    >>> config = CompactSqueezeBertConfig(vocab_size=99, hidden_size=32, embedding_size=32, num_hidden_layers=2,
    ...                                   num_attention_heads=4, intermediate_size=64)
    >>> CompactSqueezeBertModel(config)(torch.tensor([[5, 6, 7]])).pooler_output.shape
    torch.Size([1, 32])
    ```
    """

    def __init__(self, config: CompactSqueezeBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = CompactSqueezeBertEmbeddings(config)
        self.encoder = CompactSqueezeBertEncoder(config)
        self.pooler = CompactSqueezeBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding):
        self.embeddings.word_embeddings = new_embeddings

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embeddings, attention_mask=attention_mask
        )
        sequence_output = self.encoder(embeddings, attention_mask, **kwargs).last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


class CompactSqueezeBertForMaskedLM(CompactSqueezeBertPreTrainedModel):
    """The encoder with BERT's masked-language-modelling head."""

    # Upstream SqueezeBERT builds a pooler in every head; this head has none, so a checkpoint's pooler is skipped.
    _keys_to_ignore_on_load_unexpected = [r"pooler"]
    _tied_weights_keys = {
        "cls.predictions.decoder.bias": "cls.predictions.bias",
        "cls.predictions.decoder.weight": "transformer.embeddings.word_embeddings.weight",
    }

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__(config)
        self.transformer = CompactSqueezeBertModel(config, add_pooling_layer=False)
        self.cls = CompactSqueezeBertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput | tuple[torch.Tensor, ...]:
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.cls(outputs[0])
        loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size) if labels is not None else None
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompactSqueezeBertForSequenceClassification(CompactSqueezeBertPreTrainedModel):
    """The encoder with a classification/regression head on the pooled output: dropout, classifier.
    Single-label, multi-label or regression as `config.problem_type` says."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = CompactSqueezeBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


def _merge_choices(tensor: torch.Tensor | None, dims: int) -> torch.Tensor | None:
    """(batch, num_choices, ...) -> (batch * num_choices, ...) for a tensor that has `dims` dimensions per example."""
    if tensor is None or tensor.dim() == dims:
        return tensor
    return tensor.reshape(-1, *tensor.shape[2:])


class CompactSqueezeBertForMultipleChoice(CompactSqueezeBertPreTrainedModel):
    """The encoder scoring each of `num_choices` candidates (inputs of shape (batch, num_choices, seq))."""

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__(config)
        self.transformer = CompactSqueezeBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MultipleChoiceModelOutput | tuple[torch.Tensor, ...]:
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        outputs = self.transformer(
            _merge_choices(input_ids, 2),
            attention_mask=_merge_choices(attention_mask, 2),
            token_type_ids=_merge_choices(token_type_ids, 2),
            position_ids=_merge_choices(position_ids, 2),
            inputs_embeds=_merge_choices(inputs_embeds, 3),
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompactSqueezeBertForTokenClassification(CompactSqueezeBertPreTrainedModel):
    """The encoder with a per-token linear classifier (named-entity recognition, tagging)."""

    # Upstream SqueezeBERT builds a pooler in every head; this head has none, so a checkpoint's pooler is skipped.
    _keys_to_ignore_on_load_unexpected = [r"pooler"]

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = CompactSqueezeBertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput | tuple[torch.Tensor, ...]:
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs[0]))
        loss = self.loss_function(logits, labels, self.config) if labels is not None else None
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompactSqueezeBertForQuestionAnswering(CompactSqueezeBertPreTrainedModel):
    """The encoder with a span head: start and end logits for extractive question answering."""

    # Upstream SqueezeBERT builds a pooler in every head; this head has none, so a checkpoint's pooler is skipped.
    _keys_to_ignore_on_load_unexpected = [r"pooler"]

    def __init__(self, config: CompactSqueezeBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = CompactSqueezeBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> QuestionAnsweringModelOutput | tuple[torch.Tensor, ...]:
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.qa_outputs(outputs[0])
        start_logits, end_logits = (part.squeeze(-1).contiguous() for part in logits.split(1, dim=-1))
        # Positions outside the input are clamped to its length and ignored.
        loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "CompactSqueezeBertForMaskedLM",
    "CompactSqueezeBertForMultipleChoice",
    "CompactSqueezeBertForQuestionAnswering",
    "CompactSqueezeBertForSequenceClassification",
    "CompactSqueezeBertForTokenClassification",
    "CompactSqueezeBertModel",
    "CompactSqueezeBertPreTrainedModel",
]
