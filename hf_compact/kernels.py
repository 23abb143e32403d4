"""CPU inference kernels for the compact models, attached from outside and chosen per machine by measurement.

The modeling files are the reference computation. The kernels here compute the same numbers (to float rounding) with
fewer, larger operations: grouped projections run as one batched matrix multiply written straight into the layout
the next step reads, the bias, residual and activation fused into it; q, k and v stay group-major so attention runs
on each group's heads with no copies; for few tokens on several threads, projections split into column blocks
that one batched matrix multiply shares out between the threads; a whole SqueezeBERT-style layer can run in
SqueezeBERT's own (batch, channels, seq) layout, its projections as the grouped convolutions they are; projections
can run on oneDNN's inner product (`onednn_projection`, the activation or residual fused into it, on a copy of the
weights packed once into oneDNN's own layout) instead of the BLAS library behind `F.linear` and `torch.bmm`, which
on some CPUs takes a slower vector path; and attention can run as two
matrix multiplies around a float32 softmax (`matmul_softmax_attention`) instead of the configured implementation's
kernel, which for short sequences, or in bfloat16, can be the slower one.

Which of them is faster depends on the CPU, its BLAS and the shape of the input, so none is assumed to win:

- `optimize(model)` replaces the `forward` of each attention and layer module of a compact model by a dispatcher
  (nothing else is changed); `restore(model)` puts the original forwards back, and `optimized(model)` does both
  around a block. A loaded model is not optimized until one of them is called.
- The dispatcher runs a kernel only for inference on CPU (no autograd graph, no autocast, tracing or compilation,
  weights in the input's dtype, no dropout) and only where the kernel fits the module: projections of the exact
  classes with no hooks or adapters (PEFT, offloading and quantization wrap modules that way), eager or sdpa
  attention. Everything else runs the module's own forward.
- The first call for a shape class (module type and sizes, dtype, batch and sequence length rounded up to a power of
  two) times the reference forward against every kernel that fits, on the call's own inputs, interleaved, and keeps
  a kernel only if its fastest round beats the reference's by `margin` (other work on the machine only ever adds
  time, so the fastest round is the steadiest measure of what the CPU can do); a kernel that loses on this CPU is
  never used here.
  The choice is stored per machine (CPU model and flags, torch version, thread count) and version of this module's
  code in a JSON file,
  `$HF_COMPACT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/hf_compact/kernels.json` (`~/.cache/hf_compact/kernels.json`).

```python
>>> import torch
>>> from hf_compact import CompactSqueezeBertConfig, CompactSqueezeBertModel
>>> from hf_compact.kernels import optimized
>>> config = CompactSqueezeBertConfig(vocab_size=99, hidden_size=32, embedding_size=32, num_hidden_layers=2,
...                                   num_attention_heads=4, intermediate_size=64)
>>> model = CompactSqueezeBertModel(config).eval()
>>> with optimized(model), torch.inference_mode():  # doctest: +SKIP
...     hidden = model(torch.tensor([[5, 6, 7]])).last_hidden_state
```
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import GELUActivation
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging

from .io import write_json_atomic


logger = logging.get_logger(__name__)

CACHE_ENV = "HF_COMPACT_KERNEL_CACHE"
REFERENCE = "reference"
# Tokens per step of the grouped feed-forward: bounds its (tokens, intermediate) scratch activations, so large
# batches reuse memory instead of mapping fresh pages every layer.
FEED_FORWARD_ROWS = 1024
_DISPATCH = "_hf_compact_kernel_dispatch"

try:  # the output collector of `output_hidden_states` / `output_attentions`; timing runs must not feed it
    from transformers.utils.output_capturing import _active_collector
except ImportError:  # pragma: no cover - other transformers releases
    _active_collector = None


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


def is_plain(module: nn.Module, cls: type | str) -> bool:
    """True when `module` is exactly `cls`, with no hooks or replaced forward that calling it would run (adapters,
    offloading and quantization wrap or replace modules this way), so a kernel may compute it inline.

    The compact models' classes are matched by name, so models loaded with `trust_remote_code=True` (their classes
    come from the copy of the modeling file saved beside the weights) take the kernels too."""
    return (
        (type(module) is cls if isinstance(cls, type) else type(module).__name__ == cls)
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and "forward" not in vars(module)
    )


def column_blocks(units: int, threads: int | None = None) -> int:
    """Into how many column blocks of whole `units` (output channels, or heads) a projection splits so that each of
    `threads` threads takes whole blocks: twice as many blocks as threads where `units` allows, else the divisor of
    `units` nearest above the thread count, else one block per unit."""
    threads = threads or torch.get_num_threads()
    divisors = [blocks for blocks in range(max(threads, 2), units + 1) if units % blocks == 0]
    enough = [blocks for blocks in divisors if blocks >= 2 * threads]
    return enough[0] if enough else (divisors[-1] if divisors else 1)


def activation_in_place(activation: Callable, hidden_states: torch.Tensor) -> torch.Tensor:
    """`activation(hidden_states)` for a tensor nothing else holds: in place for the exact GELU and ReLU, which have
    in-place kernels with the same numbers, out of place for any other activation."""
    if type(activation) is GELUActivation and getattr(activation, "act", None) is F.gelu:
        return torch.ops.aten.gelu_(hidden_states)
    if type(activation) is nn.ReLU:
        return torch.relu_(hidden_states)
    return activation(hidden_states)


def block_major(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int, parts: int
) -> torch.Tensor:
    """A projection of 2-d `inputs` by `weight` ((out, in / groups) or a conv's (out, in / groups, 1)), computed by
    one batched matrix multiply and returned block-major: (parts, tokens, out / parts).

    With several groups the parts are the groups (`parts == groups`), each reading its own input channels through a
    strided view; with one group they are column blocks, each reading all of `inputs` through a stride-0 view."""
    rows, channels_in = inputs.shape
    out_channels = weight.shape[0]
    if groups > 1:
        if parts != groups:
            raise ValueError(f"A projection with {groups} groups splits into its groups, not {parts} parts.")
        per_part_in = channels_in // groups
        shared_or_grouped = inputs.view(rows, groups, per_part_in).transpose(0, 1)
    else:
        per_part_in = channels_in
        shared_or_grouped = inputs.expand(parts, rows, channels_in)
    weight = weight.reshape(parts, out_channels // parts, per_part_in).transpose(1, 2)
    if bias is None:
        return torch.bmm(shared_or_grouped, weight)
    return torch.baddbmm(bias.view(parts, 1, -1), shared_or_grouped, weight)


def project(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int = 1,
    parts: int = 1,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """(tokens, out) = the projection of 2-d `inputs` (see `block_major`), plus `residual` when given.

    One part is a plain matrix multiply that, with a residual, accumulates straight into residual plus bias; several
    parts are one batched matrix multiply whose block-major result is laid out channels-last in the same pass that
    adds it to the residual plus bias."""
    rows = inputs.shape[0]
    out_channels = weight.shape[0]
    start = None
    if residual is not None:
        start = residual + bias if bias is not None else residual.clone()
    if parts == 1 and groups == 1:
        weight = weight.view(out_channels, -1)
        return F.linear(inputs, weight, bias) if start is None else start.addmm_(inputs, weight.t())
    if start is None:
        return block_major(inputs, weight, bias, groups, parts).transpose(0, 1).reshape(rows, out_channels)
    projected = block_major(inputs, weight, None, groups, parts).transpose(0, 1)
    return start.view(rows, parts, -1).add_(projected).view(rows, out_channels)


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's inner product as an operator (`torch.ops.mkldnn._linear_pointwise`, the
    one torch's CPU compiler backend emits, with `_reorder_linear_weight` for its weights): x86 builds with oneDNN
    do."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def onednn_fits(module: nn.Module) -> bool:
    """Whether oneDNN's inner product can compute `module`'s projections: float32, or bfloat16 where this CPU has
    oneDNN's bfloat16 path (float16 and float64 have none on most CPUs)."""
    parameter = next(module.parameters(), None)  # none where the projections are quantised modules
    if parameter is None or not onednn_available():
        return False
    dtype = parameter.dtype
    if dtype == torch.bfloat16:
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return supported is not None and supported()
    return dtype == torch.float32


def _fused_activation(activation: Callable | None) -> tuple[str, str] | None:
    """oneDNN's post-op (name, algorithm) computing `activation` in the projection's own pass, if it has one."""
    if type(activation) is GELUActivation and getattr(activation, "act", None) is F.gelu:
        return "gelu", "none"
    if type(activation) is nn.ReLU:
        return "relu", ""
    return None


def _onednn_linear(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    fused: tuple[str, str] | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`rows @ weight.T + bias`, then the fused activation or plus `residual`, as one oneDNN inner product."""
    linear = torch.ops.mkldnn._linear_pointwise
    if residual is not None:
        return linear.binary(rows, residual, weight, bias, "add")
    return linear(rows, weight, bias, *(fused[0], [], fused[1]) if fused else ("none", [], ""))


def _group_slices(projection: nn.Module, group: int, groups: int) -> tuple[slice, slice]:
    """The (input channels, output channels) of one group of `projection` (weight (out, in / groups[, 1]))."""
    per_in, per_out = projection.weight.shape[1], projection.weight.shape[0] // groups
    return slice(group * per_in, (group + 1) * per_in), slice(group * per_out, (group + 1) * per_out)


def onednn_projection(
    inputs: torch.Tensor,
    projection: nn.Module,
    activation: Callable | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """(tokens, out) = `activation(projection(inputs))`, or `projection(inputs) + residual`, of 2-d `inputs` by
    oneDNN's inner product, with the activation or the residual added in the same pass where oneDNN has a post-op.

    `projection` is an `nn.Linear` or a grouped 1x1 convolution; a grouped one runs as one inner product per group,
    each reading its input channels through a strided view and writing its output channels."""
    groups = getattr(projection, "groups", 1)
    fused = _fused_activation(activation) if residual is None else None
    weights = onednn_weights(projection, (projection,))
    if groups == 1:
        output = _onednn_linear(inputs, *weights[0], fused, residual)
    else:
        output = inputs.new_empty(inputs.shape[0], projection.weight.shape[0])
        for group, (weight, bias) in enumerate(weights):
            channels_in, channels_out = _group_slices(projection, group, groups)
            output[:, channels_out] = _onednn_linear(
                inputs[:, channels_in], weight, bias, fused,
                residual[:, channels_out] if residual is not None else None,
            )
    if activation is not None and fused is None:
        output = activation_in_place(activation, output)
    return output


ONEDNN_PACKING_ROWS = 128
"""The row count (tokens) for which the oneDNN kernels lay out their weights: oneDNN packs a weight into the blocked
layout its inner product prefers for this many rows; products with other row counts give the same numbers."""

_onednn_weights: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _parameters_key(projections: tuple[nn.Module, ...]) -> tuple:
    """What identifies the current values of the projections' parameters: the tensors themselves (weakly), their
    storage and their in-place version counters (an optimizer step or `load_state_dict` raises them)."""
    tensors = [tensor for projection in projections for tensor in (projection.weight, projection.bias)
               if tensor is not None]
    return tuple((weakref.ref(tensor), tensor.data_ptr(), tensor._version, tensor.dtype) for tensor in tensors)


def _same_parameters(stored: tuple, current: tuple) -> bool:
    return len(stored) == len(current) and all(
        old[0]() is new[0]() and old[1:] == new[1:] for old, new in zip(stored, current, strict=True)
    )


def onednn_weights(
    owner: nn.Module, projections: tuple[nn.Module, ...]
) -> tuple[tuple[torch.Tensor, torch.Tensor | None], ...]:
    """For each group `k` of `projections` (of equal shapes and groups, all with biases or none), the weight and bias
    of one oneDNN inner product computing group `k` of each projection in turn: their rows stacked, the weight packed
    once into oneDNN's own layout (see `ONEDNN_PACKING_ROWS`) instead of on every product.

    Kept for `owner` (one copy of those weights) and made again whenever a parameter is replaced or changed in place
    through autograd's view of it (optimizer steps, `load_state_dict`, `torch.nn.init`, dtype changes); `optimize`
    and `restore` drop the copies, so after edits through `.data`, which torch does not count, optimize the model
    again."""
    if len({projection.bias is None for projection in projections}) > 1:
        raise ValueError("Stacked projections need biases on all of them or on none.")
    key = _parameters_key(projections)
    entry = _onednn_weights.get(owner)
    if entry is not None and _same_parameters(entry[0], key):
        return entry[1]
    groups = getattr(projections[0], "groups", 1)
    with torch.no_grad():
        weights = [projection.weight.view(groups, -1, projection.weight.shape[1]) for projection in projections]
        weight = torch.stack(weights, dim=1).view(groups, -1, weights[0].shape[-1])
        bias = None
        if projections[0].bias is not None:
            bias = torch.stack([projection.bias.view(groups, -1) for projection in projections], dim=1)
        packed = tuple(
            (
                torch.ops.mkldnn._reorder_linear_weight(weight[group].contiguous(), ONEDNN_PACKING_ROWS),
                bias[group].reshape(-1).contiguous() if bias is not None else None,
            )
            for group in range(groups)
        )
    _onednn_weights[owner] = (key, packed)
    return packed


def onednn_stacked_projection(
    inputs: torch.Tensor, owner: nn.Module, projections: tuple[nn.Module, ...]
) -> torch.Tensor:
    """(tokens, len(projections), out) = each of `projections` (equal shapes and groups, all with biases or none) of
    2-d `inputs`, as one oneDNN inner product per group on their stacked weights (see `onednn_weights`)."""
    weights = onednn_weights(owner, projections)
    count, groups = len(projections), getattr(projections[0], "groups", 1)
    if groups == 1:
        return _onednn_linear(inputs, *weights[0]).view(inputs.shape[0], count, -1)
    output = inputs.new_empty(inputs.shape[0], count, projections[0].weight.shape[0])
    for group, (weight, bias) in enumerate(weights):
        channels_in, channels_out = _group_slices(projections[0], group, groups)
        output[:, :, channels_out] = _onednn_linear(inputs[:, channels_in], weight, bias).view(
            -1, count, channels_out.stop - channels_out.start
        )
    return output


def onednn_feed_forward(inputs: torch.Tensor, up: nn.Module, activation: Callable, down: nn.Module) -> torch.Tensor:
    """`down(activation(up(inputs))) + inputs` on 2-d `inputs` by oneDNN's inner product, for projections with the
    same groups (one for `nn.Linear`): group `k` of the output reads only group `k` of the activations, so each group
    runs up and down in turn and only one group's activations exist at a time."""
    groups = getattr(up, "groups", 1)
    if getattr(down, "groups", 1) != groups:
        raise ValueError(f"Projections of {groups} and {getattr(down, 'groups', 1)} groups; equal ones are needed.")
    if groups == 1:
        return onednn_projection(onednn_projection(inputs, up, activation), down, residual=inputs)
    output = inputs.new_empty(inputs.shape[0], down.weight.shape[0])
    fused = _fused_activation(activation)
    for group, (up_weights, down_weights) in enumerate(zip(onednn_weights(up, (up,)), onednn_weights(down, (down,)))):
        channels_in, _ = _group_slices(up, group, groups)
        middle = _onednn_linear(inputs[:, channels_in], *up_weights, fused)
        if fused is None:
            middle = activation_in_place(activation, middle)
        _, channels_out = _group_slices(down, group, groups)
        output[:, channels_out] = _onednn_linear(middle, *down_weights, residual=inputs[:, channels_out])
    return output


def blocked_attention(
    module: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    projections: tuple[nn.Module, nn.Module, nn.Module],
    groups: int,
    parts: int,
    attention: Callable,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention with q, k and v each computed as `parts` blocks of whole heads (their groups, or column blocks),
    block `k` of each holding the same heads: `attention` (an attention-interface function, see `attention_function`)
    runs on `parts * batch` sequences of `heads / parts` heads straight from the batched products' outputs. Returns
    (tokens, channels) and the probabilities (batch, heads, q, k) when the attention function gives them."""
    batch, length, channels = hidden_states.shape
    tokens = batch * length
    inputs = hidden_states.reshape(tokens, channels)
    per_part = channels // parts
    head_shape = (parts * batch, length, per_part // module.head_dim, module.head_dim)
    query, key, value = (
        block_major(inputs, projection.weight, projection.bias, groups, parts)
        .view(head_shape)
        .transpose(1, 2)  # (parts * batch, heads / parts, seq, head_dim)
        for projection in projections
    )
    if attention_mask is not None:  # (batch, 1 or heads, q, k) -> (parts * batch, 1 or heads / parts, q, k)
        mask_heads = attention_mask.shape[1]
        attention_mask = attention_mask.expand(batch, *attention_mask.shape[1:])
        attention_mask = attention_mask.reshape(batch, min(mask_heads, parts), -1, *attention_mask.shape[2:])
        attention_mask = attention_mask.transpose(0, 1).expand(parts, -1, -1, -1, -1)
        attention_mask = attention_mask.reshape(parts * batch, *attention_mask.shape[2:])
    output, probabilities = attention(
        module, query, key, value, attention_mask, dropout=0.0, scaling=module.scaling, **kwargs
    )
    # (parts * batch, seq, heads / parts, head_dim) -> (tokens, channels)
    output = output.reshape(parts, tokens, per_part).transpose(0, 1).reshape(tokens, channels)
    if probabilities is not None:  # (parts * batch, heads / parts, q, k) -> (batch, heads, q, k)
        probabilities = probabilities.reshape(parts, batch, -1, length, probabilities.shape[-1])
        probabilities = probabilities.transpose(0, 1).reshape(batch, -1, length, probabilities.shape[-1])
    return output, probabilities


def matmul_softmax_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on (batch, heads, seq, head_dim) tensors as two matrix multiplies in the inputs' dtype around
    a float32 softmax; returns (batch, seq, heads, head_dim) and the probabilities. In float32 this is the modeling
    files' eager computation; in bfloat16 or float16 the scores are softmaxed in float32 (the eager reference does it
    in the low precision, sdpa in its own fused kernel). `attention_mask` is boolean (True: attend) or additive, as
    the model's attention implementation makes it."""
    scores = torch.matmul(query, key.transpose(2, 3)).float().mul_(scaling)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(attention_mask)
    probabilities = scores.softmax(dim=-1).to(query.dtype)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), probabilities


def attention_function(module: nn.Module, matmul_softmax: bool = False) -> Callable:
    """The attention a kernel runs for `module`: `matmul_softmax_attention`, or what the model's configured
    implementation (eager or sdpa) runs, the eager one being the modeling file's own."""
    if matmul_softmax:
        return matmul_softmax_attention
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager)


# --------------------------------------------------------------------------------------------------------------------
# compact_squeezebert
# --------------------------------------------------------------------------------------------------------------------

_SQUEEZE_CONV = "CompactSqueezeBertGroupedConv"


def _squeezebert_attention_fits(module: nn.Module) -> bool:
    projections = (module.query, module.key, module.value)
    return (
        module.config._attn_implementation in ("eager", "sdpa")
        and all(is_plain(projection, _SQUEEZE_CONV) for projection in projections)
        and all(projection.groups == module.query.groups and projection.bias is not None for projection in projections)
        and module.config.num_attention_heads % module.query.groups == 0
    )


def _squeezebert_attention(blocks: bool, matmul_softmax: bool = False):
    def forward(module, hidden_states, attention_mask=None, **kwargs):
        groups = module.query.groups
        parts = column_blocks(module.config.num_attention_heads) if blocks else groups
        output, probabilities = blocked_attention(
            module, hidden_states, attention_mask, (module.query, module.key, module.value), groups, parts,
            attention_function(module, matmul_softmax), **kwargs,
        )
        return output.view_as(hidden_states), probabilities

    return forward


def _squeezebert_layer_fits(module: nn.Module) -> bool:
    convs = (module.post_attention, module.intermediate, module.output)
    return (
        is_plain(module.post_attention, "CompactSqueezeBertConvDropoutLayerNorm")
        and is_plain(module.intermediate, "CompactSqueezeBertConvActivation")
        and is_plain(module.output, "CompactSqueezeBertConvDropoutLayerNorm")
        and all(is_plain(part.conv1d, _SQUEEZE_CONV) for part in convs)
    )


def _parts(conv: nn.Module, blocks: bool) -> int:
    return conv.groups if conv.groups > 1 else (column_blocks(conv.out_channels) if blocks else 1)


def grouped_feed_forward(
    inputs: torch.Tensor, intermediate: nn.Module, output: nn.Module, rows_per_step: int = FEED_FORWARD_ROWS
) -> torch.Tensor:
    """`output.conv1d(act(intermediate.conv1d(inputs))) + inputs` on 2-d `inputs` when both projections have the same
    groups: group `k` of the output reads only group `k` of the intermediate activations, which come only from group
    `k` of the input, so the feed-forward is `groups` independent narrow ones. Each step of `rows_per_step` tokens
    runs them as two batched matrix multiplies, the activations kept group-major (in place), the result added to the
    residual plus bias in one pass."""
    up, down = intermediate.conv1d, output.conv1d
    groups = up.groups
    result = inputs + down.bias if down.bias is not None else inputs.clone()
    for start in range(0, inputs.shape[0], rows_per_step):
        rows = inputs[start : start + rows_per_step]
        middle = activation_in_place(intermediate.act, block_major(rows, up.weight, up.bias, groups, groups))
        projected = torch.bmm(middle, down.weight.view(groups, -1, middle.shape[-1]).transpose(1, 2))
        result[start : start + rows_per_step].view(rows.shape[0], groups, -1).add_(projected.transpose(0, 1))
    return result


def _squeezebert_layer(blocks: bool):
    def forward(module, hidden_states, attention_mask=None, **kwargs):
        attention_output, _ = module.attention(hidden_states, attention_mask, **kwargs)
        channels = hidden_states.shape[-1]
        residual = hidden_states.reshape(-1, channels)
        post = module.post_attention
        hidden = post.layernorm(
            project(attention_output.reshape(-1, channels), post.conv1d.weight, post.conv1d.bias,
                    post.conv1d.groups, _parts(post.conv1d, blocks), residual=residual)
        )
        up, down = module.intermediate.conv1d, module.output.conv1d
        if up.groups == down.groups > 1:
            result = grouped_feed_forward(hidden, module.intermediate, module.output)
        else:
            middle = project(hidden, up.weight, up.bias, up.groups, _parts(up, blocks))
            middle = activation_in_place(module.intermediate.act, middle)
            result = project(middle, down.weight, down.bias, down.groups, _parts(down, blocks), residual=hidden)
        return module.output.layernorm(result).view_as(hidden_states)

    return forward


def _attention_computed_inline(attention: nn.Module) -> bool:
    """Whether a layer kernel may compute `attention` inline, without calling it: its own class's forward or the
    dispatcher `optimize` attached (no adapter or wrapper in between) and no hooks. transformers records
    `output_attentions` through hooks it attaches to the attention modules, so a model asked for attentions keeps
    calling them."""
    own_forward = "forward" not in vars(attention) or vars(attention).get(_DISPATCH, False) is None
    return (
        type(attention).__name__ == "CompactSqueezeBertSelfAttention"
        and own_forward
        and not attention._forward_hooks
        and not attention._forward_pre_hooks
        and _squeezebert_attention_fits(attention)
    )


def _channels_first_conv(inputs: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A grouped 1x1 projection of (batch, channels, seq) `inputs` as the convolution it is (the CPU's convolution
    library, e.g. oneDNN, computes it): (batch, out, seq)."""
    return F.conv1d(inputs, conv.weight, conv.bias, groups=conv.groups)


def _squeezebert_layer_channels_first(module, hidden_states, attention_mask=None, *, matmul_softmax: bool = False,
                                      **kwargs):
    """The layer in SqueezeBERT's own layout: hidden states transposed once to (batch, channels, seq), every
    projection a grouped 1x1 convolution, the attention on views of q, k and v (as `matmul_softmax_attention` with
    `matmul_softmax`), and back to (batch, seq, channels) at the end."""
    attention = module.attention
    batch, length, channels = hidden_states.shape
    inputs = hidden_states.transpose(1, 2).contiguous()
    head_shape = (batch, -1, attention.head_dim, length)
    query, key, value = (
        _channels_first_conv(inputs, projection).view(head_shape).transpose(2, 3)  # (batch, heads, seq, head_dim)
        for projection in (attention.query, attention.key, attention.value)
    )
    context, _ = attention_function(attention, matmul_softmax)(
        attention, query, key, value, attention_mask, dropout=0.0, scaling=attention.scaling, **kwargs
    )
    context = context.reshape(batch, length, channels).transpose(1, 2).contiguous()
    post = module.post_attention
    hidden = post.layernorm((_channels_first_conv(context, post.conv1d) + inputs).transpose(1, 2))
    hidden_channels_first = hidden.transpose(1, 2).contiguous()
    middle = activation_in_place(module.intermediate.act, _channels_first_conv(hidden_channels_first,
                                                                                module.intermediate.conv1d))
    output = _channels_first_conv(middle, module.output.conv1d).add_(hidden_channels_first)
    return module.output.layernorm(output.transpose(1, 2)).contiguous()


def _onednn_stacked_attention(
    attention: nn.Module,
    inputs: torch.Tensor,
    batch: int,
    projections: tuple[nn.Module, nn.Module, nn.Module],
    attention_mask: torch.Tensor | None,
    matmul_softmax: bool,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention of `attention` on (tokens, channels) `inputs` of `batch` sequences, q, k and v (the
    `projections`) by `onednn_stacked_projection` and the attention on views of its output (as
    `matmul_softmax_attention` with `matmul_softmax`): (batch, seq, heads, head_dim) and the probabilities."""
    head_shape = (batch, inputs.shape[0] // batch, -1, attention.head_dim)
    stacked = onednn_stacked_projection(inputs, attention, projections)
    query, key, value = (stacked[:, index].view(head_shape).transpose(1, 2) for index in range(3))
    return attention_function(attention, matmul_softmax)(
        attention, query, key, value, attention_mask, dropout=0.0, scaling=attention.scaling, **kwargs
    )


def _squeezebert_layer_onednn(module, hidden_states, attention_mask=None, *, matmul_softmax: bool = False, **kwargs):
    """The layer on (tokens, channels) rows, every projection by `onednn_projection` (the activation and the residuals
    in its passes), the attention on views of q, k and v (as `matmul_softmax_attention` with `matmul_softmax`)."""
    attention = module.attention
    batch, _, channels = hidden_states.shape
    inputs = hidden_states.reshape(-1, channels)
    context, _ = _onednn_stacked_attention(
        attention, inputs, batch, (attention.query, attention.key, attention.value), attention_mask, matmul_softmax,
        **kwargs,
    )
    post = module.post_attention
    hidden = post.layernorm(onednn_projection(context.reshape(-1, channels), post.conv1d, residual=inputs))
    up, down = module.intermediate.conv1d, module.output.conv1d
    if up.groups == down.groups:
        output = onednn_feed_forward(hidden, up, module.intermediate.act, down)
    else:
        output = onednn_projection(onednn_projection(hidden, up, module.intermediate.act), down, residual=hidden)
    return module.output.layernorm(output).view_as(hidden_states)


def _has_one_group(*convs: nn.Module) -> bool:
    return torch.get_num_threads() > 1 and any(conv.groups == 1 for conv in convs)


# --------------------------------------------------------------------------------------------------------------------
# compact_distilbert
# --------------------------------------------------------------------------------------------------------------------


def _distilbert_attention_fits(module: nn.Module) -> bool:
    projections = (module.q_lin, module.k_lin, module.v_lin, module.out_lin)
    return module.config._attn_implementation in ("eager", "sdpa") and all(
        is_plain(projection, nn.Linear) for projection in projections
    )


def _distilbert_attention(blocks: bool, matmul_softmax: bool = False):
    def forward(module, hidden_states, attention_mask=None, **kwargs):
        parts = column_blocks(module.config.n_heads) if blocks else 1
        output, probabilities = blocked_attention(
            module, hidden_states, attention_mask, (module.q_lin, module.k_lin, module.v_lin), 1, parts,
            attention_function(module, matmul_softmax), **kwargs,
        )
        out_lin = module.out_lin
        out_parts = column_blocks(out_lin.out_features) if blocks else 1
        output = project(output, out_lin.weight, out_lin.bias, parts=out_parts)
        return output.view_as(hidden_states), probabilities

    return forward


def _distilbert_attention_onednn(module, hidden_states, attention_mask=None, *, matmul_softmax: bool = False,
                                 **kwargs):
    """The attention with q, k, v and the output projection by `onednn_projection`."""
    batch, _, channels = hidden_states.shape
    inputs = hidden_states.reshape(-1, channels)
    output, probabilities = _onednn_stacked_attention(
        module, inputs, batch, (module.q_lin, module.k_lin, module.v_lin), attention_mask, matmul_softmax, **kwargs
    )
    output = onednn_projection(output.reshape(-1, channels), module.out_lin)
    return output.view_as(hidden_states), probabilities


def _distilbert_attention_onednn_fits(module: nn.Module) -> bool:
    """The oneDNN attention stacks q, k and v: they need biases on all of them or on none."""
    projections = (module.q_lin, module.k_lin, module.v_lin)
    return (onednn_fits(module) and _distilbert_attention_fits(module)
            and len({projection.bias is None for projection in projections}) == 1)


def _distilbert_block_fits(module: nn.Module) -> bool:
    ffn = module.ffn
    return (
        is_plain(ffn, "CompactDistilBertFFN")
        and not ffn.chunk_size_feed_forward
        and is_plain(ffn.lin1, nn.Linear)
        and is_plain(ffn.lin2, nn.Linear)
    )


def _distilbert_block(blocks: bool):
    def forward(module, hidden_states, attention_mask=None, **kwargs):
        attention_output, _ = module.attention(hidden_states, attention_mask=attention_mask, **kwargs)
        hidden = module.sa_layer_norm(attention_output + hidden_states)
        inputs = hidden.reshape(-1, hidden.shape[-1])
        up, down = module.ffn.lin1, module.ffn.lin2
        up_parts = column_blocks(up.out_features) if blocks else 1
        middle = activation_in_place(module.ffn.activation, project(inputs, up.weight, up.bias, parts=up_parts))
        down_parts = column_blocks(down.out_features) if blocks else 1
        result = project(middle, down.weight, down.bias, parts=down_parts, residual=inputs)
        return module.output_layer_norm(result.view_as(hidden))

    return forward


def _distilbert_block_onednn(module, hidden_states, attention_mask=None, **kwargs):
    """The block with its feed-forward by `onednn_projection` (the activation and the residual in its passes)."""
    attention_output, _ = module.attention(hidden_states, attention_mask=attention_mask, **kwargs)
    hidden = module.sa_layer_norm(attention_output + hidden_states)
    inputs = hidden.reshape(-1, hidden.shape[-1])
    result = onednn_feed_forward(inputs, module.ffn.lin1, module.ffn.activation, module.ffn.lin2)
    return module.output_layer_norm(result.view_as(hidden))


# --------------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """One candidate computation of a module's forward: `fits(module)` says whether it can compute this module (its
    sub-modules and settings), `forward(module, *args, **kwargs)` computes it with the module's own signature."""

    name: str
    fits: Callable[[nn.Module], bool]
    forward: Callable


KERNELS: dict[str, tuple[Kernel, ...]] = {
    "CompactSqueezeBertSelfAttention": (
        Kernel("grouped_attention", _squeezebert_attention_fits, _squeezebert_attention(blocks=False)),
        Kernel(
            "grouped_attention_column_blocks",
            lambda m: _squeezebert_attention_fits(m) and _has_one_group(m.query),
            _squeezebert_attention(blocks=True),
        ),
        Kernel("grouped_attention_matmul_softmax", _squeezebert_attention_fits,
               _squeezebert_attention(blocks=False, matmul_softmax=True)),
    ),
    "CompactSqueezeBertModule": (
        Kernel("fused_layer", _squeezebert_layer_fits, _squeezebert_layer(blocks=False)),
        Kernel(
            "fused_layer_column_blocks",
            lambda m: _squeezebert_layer_fits(m)
            and _has_one_group(m.post_attention.conv1d, m.intermediate.conv1d, m.output.conv1d),
            _squeezebert_layer(blocks=True),
        ),
        Kernel(
            "channels_first_layer",
            lambda m: _squeezebert_layer_fits(m) and _attention_computed_inline(m.attention),
            _squeezebert_layer_channels_first,
        ),
        Kernel(
            "channels_first_layer_matmul_softmax",
            lambda m: _squeezebert_layer_fits(m) and _attention_computed_inline(m.attention),
            functools.partial(_squeezebert_layer_channels_first, matmul_softmax=True),
        ),
        Kernel(
            "onednn_layer",
            lambda m: onednn_fits(m) and _squeezebert_layer_fits(m) and _attention_computed_inline(m.attention),
            _squeezebert_layer_onednn,
        ),
        Kernel(
            "onednn_layer_matmul_softmax",
            lambda m: onednn_fits(m) and _squeezebert_layer_fits(m) and _attention_computed_inline(m.attention),
            functools.partial(_squeezebert_layer_onednn, matmul_softmax=True),
        ),
    ),
    "CompactDistilBertSelfAttention": (
        Kernel(
            "attention_column_blocks",
            lambda m: _distilbert_attention_fits(m) and torch.get_num_threads() > 1,
            _distilbert_attention(blocks=True),
        ),
        Kernel("attention_matmul_softmax", _distilbert_attention_fits,
               _distilbert_attention(blocks=False, matmul_softmax=True)),
        Kernel("onednn_attention", _distilbert_attention_onednn_fits, _distilbert_attention_onednn),
        Kernel("onednn_attention_matmul_softmax", _distilbert_attention_onednn_fits,
               functools.partial(_distilbert_attention_onednn, matmul_softmax=True)),
    ),
    "CompactDistilBertBlock": (
        Kernel("fused_feed_forward", _distilbert_block_fits, _distilbert_block(blocks=False)),
        Kernel(
            "fused_feed_forward_column_blocks",
            lambda m: _distilbert_block_fits(m) and torch.get_num_threads() > 1,
            _distilbert_block(blocks=True),
        ),
        Kernel("onednn_feed_forward", lambda m: onednn_fits(m) and _distilbert_block_fits(m),
               _distilbert_block_onednn),
    ),
}
"""Module class name -> the kernels that may replace its forward; each is measured against the module's own."""


# --------------------------------------------------------------------------------------------------------------------
# Choosing by measurement
# --------------------------------------------------------------------------------------------------------------------


def default_cache_path() -> str:
    """`$HF_COMPACT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/hf_compact/kernels.json` (`~/.cache/...` by default)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "hf_compact", "kernels.json")


@functools.cache
def kernels_digest() -> str:
    """A digest of this module's source: choices timed with other kernel code are not read."""
    with open(__file__, "rb") as handle:
        return hashlib.sha1(handle.read()).hexdigest()[:12]


def machine_key() -> str:
    """What a timing depends on besides the shape: CPU model and vector extensions (and any cap on the ones torch's
    libraries use), torch version, threads, and the kernels' code (`kernels_digest`)."""
    from .benchmarking import cpu_flags, cpu_name, instruction_set_limits

    cpu = f"{cpu_name()} [{' '.join(cpu_flags())}]"
    cpu += "".join(f" {name}={value}" for name, value in instruction_set_limits().items())
    return f"{cpu} torch {torch.__version__}, {torch.get_num_threads()} threads, kernels {kernels_digest()}"


def _power_of_two(value: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, value))))


