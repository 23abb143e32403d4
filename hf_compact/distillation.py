"""The distillation objective: which losses, with which weights, between which layers.

`DistillationConfig` holds the weights and the temperature; `Distiller` turns a student's and a teacher's outputs
into the weighted total and its parts. The distiller is an `nn.Module` because the MSE loss between models of
different widths trains a projection: give its parameters to the optimizer and save it with the training state.
The attention-relation loss reads the q, k and v projections of one layer of each model: `Distiller.between` records
them with forward hooks (`AttentionProjections`), so neither model's code changes.

Padding never counts: every loss over tokens (hidden states, attention, relations, and the soft targets when the logits
are per token) averages over the real tokens of the batch's attention mask, for every task; the soft targets of a
sentence-level head average over examples.

```python
>>> from hf_compact.distillation import DistillationConfig, Distiller
>>> config = DistillationConfig(kd_weight=1.0, ce_weight=0.5, temperature=2.0)
>>> distiller = Distiller(config, layer_map=[1, 3, 5], student_width=384, teacher_width=384)
```
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from accelerate.utils import convert_to_fp32
from torch import nn

from . import losses
from .checkpointing import list_checkpoints
from .mlm_checks import is_masked_lm, require_mlm_head


@dataclass
class DistillationConfig:
    """Weights of the distillation losses (0 turns a loss off) and their settings."""

    temperature: float = field(default=2.0, metadata={"help": "Softening temperature T of the soft-target KL."})
    kd_weight: float = field(default=1.0, metadata={"help": "Soft-target KL (times T^2) weight."})
    ce_weight: float = field(default=0.0, metadata={"help": "Hard-label cross-entropy / MLM loss weight."})
    cos_weight: float = field(default=0.0, metadata={"help": "Cosine alignment of mapped hidden states."})
    mse_weight: float = field(default=0.0, metadata={"help": "MSE of mapped hidden states (projected if needed)."})
    attention_weight: float = field(default=0.0, metadata={"help": "KL of mapped attention distributions."})
    attention_relation_weight: float = field(
        default=0.0,
        metadata={"help": "MiniLM-v2 self-attention relations: KL of the query-query, key-key and value-value "
                          "relations of one teacher layer (--relation_teacher_layer) and the student's last layer. "
                          "Needs neither equal widths or head counts nor a masked-LM head."},
    )
    relation_heads: int = field(
        default=4,
        metadata={"help": "Relation heads of the relation losses (MiniLM): --attention_relation_weight, and "
                          "--attention_weight when head counts differ. Must divide both models' widths."},
    )
    relation_teacher_layer: int = field(
        default=-1,
        metadata={"help": "0-based teacher layer whose relations the student's last layer learns; negative counts "
                          "from the end (-1: the last layer)."},
    )

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} is invalid: it must be positive.")
        weights = self.weights()
        negative = {name: value for name, value in weights.items() if value < 0}
        if negative:
            raise ValueError(f"Loss weights must be >= 0; got {negative}.")
        if not any(weights.values()):
            raise ValueError("Every loss weight is 0: set at least one of " + ", ".join(weights) + ".")
        if self.relation_heads <= 0:
            raise ValueError(f"relation_heads={self.relation_heads} is invalid: it must be a positive integer.")

    def weights(self) -> dict[str, float]:
        return {
            "kd": self.kd_weight,
            "ce": self.ce_weight,
            "cos": self.cos_weight,
            "mse": self.mse_weight,
            "attention": self.attention_weight,
            "attention_relation": self.attention_relation_weight,
        }

    @property
    def needs_hidden_states(self) -> bool:
        return self.cos_weight > 0 or self.mse_weight > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention_weight > 0

    @property
    def needs_attention_projections(self) -> bool:
        """Whether the losses read the q, k and v projections of an attention layer of each model."""
        return self.attention_relation_weight > 0

    @property
    def uses_teacher(self) -> bool:
        """False when only the label loss is on: the student then trains on labels alone (a no-teacher baseline)."""
        return self.kd_weight > 0 or self.needs_teacher_forward

    @property
    def needs_teacher_forward(self) -> bool:
        """Whether each step needs the teacher's forward pass (else cached teacher logits are enough)."""
        return self.needs_hidden_states or self.needs_attentions or self.needs_attention_projections

    def output_flags(self) -> dict[str, bool]:
        """What both models' forward must return for these losses."""
        return {"output_hidden_states": self.needs_hidden_states or self.needs_attentions,
                "output_attentions": self.needs_attentions}

    def student_inputs(self, batch: dict) -> dict:
        """The student's inputs: the labels only when the label loss is on (the model then computes it)."""
        return batch if self.ce_weight > 0 else {k: v for k, v in batch.items() if k != "labels"}

    @torch.no_grad()
    def teacher_outputs(self, teacher: nn.Module, batch: dict):
        """The frozen teacher's outputs on a batch (without its labels)."""
        return teacher(**{k: v for k, v in batch.items() if k != "labels"}, **self.output_flags())

    def to_dict(self) -> dict:
        return asdict(self)


