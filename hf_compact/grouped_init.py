"""Fit the grouped projections of a SqueezeBERT-style student to the dense ones they replace, on real activations.

`convert_to_compact` starts a grouped 1x1 projection from the block-diagonal part of the teacher's dense weight: group
`k` keeps the weights from input block `k` to output block `k` and drops the rest. With two groups that drops half
of every projection, and the student starts far from the teacher.

The inputs of a projection are strongly correlated across channels, so much of what the dropped blocks computed can
be read from the channels a group keeps. `fit_grouped_projections` runs the dense model (the same layers with one
group: the teacher's own weights) over a few batches of real inputs, collects the mean and covariance of each
projection's input over the non-padding tokens, and sets each group to the least-squares fit of the dense
projection's output from the group's own input channels:

    B_k = W[R_k, :] S[:, C_k] (S[C_k, C_k] + ridge * mean(diag S[C_k, C_k]) * I)^-1,
    b_k = b[R_k] + W[R_k, :] mu - B_k mu[C_k]

where `W`, `b` are the dense weight and bias, `R_k` / `C_k` the output / input channels of group `k`, `mu` and `S`
the input mean and covariance. When a group's inputs are uncorrelated with the other channels this is the
block-diagonal part again; with correlated ones it keeps more of the dense output. Each layer's inputs come from the
dense model, so the fit needs one pass over the calibration batches.

```python
>>> from transformers import BertConfig, BertForSequenceClassification
>>> import torch, hf_compact
>>> teacher = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
...                                                    num_attention_heads=4, intermediate_size=64))
>>> dense = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2)
>>> student = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2,
...                                         q_groups=2, k_groups=2, v_groups=2, intermediate_groups=2, output_groups=2)
>>> batches = [{"input_ids": torch.randint(0, 99, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}]
>>> fitted = hf_compact.fit_grouped_projections(student, dense, batches)
>>> len(fitted)  # five grouped projections in each of the two layers
10

```
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def _grouped_projections(model: nn.Module) -> dict[str, nn.Conv1d]:
    """The 1x1 convolutions of a compact_squeezebert model, by their name relative to the encoder's layers."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d) and ".encoder.layers." in f".{name}":
            found[name[name.index("encoder.layers.") :]] = module
    return found


class _InputMoments:
    """Running sums of a projection's input over the tokens the attention mask keeps (float64)."""

    def __init__(self, channels: int):
        self.count = 0
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.outer = torch.zeros(channels, channels, dtype=torch.float64)

    def add(self, inputs: torch.Tensor, keep: torch.Tensor | None):
        rows = inputs.detach().reshape(-1, inputs.shape[-1])
        if keep is not None:
            rows = rows[keep.reshape(-1)]
        rows = rows.float()
        self.count += rows.shape[0]
        self.total += rows.sum(0, dtype=torch.float64)
        self.outer += (rows.T @ rows).double()  # a batch's products in float32, the running sum in float64

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        return mean, self.outer / self.count - torch.outer(mean, mean)


def _input_moments(dense: nn.Module, convs: dict[str, nn.Conv1d], batches) -> dict[str, _InputMoments]:
    """One pass of `dense` over `batches`, collecting the input moments of each projection in `convs`."""
    moments = {name: _InputMoments(conv.in_channels) for name, conv in convs.items()}
    keep: dict[str, torch.Tensor | None] = {"mask": None}
    hooks = [
        conv.register_forward_pre_hook(lambda module, args, name=name: moments[name].add(args[0], keep["mask"]))
        for name, conv in convs.items()
    ]
    was_training = dense.training
    dense.eval()
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            keep["mask"] = mask.bool() if mask is not None else None
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            # Grad mode with trainable weights keeps the model on its reference path, where every projection runs
            # through its own module (and its hook); nothing is backpropagated.
            with torch.enable_grad():
                dense(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
        dense.train(was_training)
    return moments


@torch.no_grad()
def fit_grouped_projections(
    student: nn.Module,
    dense: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    ridge: float = 1e-2,
) -> list[str]:
    """Set each grouped projection of `student` to the least-squares fit of `dense`'s projection on real inputs.

    Args:
        student: a `compact_squeezebert` model (any head) whose projections have several groups.
        dense: the same architecture and layers with the dense weights to approximate (usually the student's
            conversion with every group set to 1); it only runs forward passes.
        batches: model inputs (`input_ids`, `attention_mask`, ...) of real text; padding tokens are left out.
        ridge: regularisation, relative to the mean input variance of a group.

    Returns:
        The names of the projections that were refitted (those with more than one group), relative to the model's
        base (`encoder.layers.0.attention.query`, ...).
    """
    student_convs, dense_convs = _grouped_projections(student), _grouped_projections(dense)
    if not student_convs:
        raise ValueError("fit_grouped_projections needs a compact_squeezebert student; it has no grouped projections.")
    if set(student_convs) != set(dense_convs):
        raise ValueError("The student and the dense model must have the same layers (compare their layer maps).")
    targets = {name: conv for name, conv in student_convs.items() if conv.groups > 1}
    if not targets:
        return []
    for name, conv in targets.items():
        source = dense_convs[name]
        if (source.out_channels, source.in_channels) != (conv.out_channels, conv.in_channels):
            raise ValueError(f"{name}: the dense model's projection has another shape than the student's.")

    moments = _input_moments(dense, {name: dense_convs[name] for name in targets}, batches)
    if any(m.count == 0 for m in moments.values()):
        raise ValueError("fit_grouped_projections needs at least one batch with a non-padding token.")
    for name, conv in targets.items():
        _solve(conv, dense_convs[name], *moments[name].mean_and_covariance(), ridge)
    return sorted(targets)


def _solve(conv: nn.Conv1d, source: nn.Conv1d, mean: torch.Tensor, covariance: torch.Tensor, ridge: float):
    """Least squares, group by group: the dense output from the input channels of that group."""
    weight = source.weight.detach().double().reshape(source.out_channels, -1)
    if source.groups > 1:  # a grouped "dense" model: its block-diagonal weight as a full matrix
        weight = torch.block_diag(*weight.split(source.out_channels // source.groups, dim=0))
    bias = source.bias.detach().double() if source.bias is not None else weight.new_zeros(source.out_channels)
    groups = conv.groups
    rows_per, cols_per = conv.out_channels // groups, conv.in_channels // groups
    fitted_weight, fitted_bias = [], []
    for group in range(groups):
        rows = slice(group * rows_per, (group + 1) * rows_per)
        cols = slice(group * cols_per, (group + 1) * cols_per)
        inner = covariance[cols, cols]
        inner = inner + ridge * inner.diagonal().mean() * torch.eye(cols_per, dtype=torch.float64)
        cross = weight[rows] @ covariance[:, cols]  # covariance of the dense output with the group's inputs
        block = torch.linalg.solve(inner, cross.T).T
        fitted_weight.append(block)
        fitted_bias.append(bias[rows] + weight[rows] @ mean - block @ mean[cols])
    conv.weight.copy_(torch.cat(fitted_weight).unsqueeze(-1).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.copy_(torch.cat(fitted_bias).to(conv.bias.dtype))


__all__ = ["fit_grouped_projections"]