_signatures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shape_class(module: nn.Module, hidden_states: torch.Tensor) -> str:
    """The module's type and sizes (its parameters' shapes, sub-module classes, attention back-end), dtype, and
    batch and sequence length rounded up to powers of two: calls of one class are timed once."""
    digest = _signatures.get(module)
    if digest is None:
        shapes = ";".join(f"{name}{tuple(p.shape)}" for name, p in module.named_parameters())
        classes = sorted({type(m).__name__ for m in module.modules()})
        attention = getattr(getattr(module, "config", None), "_attn_implementation", None)
        digest = _signatures[module] = hashlib.sha1(f"{shapes}|{classes}|{attention}".encode()).hexdigest()[:12]
    batch = hidden_states.shape[0] if hidden_states.dim() > 2 else 1
    length = hidden_states.shape[-2]
    dtype = str(hidden_states.dtype).replace("torch.", "")
    return f"{type(module).__name__}/{digest}/{dtype}/batch<={_power_of_two(batch)}/seq<={_power_of_two(length)}"


def pick(seconds: dict[str, float], margin: float) -> str:
    """The fastest entry of `seconds` (including `REFERENCE`), provided it beats the reference by `margin` (a
    fraction); otherwise the reference."""
    best = min(seconds, key=seconds.get)
    if best != REFERENCE and seconds[best] < (1.0 - margin) * seconds[REFERENCE]:
        return best
    return REFERENCE