# The q, k and v projections of an attention layer, by model family: BERT's `layer.i.attention.self.query`,
# DistilBERT's `layer.i.attention.q_lin`, SqueezeBERT's `layers.i.attention.query`.
_PROJECTION = re.compile(r"(?:^|\.)(\d+)\.attention\.(?:self\.)?(q_lin|k_lin|v_lin|query|key|value)$")
_ROLES = {"q_lin": 0, "query": 0, "k_lin": 1, "key": 1, "v_lin": 2, "value": 2}


def attention_projection_modules(model: nn.Module) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
    """The (query, key, value) projection modules of each attention layer of a BERT-family model, in layer order."""
    layers: dict[int, list] = {}
    for name, module in model.named_modules():
        found = _PROJECTION.search(name)
        if found:
            layers.setdefault(int(found.group(1)), [None] * 3)[_ROLES[found.group(2)]] = module
    if not layers or any(None in projections for projections in layers.values()):
        raise ValueError(
            f"No query, key and value projections found in {type(model).__name__}: the attention-relation loss "
            "reads modules named like layer.<i>.attention.(self.)query/key/value or q_lin/k_lin/v_lin."
        )
    return [tuple(layers[index]) for index in sorted(layers)]


class CallMask:
    """The attention mask `model` was last called with (None before its first call, or when called without one),
    recorded by a forward pre-hook.

    ```python
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    >>> recorded = CallMask(model)
    >>> _ = model(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[1, 1, 0]]))
    >>> recorded.attention_mask
    tensor([[1, 1, 0]])
    >>> recorded.remove()
    ```
    """

    def __init__(self, model: nn.Module):
        self.attention_mask: torch.Tensor | None = None
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        self.attention_mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def remove(self) -> None:
        """Stop recording (removes the hook)."""
        self.handle.remove()


class AttentionProjections:
    """Records, at each forward pass of `model`, the outputs of the q, k and v projections of its attention layer
    `layer` (0-based, negative from the end) as (batch, seq, width) tensors, and the attention mask it was given.

    ```python
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    >>> recorded = AttentionProjections(model, layer=-1)
    >>> _ = model(torch.tensor([[1, 2, 3]]))
    >>> [tuple(t.shape) for t in recorded.take()]
    [(1, 3, 32), (1, 3, 32), (1, 3, 32)]
    >>> recorded.remove()
    ```
    """

    def __init__(self, model: nn.Module, layer: int = -1):
        projections = attention_projection_modules(model)
        if not -len(projections) <= layer < len(projections):
            raise ValueError(
                f"layer={layer} is outside the model's {len(projections)} attention layers (valid: "
                f"{-len(projections)}..{len(projections) - 1})."
            )
        self.layer = layer % len(projections)
        self.model_name = type(model).__name__
        # Upstream SqueezeBERT's projections are channels-first convolutions: (batch, width, seq).
        self.channels_first = getattr(getattr(model, "config", None), "model_type", None) == "squeezebert"
        self.outputs: list[torch.Tensor | None] = [None] * 3
        self.handles = [module.register_forward_hook(partial(self._record, index))
                        for index, module in enumerate(projections[self.layer])]
        self.call = CallMask(model)

    def _record(self, index: int, module, inputs, output) -> None:
        self.outputs[index] = output.transpose(1, 2) if self.channels_first else output

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """The attention mask of the model's last call."""
        return self.call.attention_mask

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The projections of the last forward pass; each pass's are taken once, so a pass that did not run is
        an error rather than a stale batch."""
        if None in self.outputs:
            raise ValueError(
                f"No forward pass of {self.model_name} recorded its q, k and v projections since they were last "
                "taken: run the model on the batch before computing the loss."
            )
        outputs, self.outputs = tuple(self.outputs), [None] * 3
        return outputs

    def remove(self) -> None:
        """Stop recording (removes the hooks)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.call.remove()


