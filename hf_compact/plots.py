"""Accuracy-against-latency plots: where a student sits beside its teacher, other baselines and its own
lower-precision variants.

Drawn with matplotlib's Agg canvas directly (no pyplot, no display needed) and saved atomically as PNG
(`hf_compact.io.atomic_path`).

```python
>>> from hf_compact.plots import plot_accuracy_vs_latency
>>> plot_accuracy_vs_latency(
...     [
...         {"name": "MiniLM-L6 teacher", "accuracy": 0.80, "latency_ms": 40.1, "role": "teacher"},
...         {"name": "3-layer student", "accuracy": 0.79, "latency_ms": 20.0, "role": "student"},
...     ],
...     "accuracy_vs_latency.png",
... )
'accuracy_vs_latency.png'
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from .io import atomic_path


ROLES = ("teacher", "student", "baseline", "variant")
_STYLES = {
    "teacher": {"marker": "s", "color": "#c0392b", "label": "teacher"},
    "student": {"marker": "o", "color": "#1f6fb4", "label": "student"},
    "baseline": {"marker": "^", "color": "#7f7f7f", "label": "baseline"},
    "variant": {"marker": "D", "color": "#2e8b57", "label": "lower-precision variant"},
}
# Where a point's name goes, in points from the marker: a variant sits beside its float32 model, whose name is above.
_LABEL_OFFSETS = {"variant": (6, -12)}


def validate_points(points) -> list[dict]:
    """Check accuracy-against-latency points and return them as plain dicts.

    Each point needs `name` (str), `accuracy` (a fraction in [0, 1]), `latency_ms` (> 0) and `role`
    (`"teacher"`, `"student"`, `"baseline"` or `"variant"`); `refused` (true or false, default false) marks a
    variant the accuracy gate refused. Raises a ValueError naming the bad point and field.
    """
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError(f"points must be a non-empty list of dicts; got {points!r}.")
    checked = []
    for index, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ValueError(f"points[{index}] is a {type(point).__name__}; each point must be a dict.")
        for field in ("name", "accuracy", "latency_ms", "role"):
            if field not in point:
                raise ValueError(
                    f"points[{index}] has no {field!r}; each point needs name, accuracy, latency_ms and role."
                )
        name, accuracy, latency, role = point["name"], point["accuracy"], point["latency_ms"], point["role"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"points[{index}]['name']={name!r} is invalid: use a non-empty string.")
        if not _finite(accuracy) or not 0 <= accuracy <= 1:
            hint = f" (divide percentages by 100: {accuracy / 100:g})" if _finite(accuracy) and accuracy > 1 else ""
            raise ValueError(
                f"points[{index}]['accuracy']={accuracy!r} is invalid: use a fraction in [0, 1]{hint}."
            )
        if not _finite(latency) or latency <= 0:
            raise ValueError(
                f"points[{index}]['latency_ms']={latency!r} is invalid: use a positive number of milliseconds."
            )
        if role not in ROLES:
            raise ValueError(f"points[{index}]['role']={role!r} is invalid: use one of {list(ROLES)}.")
        refused = point.get("refused", False)
        if not isinstance(refused, bool) or (refused and role != "variant"):
            raise ValueError(f"points[{index}]['refused']={refused!r} is invalid: use true or false, and true only "
                             "for a point whose role is 'variant'.")
        checked.append({"name": name, "accuracy": float(accuracy), "latency_ms": float(latency), "role": role,
                        "refused": refused})
    return checked


def plot_marks(points) -> list[dict]:
    """What `plot_accuracy_vs_latency` draws for `points`, one mark per point in their order: its position (`x`:
    latency in ms, `y`: accuracy in %), `label` (the name, with " (refused)" for a refused variant) and where it
    goes (`label_offset`, in points), `role`, `marker`, `color` and `hollow` (a refused variant is an outline)."""
    return [
        {
            "label": point["name"] + (" (refused)" if point["refused"] else ""),
            "x": point["latency_ms"],
            "y": 100 * point["accuracy"],
            "role": point["role"],
            "marker": _STYLES[point["role"]]["marker"],
            "color": _STYLES[point["role"]]["color"],
            "hollow": point["refused"],
            "label_offset": _LABEL_OFFSETS.get(point["role"], (6, 6)),
        }
        for point in validate_points(points)
    ]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_accuracy_vs_latency(
    points: list[dict],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    latency_label: str = "Latency (ms per batch)",
) -> str:
    """Draw accuracy (%) against latency (ms) for `points`, each labelled with its name, and save a PNG at `path`.

    Args:
        points: dicts with `name`, `accuracy` (fraction in [0, 1]), `latency_ms` and `role`
            (`"teacher"`, `"student"`, `"baseline"` or `"variant"`; one colour and marker per role), and for a
            variant the gate refused `refused: True` (drawn hollow). `plot_marks` lists what is drawn.
        path: where to write the PNG (written to a temporary file beside it, then moved into place).
        title: optional plot title.
        latency_label: the x-axis label; keep the unit in it.

    Returns:
        `path` as a string.
    """
    marks = plot_marks(points)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_accuracy_vs_latency needs matplotlib: `pip install matplotlib`.") from error

    figure = Figure(figsize=(6.4, 4.4), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for role in ROLES:
        for hollow in (False, True):
            chosen = [mark for mark in marks if mark["role"] == role and mark["hollow"] == hollow]
            if not chosen:
                continue
            style = _STYLES[role]
            axes.scatter(
                [mark["x"] for mark in chosen],
                [mark["y"] for mark in chosen],
                marker=style["marker"],
                facecolors="none" if hollow else style["color"],
                edgecolors=style["color"],
                s=60,
                label=style["label"] + (" (refused)" if hollow else ""),
                zorder=3,
            )
    for mark in marks:
        axes.annotate(mark["label"], (mark["x"], mark["y"]), xytext=mark["label_offset"], textcoords="offset points",
                      fontsize=8)
    latencies = [mark["x"] for mark in marks]
    accuracies = [mark["y"] for mark in marks]
    x_pad = max(0.15 * (max(latencies) - min(latencies)), 0.1 * max(latencies))
    y_pad = max(0.15 * (max(accuracies) - min(accuracies)), 0.5)
    axes.set_xlim(max(0.0, min(latencies) - x_pad), max(latencies) + 2 * x_pad)  # room for the labels
    axes.set_ylim(min(accuracies) - y_pad, min(100.0, max(accuracies) + 2 * y_pad))
    axes.set_xlabel(latency_label)
    axes.set_ylabel("Accuracy (%)")
    axes.grid(True, alpha=0.3, zorder=0)
    axes.legend(loc="best", fontsize=8)
    axes.set_title(title or "Accuracy against latency (up and to the left is better)", fontsize=10)
    figure.tight_layout()

    path = os.fspath(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path


__all__ = ["plot_accuracy_vs_latency", "plot_marks", "validate_points"]
