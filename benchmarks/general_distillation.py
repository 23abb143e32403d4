"""Does general (task-agnostic) distillation pay? The students of `make demo` beside those of `make demo-full`.

    make demo && make demo-full
    python benchmarks/general_distillation.py --plain outputs/demo --full outputs/demo-full

`make demo-full` (`recipes/demo.py --full`) general-distils the students of its `--general_students` from the
pretrained teacher on raw text, then task-distils each seed from there with the command line `make demo` uses. The
same seeds of both runs are compared on the validation reviews (what a choice may be made on), the test reviews and
the out-of-domain airline tweets; the general stage's minutes come from the full run's summary. Writes the table to
a JSON file.
"""

import argparse
import json
import os
import statistics
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))


def seed_scores(demo_dir: str, args) -> tuple[dict[str, dict[int, dict[str, float]]], dict]:
    """student_type -> seed -> {validation, test, out_of_domain} of a finished demo's distilled students, and the
    demo's summary."""
    import demo

    with open(os.path.join(demo_dir, "summary.json")) as handle:
        summary = json.load(handle)
    scores = {}
    for row in summary["students"]:
        if not row["distilled"]:
            continue
        per_seed = {}
        for index, seed in enumerate(sorted(summary["seeds"])):
            with open(os.path.join(demo.run_folder(args, row["model_type"], True, seed), "results.json")) as handle:
                history = json.load(handle)["training"]["history"]
            per_seed[seed] = {"validation": history[-1]["accuracy"], "test": row["seed_accuracies"][index],
                              "out_of_domain": row["out_of_domain_seed_accuracies"][index]}
        scores[row["model_type"]] = per_seed
    return scores, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plain", default="outputs/demo", help="a finished `make demo`")
    parser.add_argument("--full", default="outputs/demo-full", help="a finished `make demo-full`")
    parser.add_argument("--output", default="benchmarks/results/general_distillation.json")
    options = parser.parse_args(argv)

    import demo

    runs = {}
    for name, folder in (("plain", options.plain), ("full", options.full)):
        if not os.path.isfile(os.path.join(folder, "summary.json")):
            raise SystemExit(f"{folder} holds no finished demo (summary.json): run `make demo` and `make demo-full`.")
        with open(os.path.join(folder, "summary.json")) as handle:
            general_students = json.load(handle)["general_students"]
        full = ["--full", "--general_students", ",".join(general_students)] if general_students else []
        runs[name] = seed_scores(folder, demo.parse_args(["--output_dir", folder, *full]))
    (plain, plain_summary), (full, full_summary) = runs["plain"], runs["full"]
    print(f"general distillation: {full_summary['stage_minutes'].get('general_distillation', 0):.1f} minutes "
          f"(the whole full run {full_summary['minutes']:.1f}, the plain one {plain_summary['minutes']:.1f})")
    print(f"{'student':<20} {'seed':>4} {'':<22} {'validation':>10} {'test':>8} {'tweets':>8}")
    record = {"general_minutes": full_summary["stage_minutes"].get("general_distillation"), "students": {}}
    for student_type in full_summary["general_students"]:
        rows = {"general + task distillation": full[student_type], "task distillation only": plain[student_type]}
        for label, per_seed in rows.items():
            for seed, row in per_seed.items():
                print(f"{student_type:<20} {seed:>4} {label:<22} {100 * row['validation']:9.2f}% "
                      f"{100 * row['test']:7.2f}% {100 * row['out_of_domain']:7.2f}%")
            medians = {key: statistics.median(row[key] for row in per_seed.values())
                       for key in ("validation", "test", "out_of_domain")}
            print(f"{student_type:<20} {'med':>4} {label:<22} {100 * medians['validation']:9.2f}% "
                  f"{100 * medians['test']:7.2f}% {100 * medians['out_of_domain']:7.2f}%")
        record["students"][student_type] = {label: {str(seed): row for seed, row in per_seed.items()}
                                            for label, per_seed in rows.items()}
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    with open(options.output, "w") as handle:
        json.dump(record, handle, indent=2)
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
