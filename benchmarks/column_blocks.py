"""Forward passes on few tokens with the compact models' column-block matrix multiplies on and off.

On at most `COLUMN_BLOCK_MAX_TOKENS` tokens and two or more threads, the compact models compute their dense
projections as column blocks of one batched matrix multiply (see `_column_blocks` in the modeling files). This
script measures what that gains, in one process: each model runs at several token counts with the blocks on (the
default) and off (`COLUMN_BLOCK_MAX_TOKENS = 0`), the two settings taking turns, and prints the medians, their
ratio and the largest difference of the outputs (the blocks compute the same dot products, so it should be 0).

Models (random weights, base sizes as in `speed.py`): `compact_distilbert` (6 layers), `compact_squeezebert` with
SqueezeBERT's groups (12 layers; only the post-attention projection is dense) and `compact_squeezebert` with one
group everywhere (6 layers: what `convert_to_compact` makes of a BERT with `groups=1`). Each token count is a
batch of one sequence up to 128 tokens, then two sequences.

    python benchmarks/column_blocks.py                    # 2 threads -> benchmarks/results/column_blocks_cpu.json
    python benchmarks/column_blocks.py --threads 4 --tokens 32 128 512
    python benchmarks/column_blocks.py --quick            # tiny models: a smoke run in seconds
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the same model sizes and inputs as the forward-pass benchmark)

from hf_compact import CompactSqueezeBertConfig, CompactSqueezeBertModel  # noqa: E402
from hf_compact.benchmarking import environment_info  # noqa: E402


HERE = Path(__file__).resolve().parent


def build_models(sizes: dict) -> dict[str, torch.nn.Module]:
    """compact_distilbert and compact_squeezebert as in `speed.py`, and compact_squeezebert with one group."""
    models = speed.build_models(sizes, names=("compact_distilbert", "compact_squeezebert"))
    one_group = {name: 1 for name in speed.SQUEEZEBERT_GROUPS}
    config = CompactSqueezeBertConfig(
        vocab_size=sizes["vocab"], hidden_size=sizes["hidden"], embedding_size=sizes["hidden"],
        num_attention_heads=sizes["heads"], intermediate_size=sizes["intermediate"],
        num_hidden_layers=sizes["distil_layers"], max_position_embeddings=sizes["positions"],
        attn_implementation="sdpa", **one_group,
    )
    torch.manual_seed(0)
    models["compact_squeezebert_one_group"] = CompactSqueezeBertModel(config).eval()
    return models


def shape_for(tokens: int, max_length: int) -> tuple[int, int]:
    """(batch, sequence) with `tokens` tokens: one sequence where it fits, else the fewest equal ones."""
    batch = -(-tokens // max_length)
    if tokens % batch:
        raise SystemExit(f"--tokens {tokens} does not split into {batch} sequences of at most {max_length} tokens")
    return batch, tokens // batch


def measure(model: torch.nn.Module, inputs: dict, repeats: int) -> dict:
    """Medians (ms) with the column blocks on and off, taking turns, and the largest output difference."""
    module = importlib.import_module(type(model).__module__)
    limit = module.COLUMN_BLOCK_MAX_TOKENS
    times = {"on": [], "off": []}
    outputs = {}
    try:
        with torch.inference_mode():
            for round_ in range(repeats + 1):  # the first round warms up
                for setting in ("on", "off") if round_ % 2 else ("off", "on"):
                    module.COLUMN_BLOCK_MAX_TOKENS = limit if setting == "on" else 0
                    start = time.perf_counter()
                    outputs[setting] = model(**inputs).last_hidden_state
                    if round_:
                        times[setting].append((time.perf_counter() - start) * 1e3)
    finally:
        module.COLUMN_BLOCK_MAX_TOKENS = limit
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {
        "on_ms": on,
        "off_ms": off,
        "speedup": off / on,
        "max_abs_difference": (outputs["on"] - outputs["off"]).abs().max().item(),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=None,
                        help="token counts per forward pass (default 32 64 128 192 256; 8 16 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per setting (default 12)")
    parser.add_argument("--quick", action="store_true", help="tiny models, 2 rounds: a smoke run")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file; default benchmarks/results/column_blocks_cpu.json")
    args = parser.parse_args(argv)
    args.tokens = args.tokens or ([8, 16] if args.quick else [32, 64, 128, 192, 256])
    args.repeats = args.repeats or (2 if args.quick else 12)
    if args.threads < 1 or args.repeats < 1 or min(args.tokens) < 1:
        parser.error("--threads, --repeats and --tokens must be positive")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = speed.QUICK_SIZES if args.quick else speed.BASE_SIZES
    max_length = min(128, sizes["positions"])
    models = build_models(sizes)
    rows = []
    print(f"{'model':32} {'tokens':>6} {'shape':>8} {'blocks on':>10} {'off':>10} {'speed-up':>9} {'max diff':>9}")
    for tokens in args.tokens:
        batch, length = shape_for(tokens, max_length)
        inputs = speed.make_inputs(batch, length, sizes["vocab"], "cpu")
        for name, model in models.items():
            row = {"model": name, "tokens": tokens, "batch_size": batch, "sequence_length": length,
                   **measure(model, inputs, args.repeats)}
            rows.append(row)
            print(f"{name:32} {tokens:>6} {f'{batch}x{length}':>8} {row['on_ms']:>8.1f}ms {row['off_ms']:>8.1f}ms "
                  f"{row['speedup']:>8.2f}x {row['max_abs_difference']:>9.1e}", flush=True)
    result = {**environment_info(), "quick": args.quick, "repeats": args.repeats, "sizes": sizes, "rows": rows}
    output = args.output or HERE / "results" / "column_blocks_cpu.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output}")
    return result


if __name__ == "__main__":
    main()
