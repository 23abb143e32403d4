"""Forward-pass speed of the compact models against the transformers classes they replace, on the same weights.

Encoders with random weights at base sizes (hidden 768, 12 heads, intermediate 3072, sequence 128 by default):

- `bert`: transformers' `BertModel`, 12 layers (the teacher's shape), sdpa attention;
- `distilbert`: transformers' `DistilBertModel`, 6 layers, sdpa;
- `compact_distilbert_reference`: `hf_compact.CompactDistilBertModel` with `distilbert`'s weights, sdpa, as its
  modeling file computes it;
- `compact_distilbert`: the same model with `hf_compact.kernels.optimize` (CPU kernels where they win on this machine);
- `squeezebert`: transformers' `SqueezeBertModel`, 12 layers, SqueezeBERT's groups (its own attention code);
- `compact_squeezebert_reference` and `compact_squeezebert`: `hf_compact.CompactSqueezeBertModel` with
  `squeezebert`'s weights, sdpa, without and with the kernels.

The kernels are chosen afresh for the run (the timings of the first call of each shape class, recorded in the JSON
under `kernels`), not read from the user's cache. Each compact model's output is first compared with the model it
replaces (the run stops above 1e-4). Then, per
batch size, every model runs a few warm-up passes and `--repeats` timed passes under `torch.inference_mode`,
round-robin (one pass of each model in turn, the starting model rotating), together with 2048 x 2048 x 2048 products
that measure the machine's matrix-multiply peak under the same conditions (`torch.mm`, and on CPU oneDNN's inner
product; the peak is the faster engine's rate, both are recorded); medians are reported. On a
shared machine the absolute numbers move with the load, while the interleaving keeps the ratios fair.

Peak memory is measured in a fresh process per model (`--no-memory` skips it): the growth of the process's peak
resident set size (`ru_maxrss`) over its resident size after the weights are built and one tiny warm-up pass has run,
with the batch sizes run in increasing order. It is what the forward pass adds on top of the weights: activations,
library workspaces and allocator slack.

    python benchmarks/speed.py                       # CPU, 2 threads, batches 1, 8, 32
    python benchmarks/speed.py --batch-sizes 8 --repeats 20 --threads 4
    python benchmarks/speed.py --device cuda         # fp32 and bf16, writes speed_cuda.json
    python benchmarks/speed.py --short               # base sizes, 3 rounds, no memory probes
    python benchmarks/speed.py --quick               # tiny sizes: a smoke run in seconds
    python benchmarks/speed.py --profile compact_squeezebert --batch-sizes 1   # where the time goes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    SqueezeBertConfig,
    SqueezeBertModel,
)

import hf_compact
from hf_compact import (
    CompactDistilBertConfig,
    CompactDistilBertModel,
    CompactSqueezeBertConfig,
    CompactSqueezeBertModel,
)
from hf_compact.benchmarking import environment_info
from hf_compact.flops import encoder_flops
from hf_compact.io import write_json_atomic
from hf_compact.kernels import KernelSelector, machine_key, onednn_available, optimize


HERE = Path(__file__).resolve().parent

MODELS = (
    "bert",
    "distilbert",
    "compact_distilbert_reference",
    "compact_distilbert",
    "squeezebert",
    "compact_squeezebert_reference",
    "compact_squeezebert",
)
# compact model -> the transformers model it replaces (and whose weights it loads)
REPLACES = {
    "compact_distilbert_reference": "distilbert",
    "compact_distilbert": "distilbert",
    "compact_squeezebert_reference": "squeezebert",
    "compact_squeezebert": "squeezebert",
}
# The models that run with the CPU kernels attached; all choose them through this one selector.
OPTIMIZED = ("compact_distilbert", "compact_squeezebert")
SELECTOR = KernelSelector(cache_path=None)
PARITY_LIMIT = 1e-4

BASE_SIZES = dict(hidden=768, heads=12, intermediate=3072, layers=12, distil_layers=6, vocab=30522, positions=512)
QUICK_SIZES = dict(hidden=64, heads=4, intermediate=256, layers=2, distil_layers=2, vocab=1000, positions=64)
SQUEEZEBERT_GROUPS = dict(
    q_groups=4, k_groups=4, v_groups=4, post_attention_groups=1, intermediate_groups=4, output_groups=4
)
# Side of the square `torch.mm` that measures the peak: large enough to saturate the device.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192, "quick": 256}


def _configs(sizes: dict) -> dict:
    """Each model's configuration (dropout is irrelevant: every model runs in eval mode)."""
    hidden, heads, intermediate = sizes["hidden"], sizes["heads"], sizes["intermediate"]
    common = dict(vocab_size=sizes["vocab"], max_position_embeddings=sizes["positions"])
    bert_like = dict(hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate, **common)
    distil = dict(dim=hidden, n_heads=heads, hidden_dim=intermediate, n_layers=sizes["distil_layers"], **common)
    squeeze = dict(bert_like, embedding_size=hidden, num_hidden_layers=sizes["layers"], **SQUEEZEBERT_GROUPS)
    configs = {
        "bert": BertConfig(num_hidden_layers=sizes["layers"], attn_implementation="sdpa", **bert_like),
        "distilbert": DistilBertConfig(attn_implementation="sdpa", **distil),
        "compact_distilbert": CompactDistilBertConfig(attn_implementation="sdpa", **distil),
        # transformers' SqueezeBERT has its own attention code only.
        "squeezebert": SqueezeBertConfig(attn_implementation="eager", **squeeze),
        "compact_squeezebert": CompactSqueezeBertConfig(attn_implementation="sdpa", **squeeze),
    }
    for name in OPTIMIZED:
        configs[f"{name}_reference"] = configs[name]
    return configs