class Distiller(nn.Module):
    """Weighted sum of the distillation losses between a student and a teacher.

    Args:
        config: the weights and settings.
        layer_map: for each student layer, the teacher layer it is aligned with (see `hf_compact.layer_map`).
        student_width, teacher_width: hidden sizes; a learned projection is built when they differ and the MSE
            loss is on.
        student_heads, teacher_heads: attention head counts; when they differ the attention loss compares
            MiniLM-style relations of the hidden states instead of attention maps.

    The attention-relation loss needs the models themselves (their q, k and v projections are recorded as they run):
    build the distiller with `Distiller.between(config, layer_map, student, teacher)`. Built that way, it also records
    the attention mask of each call of the student, which the losses use when `forward` is given none.
    """

    def __init__(
        self,
        config: DistillationConfig,
        layer_map: list[int],
        student_width: int,
        teacher_width: int,
        student_heads: int | None = None,
        teacher_heads: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.layer_map = list(layer_map)
        self.same_heads = student_heads == teacher_heads
        if config.cos_weight > 0 and student_width != teacher_width:
            raise ValueError(
                f"cos_weight={config.cos_weight} needs equal widths but the student has {student_width} and the "
                f"teacher {teacher_width}; use mse_weight (it learns a projection) instead."
            )
        if (config.attention_weight > 0 and not self.same_heads) or config.attention_relation_weight > 0:
            for width in (student_width, teacher_width):
                if width % config.relation_heads:
                    raise ValueError(
                        f"relation_heads={config.relation_heads} must divide both widths ({student_width}, "
                        f"{teacher_width}) for the relation losses (--attention_relation_weight, and "
                        "--attention_weight when head counts differ)."
                    )
        self.student_call: CallMask | None = None
        self.student_projections: AttentionProjections | None = None
        self.teacher_projections: AttentionProjections | None = None
        self.projection = None
        if config.mse_weight > 0 and student_width != teacher_width:
            self.projection = nn.Linear(student_width, teacher_width)

    @classmethod
    def between(cls, config: DistillationConfig, layer_map: list[int], student, teacher) -> Distiller:
        """The distiller of a student and a teacher, widths and head counts read from their configs. It records the
        attention mask of each call of the student and, for the attention-relation loss, the q, k and v projections
        of the teacher's `relation_teacher_layer` and of the student's last layer. A masked-LM teacher's soft targets
        are only as good as its head: with `kd_weight > 0` its checkpoint must hold the head's weights
        (`hf_compact.mlm_checks.require_mlm_head`)."""
        if config.kd_weight > 0 and is_masked_lm(teacher):
            require_mlm_head(teacher)
        distiller = cls(config, layer_map, student.config.hidden_size, teacher.config.hidden_size,
                        student.config.num_attention_heads, teacher.config.num_attention_heads)
        distiller.student_call = CallMask(student)
        if config.needs_attention_projections:
            try:
                distiller.teacher_projections = AttentionProjections(teacher, config.relation_teacher_layer)
            except ValueError as error:
                raise ValueError(f"relation_teacher_layer={config.relation_teacher_layer}: {error}") from None
            distiller.student_projections = AttentionProjections(student, -1)
        return distiller

    @property
    def relation_layers(self) -> tuple[int, int] | None:
        """The (student, teacher) layers of the attention-relation loss, 0-based; None when it is off."""
        if self.student_projections is None:
            return None
        return self.student_projections.layer, self.teacher_projections.layer

    def remove_hooks(self) -> None:
        """Stop recording the student's attention mask and the models' projections (the distiller then cannot compute
        the relation loss, and needs the mask passed to `forward`)."""
        for recorded in (self.student_call, self.student_projections, self.teacher_projections):
            if recorded is not None:
                recorded.remove()
        self.student_call = self.student_projections = self.teacher_projections = None

    def forward(
        self,
        student_outputs,
        teacher_logits: torch.Tensor | None = None,
        teacher_outputs=None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and each weighted part (as floats, for logging). `student_outputs.loss` is the hard-label
        loss when labels were given to the student; `teacher_logits` may come from a cache. `attention_mask` is the
        batch's, for every task: the losses over tokens count its real tokens only (without one, the mask of the
        student's last call when `Distiller.between` records it, else every token), while the soft targets of
        sentence-level logits average over examples whatever the mask. The losses are computed in float32 whatever
        precision the forward passes ran in."""
        config = self.config
        if attention_mask is None and self.student_call is not None:
            attention_mask = self.student_call.attention_mask
        student_outputs, teacher_logits, teacher_outputs = convert_to_fp32((student_outputs, teacher_logits,
                                                                            teacher_outputs))
        if teacher_logits is None and teacher_outputs is not None:
            teacher_logits = teacher_outputs.logits
        parts: dict[str, torch.Tensor] = {}
        if config.kd_weight > 0:
            parts["kd"] = losses.soft_target_kl(
                student_outputs.logits, teacher_logits, config.temperature,
                attention_mask,
            )
        if config.ce_weight > 0:
            if student_outputs.loss is None:
                raise ValueError("ce_weight > 0 needs labels: pass them to the student's forward.")
            parts["ce"] = student_outputs.loss
        if config.needs_teacher_forward:
            if teacher_outputs is None:
                raise ValueError("The hidden-state and attention losses need the teacher's outputs at every step.")
            pairs = [(i + 1, t + 1) for i, t in enumerate(self.layer_map)]  # index 0 holds the embeddings
            if config.cos_weight > 0:
                parts["cos"] = sum(
                    losses.hidden_cosine(student_outputs.hidden_states[s], teacher_outputs.hidden_states[t],
                                         attention_mask)
                    for s, t in pairs
                ) / len(pairs)
            if config.mse_weight > 0:
                parts["mse"] = sum(
                    losses.hidden_mse(student_outputs.hidden_states[s], teacher_outputs.hidden_states[t],
                                      attention_mask, self.projection)
                    for s, t in pairs
                ) / len(pairs)
            if config.attention_weight > 0:
                if self.same_heads:
                    attention = [
                        losses.attention_kl(student_outputs.attentions[i], teacher_outputs.attentions[t],
                                            attention_mask)
                        for i, t in enumerate(self.layer_map)
                    ]
                else:
                    attention = [
                        losses.relation_kl(student_outputs.hidden_states[s], teacher_outputs.hidden_states[t],
                                           attention_mask, config.relation_heads)
                        for s, t in pairs
                    ]
                parts["attention"] = sum(attention) / len(attention)
        if config.attention_relation_weight > 0:
            if self.student_projections is None:
                raise ValueError(
                    "attention_relation_weight > 0 reads both models' q, k and v projections: build the distiller "
                    "with Distiller.between(config, layer_map, student, teacher)."
                )
            student_qkv, teacher_qkv = convert_to_fp32((self.student_projections.take(),
                                                        self.teacher_projections.take()))
            parts["attention_relation"] = losses.attention_relation_kl(student_qkv, teacher_qkv, attention_mask,
                                                                       config.relation_heads)
        weights = config.weights()
        total = sum(weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) * weights[name] for name, value in parts.items()}


def is_finite(loss: torch.Tensor) -> bool:
    value = float(loss.detach())
    return not (math.isnan(value) or math.isinf(value))


def stop_unless_finite(loss: torch.Tensor, parts: dict[str, float], batch: int, checkpoint_dir: str) -> None:
    """Stop the run with a message when the loss is NaN or infinite, naming the newest good checkpoint it keeps."""
    if not is_finite(loss):
        checkpoints = list_checkpoints(checkpoint_dir)
        raise SystemExit(
            f"The loss became {float(loss)} at batch {batch} (parts: {parts}). Training stopped; the last good "
            f"checkpoint is kept in {checkpoints[-1] if checkpoints else 'none (none saved)'}. Lower --learning_rate "
            "or --temperature, or use --mixed_precision no."
        )


__all__ = [
    "AttentionProjections",
    "CallMask",
    "DistillationConfig",
    "Distiller",
    "attention_projection_modules",
    "is_finite",
    "stop_unless_finite",
]
