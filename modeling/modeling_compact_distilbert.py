"""The compact_distilbert model: DistilBERT's architecture in transformers 5.x form.

Parameter names and shapes are DistilBERT's, so upstream `distilbert` checkpoints load as they are and give the same
numbers as transformers' `DistilBertModel`. This file is the reference computation, read top to bottom like
transformers' own modeling files; faster CPU inference kernels are attached from outside by
`hf_compact.kernels.optimize` and leave these numbers unchanged.

This file and `configuration_compact_distilbert.py` are copied next to every saved checkpoint, so they import only
torch, numpy, transformers and each other.
"""

import os
import shutil
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import get_activation
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.pytorch_utils import apply_chunking_to_forward
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_compact_distilbert import CompactDistilBertConfig


logger = logging.get_logger(__name__)

# Every head, so a folder saved as one head loads as any other with `trust_remote_code=True`.
AUTO_MAP = {
    "AutoConfig": "configuration_compact_distilbert.CompactDistilBertConfig",
    "AutoModel": "modeling_compact_distilbert.CompactDistilBertModel",
    "AutoModelForMaskedLM": "modeling_compact_distilbert.CompactDistilBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_compact_distilbert.CompactDistilBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_compact_distilbert.CompactDistilBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_compact_distilbert.CompactDistilBertForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_compact_distilbert.CompactDistilBertForMultipleChoice",
}


def sinusoidal_position_embeddings(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed sin/cos position vectors: even channels sin(pos / 10000^(2i/dim)), odd channels the cosine."""
    positions = np.arange(num_positions)[:, None]
    rates = np.power(10000, 2 * (np.arange(dim) // 2) / dim)
    angles = positions / rates
    table = np.zeros((num_positions, dim))
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


class CompactDistilBertEmbeddings(nn.Module):
    """Word plus position embeddings, LayerNorm, dropout. No token-type embeddings, as in DistilBERT."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = self.position_ids[:, : inputs_embeds.size(1)]
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


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


class CompactDistilBertSelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and an output projection."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.dim // config.n_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False

        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.dropout = nn.Dropout(p=config.attention_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        head_shape = (*input_shape, -1, self.head_dim)
        query = self.q_lin(hidden_states).view(head_shape).transpose(1, 2)
        key = self.k_lin(hidden_states).view(head_shape).transpose(1, 2)
        value = self.v_lin(hidden_states).view(head_shape).transpose(1, 2)

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
        output = self.out_lin(output.reshape(*input_shape, -1))
        return output, probabilities


class CompactDistilBertFFN(nn.Module):
    """Position-wise feed-forward: dim -> hidden_dim -> activation -> dim, dropout."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.activation = get_activation(config.activation)
        self.dropout = nn.Dropout(p=config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.chunk_size_feed_forward:
            return apply_chunking_to_forward(self.feed_forward, self.chunk_size_feed_forward, 1, hidden_states)
        return self.feed_forward(hidden_states)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.activation(self.lin1(hidden_states))))


class CompactDistilBertBlock(GradientCheckpointingLayer):
    """One post-LayerNorm transformer block: attention + residual + LayerNorm, FFN + residual + LayerNorm."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__()
        self.attention = CompactDistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.ffn = CompactDistilBertFFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _ = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
        hidden_states = self.sa_layer_norm(attention_output + hidden_states)
        return self.output_layer_norm(self.ffn(hidden_states) + hidden_states)


class CompactDistilBertTransformer(nn.Module):
    """The stack of blocks."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([CompactDistilBertBlock(config) for _ in range(config.n_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        for block in self.layer:
            hidden_states = block(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


class CompactDistilBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation, attention back-ends, and saving with the model code for `trust_remote_code`."""

    config: CompactDistilBertConfig
    config_class = CompactDistilBertConfig
    base_model_prefix = "distilbert"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": CompactDistilBertBlock,
        "attentions": CompactDistilBertSelfAttention,
    }

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, CompactDistilBertEmbeddings):
            if self.config.sinusoidal_pos_embds:
                table = sinusoidal_position_embeddings(self.config.max_position_embeddings, self.config.dim)
                init.copy_(module.position_embeddings.weight, table)
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus this model's code next to the weights and an `auto_map` naming
        every head, so the folder loads with `trust_remote_code=True` where hf_compact is not installed."""
        if kwargs.get("is_main_process", True):
            os.makedirs(save_directory, exist_ok=True)
            here = os.path.dirname(os.path.abspath(__file__))
            for name in ("configuration_compact_distilbert.py", "modeling_compact_distilbert.py"):
                shutil.copyfile(os.path.join(here, name), os.path.join(save_directory, name))
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_position_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.position_embeddings

    def resize_position_embeddings(self, new_num_position_embeddings: int):
        """Resize the encoder's position table from any head (`CompactDistilBertModel.resize_position_embeddings`)."""
        self.base_model.resize_position_embeddings(new_num_position_embeddings)