@contextlib.contextmanager
def _outputs_not_recorded() -> Iterator[None]:
    """Timing runs call attention and layer modules repeatedly; `output_attentions` must see each call once."""
    if _active_collector is None:
        yield
        return
    token = _active_collector.set(None)
    try:
        yield
    finally:
        _active_collector.reset(token)


class KernelSelector:
    """Chooses, per shape class, the reference forward or the kernel that beats it, by timing both.

    Args:
        cache_path: the JSON file of choices (see `default_cache_path`); None keeps them in memory only.
        repeats: timed rounds per measurement (after one untimed round); each candidate's fastest round counts.
        margin: how much faster than the reference (a fraction) a kernel must be to be chosen.
        clock: the time source (seconds); tests pass a fake one.
    """

    def __init__(
        self,
        cache_path: str | os.PathLike | None = "default",
        repeats: int = 5,
        margin: float = 0.03,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if repeats < 1:
            raise ValueError(f"repeats={repeats} must be at least 1.")
        self.cache_path = default_cache_path() if cache_path == "default" else cache_path
        self.repeats = repeats
        self.margin = margin
        self.clock = clock
        self._choices: dict[str, dict] | None = None

    def choices(self) -> dict[str, dict]:
        """This machine's choices so far: shape class -> {"kernel": name, "ms": {candidate: fastest round}}."""
        if self._choices is None:
            self._choices = self._read().get(machine_key(), {})
        return self._choices

    def _read(self) -> dict:
        if self.cache_path is None or not os.path.exists(self.cache_path):
            return {}
        try:
            with open(self.cache_path, encoding="utf-8") as handle:
                stored = json.load(handle)
            return stored if isinstance(stored, dict) else {}
        except (OSError, ValueError) as error:
            logger.warning(f"Ignoring the kernel choices in {self.cache_path} ({error}); timing again.")
            return {}

    def _save(self, key: str, entry: dict) -> None:
        if self.cache_path is None:
            return
        stored = self._read()  # another process may have added choices since this one read the file
        stored.setdefault(machine_key(), {})[key] = entry
        try:
            write_json_atomic(self.cache_path, stored)
        except OSError as error:
            logger.warning(f"Could not store the kernel choices in {self.cache_path} ({error}); kept in memory.")

    def measure(self, candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
        """Seconds of each candidate's fastest round: one untimed round, then `repeats` rounds, each calling every
        candidate once, starting one candidate later every round."""
        names = list(candidates)
        with _outputs_not_recorded():
            for name in names:
                candidates[name]()
            times = {name: [] for name in names}
            for round_index in range(self.repeats):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    start = self.clock()
                    candidates[name]()
                    times[name].append(self.clock() - start)
        return {name: min(values) for name, values in times.items()}

    def choose(self, module: nn.Module, kernels: list[Kernel], reference: Callable, args, kwargs) -> str:
        """The name of the computation to use for this call (`REFERENCE` or a kernel's), timing them on this call's
        inputs the first time its shape class is seen."""
        key = shape_class(module, args[0] if args else kwargs["hidden_states"])
        entry = self.choices().get(key)
        names = {kernel.name for kernel in kernels}
        # A choice stands when it measured every kernel that fits now (one cached before a kernel existed does not).
        if entry is not None and names <= set(entry.get("ms", ())) and entry["kernel"] in names | {REFERENCE}:
            return entry["kernel"]
        candidates = {REFERENCE: lambda: reference(*args, **kwargs)}
        for kernel in kernels:
            candidates[kernel.name] = lambda kernel=kernel: kernel.forward(module, *args, **kwargs)
        fastest = self.measure(candidates)
        choice = pick(fastest, self.margin)
        entry = {"kernel": choice, "ms": {name: 1e3 * seconds for name, seconds in fastest.items()}}
        self.choices()[key] = entry
        self._save(key, entry)
        logger.info(f"{key}: {choice} ({', '.join(f'{n} {ms:.2f} ms' for n, ms in entry['ms'].items())})")
        return choice


_default_selector: KernelSelector | None = None


def default_selector() -> KernelSelector:
    """The process-wide selector that `optimize` uses unless given one."""
    global _default_selector
    if _default_selector is None:
        _default_selector = KernelSelector()
    return _default_selector


# --------------------------------------------------------------------------------------------------------------------
# Attaching and removing
# --------------------------------------------------------------------------------------------------------------------


def runs_inference_kernels(module: nn.Module, hidden_states: torch.Tensor) -> bool:
    """Whether a kernel may compute `module` on `hidden_states`: the kernels update buffers in place, which autograd
    cannot record, so only when no graph is being built, on CPU tensors in the weights' dtype, outside autocast,
    tracing and compilation, and without dropout."""
    if hidden_states.device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if module.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()):
        return False
    grad_enabled = torch.is_grad_enabled()
    if grad_enabled and hidden_states.requires_grad:
        return False
    for parameter in module.parameters():
        if parameter.dtype != hidden_states.dtype or parameter.device.type != "cpu":
            return False
        if grad_enabled and parameter.requires_grad:
            return False
    return True


def _dispatcher(module: nn.Module, kernels: tuple[Kernel, ...], selector: KernelSelector | None) -> Callable:
    reference = module.forward

    def forward(*args, **kwargs):
        hidden_states = args[0] if args else kwargs["hidden_states"]
        if not runs_inference_kernels(module, hidden_states):
            return reference(*args, **kwargs)
        fitting = [kernel for kernel in kernels if kernel.fits(module)]
        if not fitting:
            return reference(*args, **kwargs)
        choice = (selector or default_selector()).choose(module, fitting, reference, args, kwargs)
        if choice == REFERENCE:
            return reference(*args, **kwargs)
        kernel = next(kernel for kernel in fitting if kernel.name == choice)
        return kernel.forward(module, *args, **kwargs)

    return forward


def optimize(model: nn.Module, selector: KernelSelector | None = None) -> nn.Module:
    """Attach the CPU inference kernels to every module of `model` that has some (see `KERNELS`); returns `model`.

    Each such module's `forward` is replaced by a dispatcher that runs the fastest computation measured on this
    machine for the call's shape class, or the module's own forward wherever a kernel may not run. Calling it again
    changes nothing; `restore(model)` undoes it."""
    for module in model.modules():
        _onednn_weights.pop(module, None)
        kernels = KERNELS.get(type(module).__name__)
        if kernels and _DISPATCH not in vars(module):
            setattr(module, _DISPATCH, vars(module).get("forward"))
            module.forward = _dispatcher(module, kernels, selector)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Remove what `optimize` attached: every module runs its own forward again. Returns `model`."""
    for module in model.modules():
        _onednn_weights.pop(module, None)
        if _DISPATCH in vars(module):
            previous = vars(module).pop(_DISPATCH)
            if previous is None:
                del module.forward
            else:
                module.forward = previous
    return model


def is_optimized(model: nn.Module) -> bool:
    """Whether `optimize` has attached kernels to any module of `model`."""
    return any(_DISPATCH in vars(module) for module in model.modules())


@contextlib.contextmanager
def optimized(model: nn.Module, selector: KernelSelector | None = None) -> Iterator[nn.Module]:
    """`optimize(model)` for the duration of the block, then `restore(model)`; a model that was optimized already
    stays so."""
    if is_optimized(model):
        yield model
        return
    optimize(model, selector)
    try:
        yield model
    finally:
        restore(model)


@contextlib.contextmanager
def reference_only(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with the modules' own forwards (for export or tracing), the kernels attached again after."""
    attached = {module: (vars(module)[_DISPATCH], vars(module)["forward"]) for module in model.modules()
                if _DISPATCH in vars(module)}
    restore(model)
    try:
        yield model
    finally:
        for module, (previous, dispatcher) in attached.items():
            setattr(module, _DISPATCH, previous)
            module.forward = dispatcher


__all__ = [
    "CACHE_ENV",
    "KERNELS",
    "Kernel",
    "KernelSelector",
    "column_blocks",
    "default_cache_path",
    "default_selector",
    "is_optimized",
    "kernels_digest",
    "machine_key",
    "onednn_available",
    "onednn_feed_forward",
    "onednn_fits",
    "onednn_projection",
    "onednn_stacked_projection",
    "onednn_weights",
    "optimize",
    "optimized",
    "pick",
    "reference_only",
    "restore",
    "runs_inference_kernels",
    "shape_class",
]
