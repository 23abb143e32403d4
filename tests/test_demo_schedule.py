"""The demo's order of the student runs: costliest first, and no run left waiting for another's teacher scores."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

from demo import next_run  # noqa: E402


def run(short, distilled):
    return {"short": short, "distilled": distilled}


def test_a_labels_only_run_starts_while_the_first_distilled_run_scores_the_texts():
    waiting = [run("squeeze seed 2", True), run("squeeze seed 3", True), run("squeeze labels-only", False)]
    scoring = [run("squeeze seed 1", True)]
    assert next_run(waiting, scoring, training=set())["short"] == "squeeze labels-only"
    # Once it trains, the soft targets are cached: the costliest run waiting starts next.
    assert next_run(waiting, scoring, training={"squeeze seed 1"})["short"] == "squeeze seed 2"
    assert next_run(waiting, [], training=set())["short"] == "squeeze seed 2"
    # With no labels-only run left, a distilled run waits for the cache rather than leave a core idle.
    assert next_run(waiting[:2], scoring, training=set())["short"] == "squeeze seed 2"