class CompactDistilBertModel(CompactDistilBertPreTrainedModel):
    """The bare encoder: embeddings and blocks, returning the last hidden state.

    `token_type_ids` is accepted for compatibility with BERT tokenizers and ignored: DistilBERT-style models have
    no segment embeddings (`hf_compact.convert_to_compact` folds a BERT teacher's segment-0 vector into the
    position embeddings).

    Example:

    ```python
    >>> import torch
    >>> from hf_compact import CompactDistilBertConfig, CompactDistilBertModel
    >>> model = CompactDistilBertModel(CompactDistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4))
    >>> model(torch.tensor([[5, 6, 7]])).last_hidden_state.shape
    torch.Size([1, 3, 32])
    ```
    """

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__(config)
        self.embeddings = CompactDistilBertEmbeddings(config)
        self.transformer = CompactDistilBertTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding):
        self.embeddings.word_embeddings = new_embeddings

    def resize_position_embeddings(self, new_num_position_embeddings: int):
        """Grow (new rows initialised, or sinusoidal) or shrink the position table to `new_num_position_embeddings`."""
        old = self.embeddings.position_embeddings.weight.detach()
        if new_num_position_embeddings == old.shape[0]:
            return
        self.config.max_position_embeddings = new_num_position_embeddings
        table = nn.Embedding(new_num_position_embeddings, self.config.dim).to(old.device, old.dtype)
        with torch.no_grad():
            if self.config.sinusoidal_pos_embds:
                table.weight.copy_(sinusoidal_position_embeddings(new_num_position_embeddings, self.config.dim))
            else:
                table.weight.normal_(0.0, self.config.initializer_range)
                keep = min(old.shape[0], new_num_position_embeddings)
                table.weight[:keep] = old[:keep]
        self.embeddings.position_embeddings = table
        self.embeddings.position_ids = torch.arange(new_num_position_embeddings, device=old.device).expand((1, -1))

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput | tuple[torch.Tensor, ...]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        embeddings = self.embeddings(input_ids, inputs_embeds, position_ids)
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embeddings, attention_mask=attention_mask
        )
        return self.transformer(embeddings, attention_mask, **kwargs)


class CompactDistilBertForMaskedLM(CompactDistilBertPreTrainedModel):
    """The encoder with DistilBERT's masked-language-modelling head (transform, activation, LayerNorm, projector)."""

    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__(config)
        self.activation = get_activation(config.activation)
        self.distilbert = CompactDistilBertModel(config)
        self.vocab_transform = nn.Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.vocab_projector = nn.Linear(config.dim, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.vocab_projector

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.vocab_projector = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput | tuple[torch.Tensor, ...]:
        outputs = self.distilbert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            return_dict=True,
            **kwargs,
        )
        hidden_states = self.vocab_layer_norm(self.activation(self.vocab_transform(outputs[0])))
        logits = self.vocab_projector(hidden_states)
        loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size) if labels is not None else None
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompactDistilBertForSequenceClassification(CompactDistilBertPreTrainedModel):
    """The encoder with a classification/regression head on the first token: pre_classifier, ReLU, dropout,
    classifier. Single-label, multi-label or regression as `config.problem_type` says."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = CompactDistilBertModel(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        outputs = self.distilbert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            return_dict=True,
            **kwargs,
        )
        pooled = self.dropout(self.activation(self.pre_classifier(outputs[0][:, 0])))
        logits = self.classifier(pooled)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompactDistilBertForTokenClassification(CompactDistilBertPreTrainedModel):
    """The encoder with a per-token linear classifier (named-entity recognition, tagging)."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = CompactDistilBertModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput | tuple[torch.Tensor, ...]:
        outputs = self.distilbert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs[0]))
        loss = self.loss_function(logits, labels, self.config) if labels is not None else None
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompactDistilBertForQuestionAnswering(CompactDistilBertPreTrainedModel):
    """The encoder with a span head: start and end logits for extractive question answering."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"num_labels={config.num_labels} is invalid for question answering: the span head has 2 outputs "
                "(start, end). Set num_labels=2."
            )
        self.distilbert = CompactDistilBertModel(config)
        self.qa_outputs = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> QuestionAnsweringModelOutput | tuple[torch.Tensor, ...]:
        outputs = self.distilbert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            return_dict=True,
            **kwargs,
        )
        logits = self.qa_outputs(self.dropout(outputs[0]))
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


def _merge_choices(tensor: torch.Tensor | None, dims: int) -> torch.Tensor | None:
    """(batch, num_choices, ...) -> (batch * num_choices, ...) for a tensor that has `dims` dimensions per example."""
    if tensor is None or tensor.dim() == dims:
        return tensor
    return tensor.reshape(-1, *tensor.shape[2:])


class CompactDistilBertForMultipleChoice(CompactDistilBertPreTrainedModel):
    """The encoder scoring each of `num_choices` candidates (inputs of shape (batch, num_choices, seq))."""

    def __init__(self, config: CompactDistilBertConfig):
        super().__init__(config)
        self.distilbert = CompactDistilBertModel(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, 1)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MultipleChoiceModelOutput | tuple[torch.Tensor, ...]:
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        outputs = self.distilbert(
            input_ids=_merge_choices(input_ids, 2),
            attention_mask=_merge_choices(attention_mask, 2),
            inputs_embeds=_merge_choices(inputs_embeds, 3),
            position_ids=_merge_choices(position_ids, 2),
            return_dict=True,
            **kwargs,
        )
        pooled = self.dropout(self.activation(self.pre_classifier(outputs[0][:, 0])))
        logits = self.classifier(pooled).view(-1, num_choices)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "CompactDistilBertForMaskedLM",
    "CompactDistilBertForMultipleChoice",
    "CompactDistilBertForQuestionAnswering",
    "CompactDistilBertForSequenceClassification",
    "CompactDistilBertForTokenClassification",
    "CompactDistilBertModel",
    "CompactDistilBertPreTrainedModel",
]
