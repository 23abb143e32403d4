"""hf_compact.augmentation: masking, word dropout and n-gram sampling of training texts (Tang et al., 2019)."""

import random
import subprocess
import sys

import pytest

from hf_compact.augmentation import MAX_NGRAM, AugmentationConfig, augment_text, augment_texts


TEXT = "an engaging and often very funny film about growing up in a small town"
WORDS = TEXT.split()


def config(mask=0.0, dropout=0.0, ngram=0.0):
    return AugmentationConfig(mask_prob=mask, dropout_prob=dropout, ngram_prob=ngram)


def test_nothing_changes_with_every_probability_zero():
    assert augment_text(TEXT, random.Random(0), "[MASK]", config()) == TEXT


def test_masking_replaces_words_in_place_at_about_its_rate():
    copies = [augment_text(TEXT, random.Random(seed), "[MASK]", config(mask=0.3)).split() for seed in range(400)]
    assert all(len(words) == len(WORDS) for words in copies)  # masked, never dropped or cut
    assert all(word in ("[MASK]", original) for words in copies for word, original in zip(words, WORDS))
    masked = sum(word == "[MASK]" for words in copies for word in words) / (400 * len(WORDS))
    assert masked == pytest.approx(0.3, abs=0.03)


def test_word_dropout_removes_words_and_keeps_the_order():
    copies = [augment_text(TEXT, random.Random(seed), None, config(dropout=0.3)).split() for seed in range(400)]
    for words in copies:
        positions = [WORDS.index(word) for word in words]  # the text's words are all different
        assert positions == sorted(positions) and "[MASK]" not in words
    kept = sum(len(words) for words in copies) / (400 * len(WORDS))
    assert kept == pytest.approx(0.7, abs=0.03)


def test_every_word_dropped_still_leaves_one_of_the_text():
    copy = augment_text(TEXT, random.Random(0), None, config(dropout=1.0))
    assert copy in WORDS


def test_ngram_sampling_takes_a_contiguous_piece_of_one_to_five_words():
    lengths = set()
    for seed in range(300):
        copy = augment_text(TEXT, random.Random(seed), None, config(ngram=1.0))
        assert copy in TEXT and f" {copy} " in f" {TEXT} "  # whole words, contiguous
        lengths.add(len(copy.split()))
    assert lengths == set(range(1, MAX_NGRAM + 1))


def test_ngram_sampling_happens_at_its_rate():
    cut = sum(augment_text(TEXT, random.Random(seed), None, config(ngram=0.25)) != TEXT for seed in range(800))
    assert cut / 800 == pytest.approx(0.25 * (1 - 1 / len(WORDS)), abs=0.05)  # a 1..5-gram is never the whole text


def test_copies_are_seeded_deterministic_and_differ_between_seeds():
    texts = [TEXT, "a slow dull and predictable thriller", "one"]
    first = augment_texts(texts, copies=5, seed=7, mask_token="[MASK]", mask_prob=0.2, dropout_prob=0.2)
    assert first == augment_texts(texts, copies=5, seed=7, mask_token="[MASK]", mask_prob=0.2, dropout_prob=0.2)
    assert first != augment_texts(texts, copies=5, seed=8, mask_token="[MASK]", mask_prob=0.2, dropout_prob=0.2)


def test_copies_are_the_same_in_another_interpreter():
    """String seeds are hashed the same way in every process (PYTHONHASHSEED does not change them)."""
    code = ("from hf_compact.augmentation import augment_texts; "
            f"print(augment_texts([{TEXT!r}], copies=4, seed=3, mask_token='[MASK]'))")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert printed == repr(augment_texts([TEXT], copies=4, seed=3, mask_token="[MASK]"))


def test_copies_equal_to_the_text_or_to_each_other_are_left_out():
    # One word: a copy is the word itself or [MASK]; at most one new copy whatever is asked for.
    copies = augment_texts(["word"], copies=20, seed=0, mask_token="[MASK]", mask_prob=0.5, dropout_prob=0.0)
    assert copies == ["[MASK]"]
    assert augment_texts([TEXT], copies=3, seed=0, mask_token="[MASK]", mask_prob=0, dropout_prob=0,
                         ngram_prob=0) == []


def test_copies_come_text_by_text():
    texts = ["alpha beta gamma delta epsilon", "one two three four five six"]
    copies = augment_texts(texts, copies=3, seed=1, mask_token="[MASK]", mask_prob=0.3, dropout_prob=0.3)
    origins = [0 if set(copy.split()) - {"[MASK]"} <= set(texts[0].split()) else 1 for copy in copies]
    assert origins == sorted(origins) and len(copies) <= 6


def test_bad_settings_are_refused_with_the_flag_named():
    with pytest.raises(ValueError, match="--augment_mask_prob must be in"):
        AugmentationConfig(mask_prob=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        AugmentationConfig(mask_prob=0.6, dropout_prob=0.6)
    with pytest.raises(ValueError, match="--augment must be 0 or more"):
        augment_texts([TEXT], copies=-1, seed=0, mask_token="[MASK]")
    with pytest.raises(ValueError, match="mask token"):
        augment_texts([TEXT], copies=1, seed=0, mask_token=None, mask_prob=0.1)
