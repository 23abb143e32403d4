"""Distillation losses. Each takes student and teacher tensors and returns a scalar; none has weights of its own
except through the projection passed to `hidden_mse`.

Masks are (batch, seq) with 1 on real tokens; losses over tokens average over the real ones only.

- `soft_target_kl`: KL(teacher || student) of the temperature-softened distributions, times T^2 (Hinton et al.),
  so gradients keep their scale as T changes.
- `hidden_cosine`: 1 - cosine similarity of aligned hidden states (DistilBERT's cosine embedding loss).
- `hidden_mse`: mean squared error of aligned hidden states, the student's first mapped through a learned
  projection when the widths differ (TinyBERT).
- `attention_kl`: KL(teacher || student) of the attention distributions of aligned layers, per head (needs equal
  head counts).
- `relation_kl`: MiniLM-style relations for models whose head counts or widths differ: hidden states are split
  into the same number of relation heads for both models, each head's scaled dot-product self-relation is turned
  into a distribution over keys, and the two distributions are compared with KL.
- `attention_relation_kl`: MiniLM-v2's self-attention relation transfer: `relation_kl` of the query-query, key-key
  and value-value relations of one attention layer of each model (the outputs of its q, k and v projections),
  summed as in Wang et al. (2021). Neither head counts nor widths need to match, only the number of relation heads.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _token_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    return mask.bool()


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) of softmax(logits / T), scaled by T^2, averaged over examples (or real tokens).

    Logits are (batch, classes) for sequence classification or (batch, seq, classes) for token-level tasks, where
    `mask` selects the tokens that count.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} is invalid: it must be positive.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "the student's head must have the teacher's number of labels."
        )
    if student_logits.dim() == 3:
        keep = _token_mask(mask, student_logits)
        student_logits, teacher_logits = student_logits[keep], teacher_logits[keep]
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return kl * temperature**2


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean over real tokens of 1 - cos(student, teacher); both (batch, seq, width) with equal widths."""
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"Cosine alignment needs equal widths, got student {student_hidden.shape[-1]} and teacher "
            f"{teacher_hidden.shape[-1]}; use the MSE loss with a projection instead."
        )
    keep = _token_mask(mask, student_hidden)
    cosine = F.cosine_similarity(student_hidden[keep].float(), teacher_hidden[keep].float(), dim=-1)
    return (1 - cosine).mean()


def hidden_mse(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Mean squared error over real tokens and channels, after `projection` maps the student's width onto the
    teacher's (required when the widths differ)."""
    keep = _token_mask(mask, student_hidden)
    student = student_hidden[keep]
    if projection is not None:
        student = projection(student)
    if student.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"Student width {student.shape[-1]} differs from teacher width {teacher_hidden.shape[-1]}: pass a "
            "projection (the distiller builds one when the widths differ)."
        )
    return F.mse_loss(student.float(), teacher_hidden[keep].float())


def _distribution_kl(student_probs: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor | None):
    """KL(teacher || student) of (batch, heads, query, key) distributions, averaged over heads and real queries."""
    eps = torch.finfo(torch.float32).tiny
    teacher_probs, student_probs = teacher_probs.float(), student_probs.float()
    kl = (teacher_probs * (torch.log(teacher_probs + eps) - torch.log(student_probs + eps))).sum(-1)  # (b, h, q)
    keep = _token_mask(mask, kl.transpose(1, 2)).unsqueeze(1).expand_as(kl)
    return kl[keep].mean()


def attention_kl(student_attention: torch.Tensor, teacher_attention: torch.Tensor, mask: torch.Tensor | None = None):
    """KL of aligned attention probabilities, (batch, heads, seq, seq) each, with equal head counts."""
    if student_attention.shape != teacher_attention.shape:
        raise ValueError(
            f"Attention shapes differ (student {tuple(student_attention.shape)}, teacher "
            f"{tuple(teacher_attention.shape)}); with different head counts use the relation loss."
        )
    return _distribution_kl(student_attention, teacher_attention, mask)


def self_relation(hidden: torch.Tensor, num_relation_heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over keys of the scaled dot products of `hidden` with itself, split into relation heads:
    (batch, seq, width) -> (batch, heads, seq, seq). Padded keys get no probability."""
    batch, seq, width = hidden.shape
    if width % num_relation_heads:
        raise ValueError(f"num_relation_heads={num_relation_heads} does not divide the hidden width {width}.")
    head_dim = width // num_relation_heads
    heads = hidden.float().view(batch, seq, num_relation_heads, head_dim).transpose(1, 2)
    scores = heads @ heads.transpose(-1, -2) / head_dim**0.5
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


def relation_kl(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_relation_heads: int = 4,
) -> torch.Tensor:
    """MiniLM-style relation transfer between hidden states of any widths and head counts."""
    return _distribution_kl(
        self_relation(student_hidden, num_relation_heads, mask),
        self_relation(teacher_hidden, num_relation_heads, mask),
        mask,
    )


def attention_relation_kl(
    student_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None = None,
    num_relation_heads: int = 4,
) -> torch.Tensor:
    """Sum over the query-query, key-key and value-value relations of the KL between the teacher's and the
    student's relation distributions (MiniLM-v2). Each of the six tensors is a projection's output,
    (batch, seq, width); widths may differ between the models as long as `num_relation_heads` divides both."""
    if len(student_qkv) != 3 or len(teacher_qkv) != 3:
        raise ValueError(
            f"Give the query, key and value projections of each model: got {len(student_qkv)} student and "
            f"{len(teacher_qkv)} teacher tensors."
        )
    return sum(
        relation_kl(student, teacher, mask, num_relation_heads) for student, teacher in zip(student_qkv, teacher_qkv)
    )


__all__ = [
    "attention_kl",
    "attention_relation_kl",
    "hidden_cosine",
    "hidden_mse",
    "relation_kl",
    "self_relation",
    "soft_target_kl",
]