MODEL_CLASSES = {
    "bert": BertModel,
    "distilbert": DistilBertModel,
    "compact_distilbert": CompactDistilBertModel,
    "compact_distilbert_reference": CompactDistilBertModel,
    "squeezebert": SqueezeBertModel,
    "compact_squeezebert": CompactSqueezeBertModel,
    "compact_squeezebert_reference": CompactSqueezeBertModel,
}


def build_models(sizes: dict, names=MODELS, seed: int = 0) -> dict[str, torch.nn.Module]:
    """The models in eval mode; each compact model loads the weights of the model it replaces, strictly, and those in
    `OPTIMIZED` have the CPU kernels attached."""
    configs = _configs(sizes)
    models = {}
    for name in names:
        torch.manual_seed(seed)
        models[name] = MODEL_CLASSES[name](configs[name]).eval()
    for compact, upstream in REPLACES.items():
        if compact in models and upstream in models:
            models[compact].load_state_dict(models[upstream].state_dict(), strict=True)
    for name in OPTIMIZED:
        if name in models:
            optimize(models[name], SELECTOR)
    return models


def flops_configs(sizes: dict) -> dict:
    """The configuration `encoder_flops` reads for each model: a transformers model is counted with the compact
    configuration of the same architecture, whose field names `encoder_flops` knows."""
    configs = _configs(sizes)
    return {name: configs[next((c for c, u in REPLACES.items() if u == name), name)] for name in MODELS}


