"""Analytic FLOP counts of BERT-family encoders: what a forward pass must compute, for model cards and benchmarks.

A multiply-add counts as 2 FLOPs. The count covers the matrix products, which are nearly all of the work: the
q/k/v/output projections and the feed-forward of every layer (divided by the number of groups where a projection is
grouped, as in SqueezeBERT), and the two attention products (scores and weighted values). Embedding look-ups,
LayerNorms, softmax, activations and the task head are left out; they are a fraction of a percent at these sizes.
Padding positions are counted, since a padded batch computes them.

```python
>>> from hf_compact.flops import encoder_flops
>>> encoder_flops(config, batch_size=8, sequence_length=128) / 1e9  # GFLOP for one forward pass
```
"""

from __future__ import annotations

from .model_types import SQUEEZEBERT_GROUP_FIELDS


def _projection_groups(config) -> dict[str, int]:
    """Groups of q, k, v, attention output, intermediate and output projections (1 where dense)."""
    return {name: int(getattr(config, name, 1) or 1) for name in SQUEEZEBERT_GROUP_FIELDS}


def layer_flops_per_token(config, sequence_length: int) -> int:
    """FLOPs one encoder layer spends on one token of a sequence of `sequence_length` tokens."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    groups = _projection_groups(config)
    projections = 2 * hidden * hidden * sum(
        1 / groups[name] for name in ("q_groups", "k_groups", "v_groups", "post_attention_groups")
    )
    feed_forward = 2 * hidden * intermediate * (1 / groups["intermediate_groups"] + 1 / groups["output_groups"])
    attention = 2 * 2 * sequence_length * hidden  # q.k over every key, then the weighted sum of values
    return int(round(projections + feed_forward + attention))


def flops_per_token(config, sequence_length: int = 128) -> int:
    """Encoder FLOPs per token at `sequence_length` (attention grows with it; the projections do not)."""
    return config.num_hidden_layers * layer_flops_per_token(config, sequence_length)


def encoder_flops(config, batch_size: int, sequence_length: int) -> int:
    """FLOPs of one forward pass of the encoder on a `batch_size` x `sequence_length` batch."""
    return batch_size * sequence_length * flops_per_token(config, sequence_length)
