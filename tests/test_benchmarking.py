"""`compare_speed`: every engine timed on the same batches, in an order that lets no engine slow down another."""

import numpy as np
from transformers import BertTokenizer

from hf_compact.benchmarking import compare_speed
from hf_compact.inference import BatchClassifier


class Recorder(BatchClassifier):
    """A classifier that only records, in a shared log, that it ran."""

    input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def __init__(self, name, log):
        self.name, self.log = name, log

    def forward(self, batch):
        self.log.append(self.name)
        return np.zeros((len(batch["input_ids"]), 2), dtype=np.float32)


def runs_of(log):
    """Lengths of the stretches in which one model ran without another running in between."""
    lengths = [1]
    for previous, current in zip(log, log[1:]):
        if current == previous:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def test_each_model_runs_its_whole_pass_before_the_next_starts(tokenizer_dir):
    # Engines whose threads keep spinning after a call (ONNX Runtime's do, by default) take the cores from the model
    # timed right after them: taking turns batch by batch made such an engine slow its neighbour down. Each model now
    # runs a whole pass (every batch, then every single text) at a time.
    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    log = []
    models = {name: Recorder(name, log) for name in ("a", "b", "c")}
    texts = [f"text number {i} of the benchmark" for i in range(6)]
    speed = compare_speed(models, tokenizer, texts, batch_size=2, repeats=3, single_text_samples=4)

    assert speed["batches"] == 3 and speed["repeats"] == 3
    assert log.count("a") == log.count("b") == log.count("c") == 3 * (1 + 3) + 4 * 2  # warm-up, timed passes, singles
    assert min(runs_of(log)) >= 3  # a pass of 3 batches or 4 single texts, never one batch
    timed = log[3 * 3 + 4 * 3:][: 3 * 3 * 3]  # the timed passes follow every model's untimed pass
    starts = [timed[i] for i in range(0, len(timed), 3)]
    assert sorted(starts[:3]) == sorted(starts[3:6]) == ["a", "b", "c"]
    assert starts[:3] != starts[3:6]  # the order rotates from one repeat to the next
    assert set(speed["models"]) == {"a", "b", "c"}

