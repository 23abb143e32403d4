"""The compact_distilbert model: DistilBERT's architecture in transformers 5.x form.

Parameter names and shapes are DistilBERT's, so upstream `distilbert` checkpoints load as they are and give the same
numbers as transformers' `DistilBertModel`. Inference on CPU (no autograd graph) runs the feed-forward with its
activation in place and its residual folded into the second matrix multiply, and, for few tokens on several threads,
splits every projection into column blocks computed by one batched matrix multiply (see `_column_blocks`).

This file and `configuration_compact_distilbert.py` are copied next to every saved checkpoint, so they import only
torch, numpy, transformers and each other.
"""

import os
import shutil
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import initialization as init
from transformers.activations import GELUActivation, get_activation
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


def _runs_inference_kernels(hidden_states: torch.Tensor, *modules: nn.Module) -> bool:
    """Whether the fused inference kernels may compute `modules` on `hidden_states`.

    They update buffers in place, which autograd cannot record, so they run only when no graph is being built
    (`torch.no_grad`, `torch.inference_mode`, or nothing that requires grad), on CPU tensors whose dtype matches the
    weights, outside autocast, tracing and compilation. Everything else takes the reference path, which computes the
    same numbers.
    """
    if hidden_states.device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    grad_enabled = torch.is_grad_enabled()
    if grad_enabled and hidden_states.requires_grad:
        return False
    for module in modules:
        for parameter in module.parameters():
            if parameter.dtype != hidden_states.dtype or parameter.device.type != "cpu":
                return False
            if grad_enabled and parameter.requires_grad:
                return False
    return True


def _is_plain(module: nn.Module, cls: type) -> bool:
    """True when `module` is exactly `cls`, with no hooks or patched forward that calling it would run (adapters,
    offloading, quantization wrap or replace modules this way), so its computation may be fused into a neighbour's."""
    return (
        type(module) is cls
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and "forward" not in vars(module)
    )


def _activation_in_place(activation: Callable, hidden_states: torch.Tensor) -> torch.Tensor:
    """`activation(hidden_states)` for a tensor nothing else holds: in place for the exact GELU and ReLU, which have
    in-place kernels with the same numbers, out of place for any other activation."""
    if type(activation) is GELUActivation and getattr(activation, "act", None) is F.gelu:
        return torch.ops.aten.gelu_(hidden_states)
    if type(activation) is nn.ReLU:
        return torch.relu_(hidden_states)
    return activation(hidden_states)


# Inference on at most this many tokens (batch x sequence) splits its projections into column blocks.
COLUMN_BLOCK_MAX_TOKENS = 128


def _column_blocks(tokens: int, units: int) -> int:
    """Into how many column blocks inference splits a projection of `tokens` tokens (1: a plain matrix multiply).

    BLAS shares a matrix multiply with few rows (one short text, or a batch of one) out poorly over threads. Cut into
    column blocks that one batched matrix multiply computes, each thread takes whole blocks
    (`benchmarks/column_blocks.py` measures the gain, and where it stops). Each output is still one dot product over
    all the inputs, equal to the plain path to float rounding. Blocks hold whole `units` (output features, or heads
    for q/k/v); there are twice as many as threads where `units` allows. One thread, or more tokens than
    `COLUMN_BLOCK_MAX_TOKENS`, keeps the plain matrix multiply.
    """
    threads = torch.get_num_threads()
    if threads < 2 or tokens > COLUMN_BLOCK_MAX_TOKENS:
        return 1
    divisors = [blocks for blocks in range(threads, units + 1) if units % blocks == 0]
    enough = [blocks for blocks in divisors if blocks >= 2 * threads]
    return enough[0] if enough else (divisors[-1] if divisors else 1)


def _column_block_products(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, blocks: int
) -> torch.Tensor:
    """`F.linear(inputs, weight, bias)` for 2-d `inputs`, computed and returned block-major:
    (blocks, tokens, out_features / blocks), entry `k` holding output features `k * out_features / blocks` onwards.

    One batched matrix multiply whose every entry reads all of `inputs` (a stride-0 view, no copy)."""
    tokens, features = inputs.shape
    per_block = weight.shape[0] // blocks
    shared = inputs.expand(blocks, tokens, features)
    weight = weight.view(blocks, per_block, features).transpose(1, 2)
    if bias is None:
        return torch.bmm(shared, weight)
    return torch.baddbmm(bias.view(blocks, 1, per_block), shared, weight)


