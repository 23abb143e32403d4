"""The compact_squeezebert model: SqueezeBERT's architecture, computed channels-last, in transformers 5.x form.

Parameter names and shapes are SqueezeBERT's (the grouped projections keep `nn.Conv1d`'s (out, in / groups, 1)
weights), so upstream `squeezebert` checkpoints load as they are and give the same numbers as transformers'
`SqueezeBertModel`. Unlike upstream, activations stay in (batch, sequence, channels) layout from the embeddings to
the output: LayerNorm needs no permutes, and each grouped projection is one batched matrix multiply.

Inference on CPU (no autograd graph) takes fused kernels with the same numbers: q/k/v stay group-major so attention
runs on each group's whole heads with no copies, and when the intermediate and output projections have the same
groups the feed-forward runs as that many independent narrow ones. Few, large operations keep the time spent
synchronising threads low. Training, tracing and other devices take the reference computation.

This file and `configuration_compact_squeezebert.py` are copied next to every saved checkpoint, so they import only
torch, transformers and each other.
"""

import os
import shutil
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN, GELUActivation
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


def _runs_inference_kernels(hidden_states: torch.Tensor, *modules: nn.Module) -> bool:
    """Whether the copy-free inference kernels may compute `modules` on `hidden_states`.

    They write into preallocated buffers and update them in place, which autograd cannot record, so they run only
    when no graph is being built (`torch.no_grad`, `torch.inference_mode`, or nothing that requires grad), on CPU
    tensors whose dtype matches the weights, outside autocast, tracing and compilation. Everything else takes the
    reference path, which computes the same numbers.
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


# Inference on at most this many tokens (batch x sequence) splits one-group projections into column blocks.
COLUMN_BLOCK_MAX_TOKENS = 128


def _column_blocks(tokens: int, units: int) -> int:
    """Into how many column blocks inference splits a one-group projection of `tokens` tokens (1: a plain matrix
    multiply).

    BLAS shares a matrix multiply with few rows (one short text, or a batch of one) out poorly over threads. Cut into
    column blocks that one batched matrix multiply computes, each thread takes whole blocks
    (`benchmarks/column_blocks.py` measures the gain, and where it stops). Each output is still one dot
    product over all the inputs, equal to the plain path to float rounding. Blocks hold whole `units` (output
    channels, or heads for q/k/v); there are twice as many as threads where `units` allows. One thread, or more
    tokens than `COLUMN_BLOCK_MAX_TOKENS`, keeps the plain matrix multiply. Projections with several groups are
    batched matrix multiplies over their groups already.
    """
    threads = torch.get_num_threads()
    if threads < 2 or tokens > COLUMN_BLOCK_MAX_TOKENS:
        return 1
    divisors = [blocks for blocks in range(threads, units + 1) if units % blocks == 0]
    enough = [blocks for blocks in divisors if blocks >= 2 * threads]
    return enough[0] if enough else (divisors[-1] if divisors else 1)


class CompactSqueezeBertGroupedConv(nn.Conv1d):
    """A grouped 1x1 convolution applied to channels-last input: (batch, seq, in) -> (batch, seq, out).

    It keeps `nn.Conv1d`'s parameters and their (out, in / groups, 1) layout, so SqueezeBERT checkpoints load into it
    and PEFT adapts it as a convolution (PEFT builds its LoRA factors with this same class). Two computations give the
    same numbers on the channels-last tensors the rest of the model keeps:

    - inference (no autograd graph, CPU): `inference_forward`, which reads the input without copying it and can
      fold a residual addition into the same pass;
    - otherwise (training, tracing, other devices): `reference_forward`, one batched matrix multiply over the
      groups (a plain one when `groups == 1`), differentiable.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, *args, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, *args, **kwargs)
        if self.kernel_size != (1,) or self.stride != (1,) or self.padding not in ((0,), "valid"):
            raise ValueError(
                f"{type(self).__name__} is a 1x1 projection; got kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}."
            )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _runs_inference_kernels(hidden_states, self):
            return self.inference_forward(hidden_states)
        return self.reference_forward(hidden_states)

    def reference_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The differentiable computation: a batched matrix multiply over the groups (plain when `groups == 1`)."""
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

    def inference_forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The projection, plus `residual` when given, for inference: records no autograd graph (use it under
        `torch.no_grad()` / `torch.inference_mode()`).

        With several groups, one batched matrix multiply reads the input through a strided (groups, tokens,
        in / groups) view, and its group-major result is added to the bias (and residual) in the same pass that lays
        it out channels-last. One group on few tokens is computed the same way in column blocks (see
        `_column_blocks`); otherwise the matrix multiply accumulates straight into the residual plus bias.
        """
        *leading, channels_in = hidden_states.shape
        inputs = hidden_states.reshape(-1, channels_in)
        rows = inputs.shape[0]
        if residual is not None:
            residual = residual.reshape(rows, self.out_channels)
            start = residual + self.bias if self.bias is not None else residual.clone()
        parts = self.groups if self.groups > 1 else _column_blocks(rows, self.out_channels)
        if parts == 1:
            weight = self.weight.view(self.out_channels, channels_in)
            output = F.linear(inputs, weight, self.bias) if residual is None else start.addmm_(inputs, weight.t())
            return output.view(*leading, self.out_channels)
        out_per_part = self.out_channels // parts
        projected = torch.bmm(*self.split(inputs, parts)).transpose(0, 1)  # (tokens, parts, out / parts), a view
        if residual is not None:
            output = start.view(rows, parts, out_per_part).add_(projected)
        elif self.bias is not None:
            output = torch.add(projected, self.bias.view(parts, out_per_part), out=inputs.new_empty(projected.shape))
        else:
            output = projected.contiguous()
        return output.view(*leading, self.out_channels)

    def split(self, inputs: torch.Tensor, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (parts, tokens, in) inputs and (parts, in, out / parts) weights of one batched matrix multiply whose
        entry `k` is output channels `k * out / parts` onwards of this projection of 2-d `inputs`, for inference.

        With several groups the parts are the groups, each reading its own input channels (a strided view of
        `inputs`); with one group they are `parts` column blocks, each reading all of `inputs` (a stride-0 view).
        """
        rows, channels_in = inputs.shape
        if self.groups > 1:
            if parts != self.groups:
                raise ValueError(f"A projection with {self.groups} groups splits into its groups, not {parts} parts.")
            per_group = channels_in // parts
            shared_or_grouped = inputs.view(rows, parts, per_group).transpose(0, 1)
        else:
            per_group = channels_in
            shared_or_grouped = inputs.expand(parts, rows, channels_in)
        weight = self.weight.view(parts, self.out_channels // parts, per_group).transpose(1, 2)
        return shared_or_grouped, weight


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
        if self._attends_by_group(hidden_states):
            return self._grouped_attention(hidden_states, attention_mask, **kwargs)
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

    def _attends_by_group(self, hidden_states: torch.Tensor) -> bool:
        """Whether `_grouped_attention` may run: inference, eager or sdpa attention, plain q/k/v projections with the
        same groups, biases, and whole heads in every group."""
        projections = (self.query, self.key, self.value)
        return (
            self.config._attn_implementation in ("eager", "sdpa")
            and not (self.training and self.dropout.p > 0)
            and all(_is_plain(p, CompactSqueezeBertGroupedConv) for p in projections)
            and all(p.groups == self.query.groups and p.bias is not None for p in projections)
            and self.config.num_attention_heads % self.query.groups == 0
            and _runs_inference_kernels(hidden_states, *projections)
        )

    def _head_parts(self, tokens: int) -> int:
        """The parts `_grouped_attention` computes q, k and v in: their groups, or for one group a number of column
        blocks of whole heads (1 on many tokens or one thread; see `_column_blocks`)."""
        groups = self.query.groups
        return groups if groups > 1 else _column_blocks(tokens, self.config.num_attention_heads)

    def _grouped_attention(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention for inference, with each group of q/k/v channels kept as its own batch entry.

        Each of q, k and v is one batched matrix multiply over the groups, reading the input through a strided view
        (no copy) and leaving group `k`'s channels as batch entry `k` (one group on few tokens: column blocks of
        whole heads, read from a stride-0 view of the input). The heads of a group are whole heads, so attention runs
        on them as `groups * batch` sequences of `heads / groups` heads, straight from those products' outputs. Only
        the result is rearranged, once, back to (batch, seq, channels).
        """
        batch, length, channels = hidden_states.shape
        inputs = hidden_states.reshape(batch * length, channels)
        groups = self._head_parts(batch * length)
        per_group = channels // groups
        head_shape = (groups * batch, length, per_group // self.head_dim, self.head_dim)
        query, key, value = (
            torch.baddbmm(projection.bias.view(groups, 1, per_group), *projection.split(inputs, groups))
            .view(head_shape)
            .transpose(1, 2)  # (g * batch, heads / g, seq, head_dim)
            for projection in (self.query, self.key, self.value)
        )
        if attention_mask is not None:  # (batch, 1 or heads, q, k) -> (g * batch, 1 or heads / g, q, k)
            mask_heads = attention_mask.shape[1]
            attention_mask = attention_mask.expand(batch, *attention_mask.shape[1:])
            attention_mask = attention_mask.reshape(batch, min(mask_heads, groups), -1, *attention_mask.shape[2:])
            attention_mask = attention_mask.transpose(0, 1).expand(groups, -1, -1, -1, -1)
            attention_mask = attention_mask.reshape(groups * batch, *attention_mask.shape[2:])

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, probabilities = attention_interface(
            self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
        )
        # (g * batch, seq, heads / g, head_dim) -> (batch, seq, channels)
        output = output.reshape(groups, batch * length, per_group).transpose(0, 1).reshape(batch, length, channels)
        if probabilities is not None:  # (g * batch, heads / g, q, k) -> (batch, heads, q, k)
            probabilities = probabilities.reshape(groups, batch, -1, length, probabilities.shape[-1])
            probabilities = probabilities.transpose(0, 1).reshape(batch, -1, length, probabilities.shape[-1])
        return output, probabilities


class CompactSqueezeBertConvDropoutLayerNorm(nn.Module):
    """Grouped projection, dropout, residual, LayerNorm."""

    def __init__(self, channels_in: int, channels_out: int, groups: int, config: CompactSqueezeBertConfig):
        super().__init__()
        self.conv1d = CompactSqueezeBertGroupedConv(channels_in, channels_out, 1, groups=groups)
        self.layernorm = nn.LayerNorm(channels_out, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if (
            not (self.training and self.dropout.p > 0)
            and _is_plain(self.conv1d, CompactSqueezeBertGroupedConv)
            and _runs_inference_kernels(hidden_states, self.conv1d)
            and not (torch.is_grad_enabled() and residual.requires_grad)
        ):
            # The residual and the bias are the matrix multiplies' starting value: no separate addition pass.
            return self.layernorm(self.conv1d.inference_forward(hidden_states, residual=residual))
        return self.layernorm(self.dropout(self.conv1d(hidden_states)) + residual)


class CompactSqueezeBertConvActivation(nn.Module):
    """Grouped projection followed by the activation."""

    def __init__(self, channels_in: int, channels_out: int, groups: int, activation: str):
        super().__init__()
        self.conv1d = CompactSqueezeBertGroupedConv(channels_in, channels_out, 1, groups=groups)
        self.act = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        conv = self.conv1d
        if _is_plain(conv, CompactSqueezeBertGroupedConv) and _runs_inference_kernels(hidden_states, conv):
            return _activation_in_place(self.act, conv.inference_forward(hidden_states))
        return self.act(self.conv1d(hidden_states))


# Tokens per step of the fused grouped feed-forward: bounds its (tokens, intermediate) scratch activations
# (12 MiB in fp32 at intermediate 3072), so large batches reuse memory instead of mapping fresh pages every layer.
FEED_FORWARD_ROWS = 1024


def _grouped_feed_forward(
    hidden_states: torch.Tensor,
    intermediate: CompactSqueezeBertConvActivation,
    output: CompactSqueezeBertConvDropoutLayerNorm,
    rows_per_step: int | None = None,
) -> torch.Tensor:
    """`output(intermediate(hidden_states), hidden_states)` for inference, when both projections have the same groups.

    Group `k` of the output projection reads only group `k` of the intermediate activations, which come only from
    group `k` of the input: the feed-forward is `groups` independent narrow ones. Each step of `rows_per_step` tokens
    runs them all as two batched matrix multiplies over the groups, reading the input through a strided view and
    keeping the intermediate activations group-major (no copies, activation in place); the result is added to the
    residual plus bias in one pass. With one group and few tokens, both projections run in column blocks instead
    (see `_column_blocks`), the intermediate activations laid out channels-last between them.
    """
    rows_per_step = rows_per_step or FEED_FORWARD_ROWS
    channels = hidden_states.shape[-1]
    inputs = hidden_states.reshape(-1, channels)
    up, down = intermediate.conv1d, output.conv1d
    groups = up.groups
    result = inputs + down.bias if down.bias is not None else inputs.clone()
    rows = inputs.shape[0]
    blocks = _column_blocks(rows, up.out_channels) if groups == 1 and rows <= rows_per_step else 1
    if blocks > 1:
        shared, block_weight = up.split(inputs, blocks)
        if up.bias is None:
            middle = torch.bmm(shared, block_weight)
        else:
            middle = torch.baddbmm(up.bias.view(blocks, 1, -1), shared, block_weight)
        middle = _activation_in_place(intermediate.act, middle).transpose(0, 1).reshape(rows, up.out_channels)
        blocks = _column_blocks(rows, channels)
        result.view(rows, blocks, -1).add_(torch.bmm(*down.split(middle, blocks)).transpose(0, 1))
        return output.layernorm(result.view_as(hidden_states))
    in_per_group = channels // groups
    mid_per_group = up.out_channels // groups
    up_weight = up.weight.view(groups, mid_per_group, in_per_group).transpose(1, 2)
    down_weight = down.weight.view(groups, in_per_group, mid_per_group).transpose(1, 2)
    for start in range(0, rows, rows_per_step):
        grouped = inputs[start : start + rows_per_step].view(-1, groups, in_per_group).transpose(0, 1)
        if up.bias is None:
            middle = torch.bmm(grouped, up_weight)
        else:
            middle = torch.baddbmm(up.bias.view(groups, 1, mid_per_group), grouped, up_weight)
        projected = torch.bmm(_activation_in_place(intermediate.act, middle), down_weight)  # (g, rows, C/g)
        result[start : start + rows_per_step].view(-1, groups, in_per_group).add_(projected.transpose(0, 1))
    return output.layernorm(result.view_as(hidden_states))


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
        if self._fuses_feed_forward(hidden_states):
            return _grouped_feed_forward(hidden_states, self.intermediate, self.output)
        return self.output(self.intermediate(hidden_states), hidden_states)

    def _fuses_feed_forward(self, hidden_states: torch.Tensor) -> bool:
        """Whether the feed-forward may run as independent per-group feed-forwards (see `_grouped_feed_forward`)."""
        intermediate, output = self.intermediate, self.output
        return (
            not (self.training and output.dropout.p > 0)
            and _is_plain(intermediate, CompactSqueezeBertConvActivation)
            and _is_plain(output, CompactSqueezeBertConvDropoutLayerNorm)
            and _is_plain(intermediate.conv1d, CompactSqueezeBertGroupedConv)
            and _is_plain(output.conv1d, CompactSqueezeBertGroupedConv)
            and intermediate.conv1d.groups == output.conv1d.groups
            and _runs_inference_kernels(hidden_states, intermediate, output)
        )


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
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.view(-1))
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
            return nn.MSELoss()(logits.squeeze(), labels.squeeze())
        return nn.MSELoss()(logits, labels)
    if config.problem_type == "single_label_classification":
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    return nn.BCEWithLogitsLoss()(logits, labels)


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
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
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
        loss = CrossEntropyLoss()(logits, labels) if labels is not None else None
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
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
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


__all__ = [
    "CompactSqueezeBertForMaskedLM",
    "CompactSqueezeBertForMultipleChoice",
    "CompactSqueezeBertForQuestionAnswering",
    "CompactSqueezeBertForSequenceClassification",
    "CompactSqueezeBertForTokenClassification",
    "CompactSqueezeBertModel",
    "CompactSqueezeBertPreTrainedModel",
]