def make_inputs(batch_size: int, sequence_length: int, vocab_size: int, device: str, seed: int = 0) -> dict:
    """Random token ids (no padding) and an all-ones attention mask."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch_size, sequence_length), generator=generator)
    mask = torch.ones(batch_size, sequence_length, dtype=torch.long)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def check_parity(models: dict, inputs: dict) -> dict[str, float]:
    """Max |difference| of the last hidden states of each compact model and the model it replaces."""
    differences = {}
    with torch.inference_mode():
        for compact, upstream in REPLACES.items():
            if compact in models and upstream in models:
                ours = models[compact](**inputs).last_hidden_state.float()
                theirs = models[upstream](**inputs).last_hidden_state.float()
                differences[compact] = (ours - theirs).abs().max().item()
    return differences


class Timer:
    """Wall-clock timing of one call: `perf_counter` on CPU, CUDA events (after a synchronize) on GPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def time_round_robin(calls: dict, repeats: int, warmup: int, timer: Timer) -> dict[str, list[float]]:
    """Seconds per call of each entry of `calls`: warm-up passes, then `repeats` rounds, each calling every entry
    once, starting one entry later every round so no entry always follows the same one."""
    names = list(calls)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                calls[name]()
        times = {name: [] for name in names}
        for round_index in range(repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(timer(calls[name]))
    return times


def matmul_call(size: int, device: str, dtype: torch.dtype):
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return lambda: torch.mm(a, b)


def peak_calls(size: int, device: str, dtype: torch.dtype) -> dict:
    """The square products that measure the peak: `torch.mm` (the BLAS library torch was built with) and, on CPUs
    where torch has it, oneDNN's inner product on a weight in its own layout (what
    `hf_compact.kernels.onednn_projection` runs). Either can be the faster engine on a given CPU; the peak is the faster
    one's rate."""
    calls = {"peak torch.mm": matmul_call(size, device, dtype)}
    if device == "cpu" and onednn_available():
        a = torch.randn(size, size, dtype=dtype)
        b = torch.ops.mkldnn._reorder_linear_weight(torch.randn(size, size, dtype=dtype), size)
        calls["peak oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return calls


def peak_rates(size: int, medians: dict) -> dict[str, float]:
    """GFLOP/s of each peak engine from the medians of the `peak_calls` timings."""
    return {name.removeprefix("peak "): 2 * size**3 / seconds / 1e9 for name, seconds in medians.items()
            if name.startswith("peak ")}


def memory_probe(args) -> dict[str, float]:
    """Run in a fresh process: peak resident growth (MB) of one model's forward at each batch size, increasing."""
    torch.set_num_threads(args.threads)
    sizes = QUICK_SIZES if args.quick else BASE_SIZES
    model = build_models(sizes, names=(args.memory_probe,))[args.memory_probe]
    with torch.inference_mode():
        model(**make_inputs(1, 8, sizes["vocab"], "cpu"))
        baseline = _current_rss_bytes()
        peaks = {}
        for batch_size in sorted(args.batch_sizes):
            model(**make_inputs(batch_size, args.seq_len, sizes["vocab"], "cpu"))
            peaks[str(batch_size)] = max(0, _peak_rss_bytes() - baseline) / 2**20
    return peaks


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def measure_memory(args, names) -> dict[str, dict[str, float]]:
    """`memory_probe` for each model, each in its own subprocess (Linux only; {} elsewhere)."""
    if not os.path.exists("/proc/self/statm"):
        return {}
    results = {}
    for name in names:
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", name, "--threads",
                   str(args.threads), "--seq-len", str(args.seq_len), "--batch-sizes", *map(str, args.batch_sizes)]
        if args.quick:
            command.append("--quick")
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    return results


def benchmark(args, device: str, dtype: torch.dtype, sizes: dict, memory: dict) -> dict:
    """Parity check, then the interleaved timings of every model at every batch size; returns the results dict."""
    models = build_models(sizes)
    for model in models.values():
        model.to(device=device, dtype=dtype)
    parity_inputs = make_inputs(2, args.seq_len, sizes["vocab"], device)
    differences = check_parity(models, parity_inputs)
    for name, difference in differences.items():
        print(f"max |{name} - {REPLACES[name]}| = {difference:.2e}")
    # Only fp32 is held to the limit: lower precisions round differently in every layer.
    if dtype == torch.float32 and any(difference > PARITY_LIMIT for difference in differences.values()):
        raise SystemExit(
            f"outputs differ by more than {PARITY_LIMIT:g}: {differences}; not timing different computations"
        )

    timer = Timer(device)
    counted = flops_configs(sizes)
    matmul_size = MATMUL_SIZE["quick" if args.quick else device]
    rows, peaks, engine_peaks = [], [], []
    for batch_size in args.batch_sizes:
        inputs = make_inputs(batch_size, args.seq_len, sizes["vocab"], device, seed=batch_size)
        calls = {name: (lambda model=model: model(**inputs)) for name, model in models.items()}
        calls.update(peak_calls(matmul_size, device, dtype))
        times = time_round_robin(calls, args.repeats, args.warmup, timer)
        medians = {name: statistics.median(values) for name, values in times.items()}
        engines = peak_rates(matmul_size, medians)
        engine_peaks.append(engines)
        peak = max(engines.values())
        peaks.append(peak)
        for name, model in models.items():
            flops = encoder_flops(counted[name], batch_size, args.seq_len)
            replaced = REPLACES.get(name)
            rows.append({
                "model": name,
                "class": type(model).__name__,
                "batch_size": batch_size,
                "sequence_length": args.seq_len,
                "median_ms": medians[name] * 1e3,
                "min_ms": min(times[name]) * 1e3,
                "max_ms": max(times[name]) * 1e3,
                "speedup_vs_replaced": medians[replaced] / medians[name] if replaced else None,
                "replaces": replaced,
                "speedup_vs_bert": medians["bert"] / medians[name],
                "gflop": flops / 1e9,
                "gflop_per_s": flops / medians[name] / 1e9,
                "fraction_of_peak": flops / medians[name] / 1e9 / peak,
                "peak_gflop_per_s_this_batch": peak,
                "peak_memory_mb": memory.get(name, {}).get(str(batch_size)),
            })
    environment = environment_info()
    return {
        "device": device,
        "device_name": environment["hardware"],
        "cpu_flags": environment["cpu_flags"],
        "instruction_set_limits": environment["instruction_set_limits"],
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "python": environment["python"],
        "torch": environment["torch"],
        "transformers": environment["transformers"],
        "hf_compact": getattr(hf_compact, "__version__", None),
        "kernels": {"machine": machine_key(), "choices": dict(SELECTOR.choices())} if device == "cpu" else None,
        "sizes": sizes,
        "squeezebert_groups": SQUEEZEBERT_GROUPS,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "matmul_size": matmul_size,
        "peak_gflop_per_s": statistics.median(peaks),
        "peak_gflop_per_s_by_engine": {engine: statistics.median(rates[engine] for rates in engine_peaks)
                                       for engine in engine_peaks[0]},
        "max_abs_difference": differences,
        "load_average_1_5_15_min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "memory_measure": "growth of peak RSS over RSS after building the model and a tiny warm-up pass, "
        "fresh process per model, batch sizes increasing" if device == "cpu" else
        "torch.cuda.max_memory_allocated growth over memory allocated before the pass",
        "rows": rows,
    }


def cuda_memory(models: dict, args, sizes: dict, dtype: torch.dtype) -> dict[str, dict[str, float]]:
    """Peak CUDA memory (MB) each forward allocates beyond what was allocated before it."""
    results = {}
    with torch.inference_mode():
        for name, model in models.items():
            results[name] = {}
            for batch_size in args.batch_sizes:
                inputs = make_inputs(batch_size, args.seq_len, sizes["vocab"], "cuda")
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                model(**inputs)
                torch.cuda.synchronize()
                results[name][str(batch_size)] = (torch.cuda.max_memory_allocated() - before) / 2**20
    return results


# The operators that run the matrix products on CPU (SqueezeBertModel's 1x1 convolutions are matrix products too),
# and the fused attention kernels.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
              "mkldnn::_linear_pointwise")
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")


