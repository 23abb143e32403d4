"""One process against two on the same machine: the demo's compact_distilbert distillation run both ways.

    python benchmarks/distill_processes.py --teacher outputs/demo/minilm-l6-rotten-tomatoes

Runs recipes/distill.py on the Rotten Tomatoes splits with the demo's student settings, first as one process with
every core, then under `accelerate launch --config_file recipes/accelerate_configs/cpu_2_processes.yaml` as two
processes with one share of the cores each and half the per-process batch, so that both runs train with the same
global batch. Prints and writes (`benchmarks/results/distill_processes_cpu.json`) each run's process count (read back
from its results.json), test accuracy, agreement with the teacher, training seconds and wall time, and the CPU.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hf_compact.benchmarking import environment_info


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from rotten_tomatoes import write_splits  # noqa: E402


def distill_argv(args, output_dir, batch_size):
    files = write_splits(Path(args.output_dir) / "reviews")
    return [
        str(ROOT / "recipes" / "distill.py"), "--teacher", args.teacher, "--train_file", files["train"],
        "--validation_file", files["validation"], "--test_file", files["test"],
        "--student_type", "compact_distilbert", "--output_dir", str(output_dir), "--overwrite_output_dir",
        "--seed", str(args.seed), "--num_train_epochs", str(args.epochs), "--learning_rate", "2e-4",
        "--per_device_train_batch_size", str(batch_size), "--max_length", "64", "--temperature", "2", "--kd_weight", "1",
        "--ce_weight", "0.5", "--freeze_word_embeddings", "--student_dropout", "0", "--attn_implementation", "eager",
        "--mixed_precision", args.mixed_precision, "--report_to", "none", "--latency_batches", "0",
        "--no_model_card", "--eval_last_epoch_only", "--teacher_cache_dir", str(Path(args.output_dir) / "cache"),
    ]


def run(name, command, output_dir, env):
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"{name} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    results = json.loads((Path(output_dir) / "results.json").read_text())
    training = results["training"]
    return {
        "run": name,
        "num_processes": training["distributed"]["num_processes"],
        "global_batch_size": training["distributed"]["global_batch_size"],
        "threads_per_process": training["distributed"]["threads_per_process"],
        "test_accuracy": results["student"]["metrics"]["accuracy"],
        "agreement": results["student"]["metrics"]["agreement"],
        "teacher_accuracy": results["teacher"]["metrics"]["accuracy"],
        "train_seconds": training["train_seconds"],
        "wall_seconds": wall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="A fine-tuned teacher (the demo's).")
    parser.add_argument("--output_dir", default="outputs/multiprocess")
    parser.add_argument("--global_batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "distill_processes_cpu.json"))
    args = parser.parse_args()
    cores = os.cpu_count()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    output = Path(args.output_dir)
    # The teacher's soft targets are cached by the first run and read back by the second: neither run's time
    # includes the teacher pass.
    rows = [run("1 process", [sys.executable, *distill_argv(args, output / "one", args.global_batch_size)],
                output / "one", {**env, "OMP_NUM_THREADS": str(cores)})]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "recipes" / "accelerate_configs" / "cpu_2_processes.yaml"),
                "--num_cpu_threads_per_process", str(max(1, cores // 2))]
    rows.append(run("2 processes", launcher + distill_argv(args, output / "two", args.global_batch_size // 2),
                    output / "two", env))
    for row in rows:
        print(f"{row['run']:>12}: {row['num_processes']} process(es) x {row['threads_per_process']} thread(s), "
              f"global batch {row['global_batch_size']}, test accuracy {100 * row['test_accuracy']:.2f}% "
              f"(agreement {100 * row['agreement']:.2f}%), training {row['train_seconds']:.0f} s, "
              f"wall {row['wall_seconds']:.0f} s")
    gap = 100 * (rows[1]["test_accuracy"] - rows[0]["test_accuracy"])
    print(f"accuracy, 2 processes minus 1: {gap:+.2f} points; training time ratio "
          f"{rows[0]['train_seconds'] / rows[1]['train_seconds']:.2f}x")
    payload = {"environment": environment_info(), "epochs": args.epochs, "seed": args.seed,
               "mixed_precision": args.mixed_precision, "runs": rows, "accuracy_gap_points": gap}
    Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