def _rows(block_major: torch.Tensor) -> torch.Tensor:
    """(blocks, tokens, features / blocks) -> (tokens, features): the layout `F.linear` returns (one copy)."""
    blocks, tokens, per_block = block_major.shape
    return block_major.transpose(0, 1).reshape(tokens, blocks * per_block)


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
        blocks = self._head_blocks(hidden_states)
        if blocks > 1:
            return self._attention_in_head_blocks(hidden_states, attention_mask, blocks, **kwargs)
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

    def _head_blocks(self, hidden_states: torch.Tensor) -> int:
        """How many blocks of whole heads `_attention_in_head_blocks` splits the projections into, or 1 where it may
        not run (training with dropout, adapters or hooks on the projections, other attention back-ends, many
        tokens, one thread)."""
        projections = (self.q_lin, self.k_lin, self.v_lin, self.out_lin)
        if (
            self.config._attn_implementation not in ("eager", "sdpa")
            or (self.training and self.dropout.p > 0)
            or not all(_is_plain(projection, nn.Linear) for projection in projections)
            or not _runs_inference_kernels(hidden_states, *projections)
        ):
            return 1
        return _column_blocks(hidden_states.shape[0] * hidden_states.shape[1], self.config.n_heads)

    def _attention_in_head_blocks(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        blocks: int,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention for inference on few tokens, with q, k and v each computed as `blocks` column blocks of
        whole heads (see `_column_blocks`).

        Block `k` of q, k and v holds the same heads, so attention runs on the blocks as `blocks * batch` sequences of
        `heads / blocks` heads, straight from the batched products' outputs. Only the result is rearranged, once,
        back to (batch, seq, channels) for the output projection. (compact_squeezebert's grouped attention lays its
        groups out the same way; each modeling file stands alone, as it is copied next to every checkpoint.)
        """
        batch, length, channels = hidden_states.shape
        tokens = batch * length
        inputs = hidden_states.reshape(tokens, channels)
        per_block = channels // blocks
        head_shape = (blocks * batch, length, per_block // self.head_dim, self.head_dim)
        query, key, value = (
            _column_block_products(inputs, projection.weight, projection.bias, blocks)
            .view(head_shape)
            .transpose(1, 2)  # (blocks * batch, heads / blocks, seq, head_dim)
            for projection in (self.q_lin, self.k_lin, self.v_lin)
        )
        if attention_mask is not None:  # (batch, 1 or heads, q, k) -> (blocks * batch, 1 or heads / blocks, q, k)
            mask_heads = attention_mask.shape[1]
            attention_mask = attention_mask.expand(batch, *attention_mask.shape[1:])
            attention_mask = attention_mask.reshape(batch, min(mask_heads, blocks), -1, *attention_mask.shape[2:])
            attention_mask = attention_mask.transpose(0, 1).expand(blocks, -1, -1, -1, -1)
            attention_mask = attention_mask.reshape(blocks * batch, *attention_mask.shape[2:])

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, probabilities = attention_interface(
            self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
        )
        # (blocks * batch, seq, heads / blocks, head_dim) -> (tokens, channels)
        output = _rows(output.reshape(blocks, tokens, per_block))
        out_blocks = _column_blocks(tokens, self.out_lin.out_features)
        output = _rows(_column_block_products(output, self.out_lin.weight, self.out_lin.bias, out_blocks))
        if probabilities is not None:  # (blocks * batch, heads / blocks, q, k) -> (batch, heads, q, k)
            probabilities = probabilities.reshape(blocks, batch, -1, length, probabilities.shape[-1])
            probabilities = probabilities.transpose(0, 1).reshape(batch, -1, length, probabilities.shape[-1])
        return output.view(batch, length, -1), probabilities


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


def _feed_forward_plus_residual(ffn: CompactDistilBertFFN, hidden_states: torch.Tensor) -> torch.Tensor:
    """`ffn(hidden_states) + hidden_states` for inference: the activation runs in place on the intermediate
    activations, and the second matrix multiply accumulates into the residual plus its bias (no separate addition
    pass). For few tokens on several threads both matrix multiplies run in column blocks (see `_column_blocks`)."""
    channels = hidden_states.shape[-1]
    inputs = hidden_states.reshape(-1, channels)
    tokens = inputs.shape[0]
    up, down = ffn.lin1, ffn.lin2
    result = inputs + down.bias if down.bias is not None else inputs.clone()
    up_blocks = _column_blocks(tokens, up.out_features)
    if up_blocks == 1:
        middle = _activation_in_place(ffn.activation, F.linear(inputs, up.weight, up.bias))
        return result.addmm_(middle, down.weight.t()).view_as(hidden_states)
    middle = _rows(_activation_in_place(ffn.activation, _column_block_products(inputs, up.weight, up.bias, up_blocks)))
    down_blocks = _column_blocks(tokens, down.out_features)
    projected = _column_block_products(middle, down.weight, None, down_blocks)
    result.view(tokens, down_blocks, -1).add_(projected.transpose(0, 1))
    return result.view_as(hidden_states)


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
        if self._fuses_feed_forward(hidden_states):
            return self.output_layer_norm(_feed_forward_plus_residual(self.ffn, hidden_states))
        return self.output_layer_norm(self.ffn(hidden_states) + hidden_states)

    def _fuses_feed_forward(self, hidden_states: torch.Tensor) -> bool:
        """Whether the feed-forward and its residual may run as `_feed_forward_plus_residual`."""
        ffn = self.ffn
        return (
            _is_plain(ffn, CompactDistilBertFFN)
            and not ffn.chunk_size_feed_forward
            and not (self.training and ffn.dropout.p > 0)
            and _is_plain(ffn.lin1, nn.Linear)
            and _is_plain(ffn.lin2, nn.Linear)
            and _runs_inference_kernels(hidden_states, ffn)
        )


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
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, logits.size(-1)), labels.view(-1))
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


def sequence_classification_loss(config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE) loss, as `config.problem_type` says; the
    problem type is inferred from `num_labels` and the label dtype when it is not set."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return MSELoss()(logits.squeeze(), labels.squeeze())
        return MSELoss()(logits, labels)
    if config.problem_type == "single_label_classification":
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    return BCEWithLogitsLoss()(logits, labels)


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
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
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
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
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
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions outside the input are clamped here and ignored
            start_positions = start_positions.view(-1).clamp(0, ignored)
            end_positions = end_positions.view(-1).clamp(0, ignored)
            loss_fct = CrossEntropyLoss(ignore_index=ignored)
            loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
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
        loss = CrossEntropyLoss()(logits, labels) if labels is not None else None
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