def profile_model(args, sizes: dict) -> None:
    """Where one model's forward pass spends its time: torch.profiler's operator table per batch size, and the rate
    of its matrix products (and fused attention, where it runs) from the analytic FLOPs, against the matmul peak.

    With a fused attention kernel the matrix products are the projections; otherwise (eager attention) they also
    hold the two attention products, and are counted with them."""
    from torch.profiler import ProfilerActivity, profile

    model = build_models(sizes, names=(args.profile,))[args.profile]
    config = flops_configs(sizes)[args.profile]
    size = MATMUL_SIZE["quick" if args.quick else "cpu"]
    calls = peak_calls(size, "cpu", torch.float32)
    for batch in args.batch_sizes:
        inputs = make_inputs(batch, args.seq_len, sizes["vocab"], "cpu")
        times = time_round_robin(calls, 5, 1, Timer("cpu"))
        engines = peak_rates(size, {name: statistics.median(values) for name, values in times.items()})
        peak = max(engines.values())
        with torch.inference_mode():
            for _ in range(args.warmup):
                model(**inputs)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for _ in range(args.repeats):
                    model(**inputs)
        events = profiler.key_averages()
        print(f"\n{args.profile}, batch {batch} x {args.seq_len}, {args.repeats} passes, {args.threads} threads")
        print(events.table(sort_by="self_cpu_time_total", row_limit=12))

        def milliseconds(names) -> float:
            return sum(event.self_cpu_time_total for event in events if event.key in names) / 1e3 / args.repeats

        total_ms = sum(event.self_cpu_time_total for event in events) / 1e3 / args.repeats
        matmul_ms, attention_ms = milliseconds(MATMUL_OPS), milliseconds(ATTENTION_OPS)
        total_gflop = encoder_flops(config, batch, args.seq_len) / 1e9
        attention_gflop = 4 * batch * args.seq_len**2 * config.hidden_size * config.num_hidden_layers / 1e9
        lines = []
        if attention_ms:
            lines.append(("matrix products (projections)", matmul_ms, total_gflop - attention_gflop))
            lines.append(("fused attention", attention_ms, attention_gflop))
        else:
            lines.append(("matrix products (projections and attention)", matmul_ms, total_gflop))
        print(f"per pass under the profiler: {total_ms:.1f} ms; matmul peak {peak:.1f} GFLOP/s "
              f"({', '.join(f'{engine} {rate:.1f}' for engine, rate in engines.items())})")
        for label, ms, gflop in lines:
            print(f"  {label}: {ms:.1f} ms, {gflop:.2f} GFLOP, {gflop / ms * 1e3:.1f} GFLOP/s = "
                  f"{gflop / ms * 1e3 / peak:.0%} of the peak")
        print(f"  everything else: {total_ms - sum(ms for _, ms, _ in lines):.1f} ms")


