"""Augmented copies of training texts for a transfer set, as Tang et al. (2019, "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks") built theirs: the teacher labels the copies with its soft targets, so they
need no labels of their own.

Each word of a text is, with one uniform draw, replaced by the tokenizer's mask token (probability `mask_prob`),
dropped (`dropout_prob`, word dropout) or kept; then, with probability `ngram_prob`, an n-gram of the result (n
uniform in 1..5) stands for the whole text. Words are the text's white-space separated pieces. A copy equal to its
text or to an earlier copy is left out, so a text gives at most `copies` new ones. Every draw comes from a generator
seeded by the seed, the text's position and the copy's number: the same seed gives the same copies on every machine
and in every process.

```python
>>> from hf_compact.augmentation import augment_texts
>>> augment_texts(["a quietly moving film"], copies=2, seed=0, mask_token="[MASK]", mask_prob=0.5)
['[MASK] quietly moving film', 'a quietly [MASK] [MASK]']
```
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


MAX_NGRAM = 5  # the longest sampled n-gram (Tang et al.)


@dataclass(frozen=True)
class AugmentationConfig:
    """The probabilities of the three changes; `mask_prob + dropout_prob` is the share of words changed."""

    mask_prob: float = 0.1
    dropout_prob: float = 0.1
    ngram_prob: float = 0.25

    def __post_init__(self):
        for name in ("mask_prob", "dropout_prob", "ngram_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"--augment_{name} must be in [0, 1], got {value}.")
        if self.mask_prob + self.dropout_prob > 1:
            raise ValueError(
                f"--augment_mask_prob + --augment_dropout_prob = {self.mask_prob + self.dropout_prob} is more than 1: "
                "a word is masked, dropped or kept, so their sum must be at most 1."
            )


def augment_text(text: str, rng: random.Random, mask_token: str | None, config: AugmentationConfig) -> str:
    """One augmented copy of `text` drawn with `rng`: words masked or dropped, then maybe an n-gram of it. At least
    one word is always left (a random one of the text's when every word was dropped)."""
    words = text.split()
    if config.mask_prob > 0 and not mask_token:
        raise ValueError("Masking words needs the tokenizer's mask token, and this tokenizer has none: use "
                         "--augment_mask_prob 0.")
    kept = []
    for word in words:
        draw = rng.random()
        if draw < config.mask_prob:
            kept.append(mask_token)
        elif draw >= config.mask_prob + config.dropout_prob:
            kept.append(word)
    if not kept and words:
        kept = [rng.choice(words)]
    if len(kept) > 1 and rng.random() < config.ngram_prob:
        length = min(rng.randint(1, MAX_NGRAM), len(kept))
        start = rng.randrange(len(kept) - length + 1)
        kept = kept[start : start + length]
    return " ".join(kept)


def augment_texts(
    texts: Sequence[str],
    copies: int,
    seed: int,
    mask_token: str | None,
    mask_prob: float = 0.1,
    dropout_prob: float = 0.1,
    ngram_prob: float = 0.25,
) -> list[str]:
    """Up to `copies` augmented copies of each text, in order (all of the first text's, then the second's...); copies
    equal to their text or to an earlier copy of it are left out."""
    if copies < 0:
        raise ValueError(f"--augment must be 0 or more copies per text, got {copies}.")
    config = AugmentationConfig(mask_prob, dropout_prob, ngram_prob)
    augmented = []
    for index, text in enumerate(texts):
        seen = {" ".join(text.split())}
        for copy in range(copies):
            # A string seed is hashed with SHA-512: the same on every machine, unlike hash() of a tuple.
            candidate = augment_text(text, random.Random(f"{seed}:{index}:{copy}"), mask_token, config)
            if candidate not in seen:
                seen.add(candidate)
                augmented.append(candidate)
    return augmented


__all__ = ["MAX_NGRAM", "AugmentationConfig", "augment_text", "augment_texts"]