def print_table(result: dict):
    limits = "".join(f" {name}={value}" for name, value in result.get("instruction_set_limits", {}).items())
    print(f"\n{result['device_name']}{limits} | {result['dtype']} | threads {result['threads']} | "
          f"torch {result['torch']} | transformers {result['transformers']} | "
          f"matmul peak {result['peak_gflop_per_s']:.1f} GFLOP/s ("
          + ", ".join(f"{engine} {rate:.1f}" for engine, rate in result["peak_gflop_per_s_by_engine"].items()) + ")")
    header = (f"{'model':<30} {'batch':>5} {'median ms':>10} {'vs replaced':>11} {'vs BERT':>8} "
              f"{'GFLOP/s':>8} {'of peak':>8} {'mem MB':>8}")
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        replaced = f"{row['speedup_vs_replaced']:.2f}x" if row["speedup_vs_replaced"] else "-"
        memory = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None else "-"
        print(f"{row['model']:<30} {row['batch_size']:>5} {row['median_ms']:>10.1f} {replaced:>11} "
              f"{row['speedup_vs_bert']:>7.2f}x {row['gflop_per_s']:>8.1f} {row['fraction_of_peak']:>7.0%} "
              f"{memory:>8}")
    if result.get("kernels"):
        print(f"\nkernels chosen on {result['kernels']['machine']} (ms, each candidate's fastest round):")
        for shape, entry in result["kernels"]["choices"].items():
            timings = ", ".join(f"{name} {ms:.2f}" for name, ms in entry["ms"].items())
            print(f"  {shape}: {entry['kernel']} ({timings})")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1 8 32 (1 2 with --quick)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence; default 128 (16 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per batch size (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed rounds per batch size, the first of which chooses the kernels (default 2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available, else cpu")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file; default benchmarks/results/speed_<device>.json")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model peak-memory subprocesses")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, 2 rounds, no memory probes: a smoke run that takes seconds")
    parser.add_argument("--short", action="store_true",
                        help="base sizes, 3 rounds after 1 warm-up, no memory probes: a first look in a minute or two")
    parser.add_argument("--profile", choices=MODELS,
                        help="CPU: print where this model's forward pass spends its time (torch.profiler) and exit")
    parser.add_argument("--memory-probe", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 2] if args.quick else [1, 8, 32]
    if args.seq_len is None:
        args.seq_len = 16 if args.quick else 128
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3 if args.short else 10
    if args.short:
        args.warmup = 1
    if (args.quick or args.short) and args.memory_probe is None:
        args.no_memory = True
    for name in ("threads", "repeats", "seq_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 1 or min(args.batch_sizes) < 1:
        parser.error(f"--warmup and --batch-sizes must be >= 1 (the first warm-up round chooses the kernels), got "
                     f"{args.warmup} and {args.batch_sizes}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device; use --device cpu")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return
    sizes = QUICK_SIZES if args.quick else BASE_SIZES
    if args.seq_len > sizes["positions"]:
        raise SystemExit(f"--seq-len {args.seq_len} exceeds the models' {sizes['positions']} positions")
    output = args.output or HERE / "results" / f"speed_{args.device}.json"

    if args.profile:
        if args.device != "cpu":
            raise SystemExit("--profile times CPU operators; use --device cpu")
        torch.set_num_threads(args.threads)
        profile_model(args, sizes)
        return
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        memory = {} if args.no_memory else measure_memory(args, MODELS)
        results = [benchmark(args, "cpu", torch.float32, sizes, memory)]
    else:
        results = []
        for dtype in (torch.float32, torch.bfloat16):
            memory = {}
            if not args.no_memory:
                models = {name: model.to("cuda", dtype) for name, model in build_models(sizes).items()}
                memory = cuda_memory(models, args, sizes, dtype)
                del models
            results.append(benchmark(args, "cuda", dtype, sizes, memory))
    for result in results:
        print_table(result)
    write_json_atomic(output, results[0] if len(results) == 1 else {"runs": results})
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
