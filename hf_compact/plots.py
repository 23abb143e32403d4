"""Accuracy-against-latency plots: where a student sits beside its teacher and other baselines.

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


ROLES = ("teacher", "student", "baseline")
_STYLES = {
    "teacher": {"marker": "s", "color": "#c0392b", "label": "teacher"},
    "student": {"marker": "o", "color": "#1f6fb4", "label": "student"},
    "baseline": {"marker": "^", "color": "#7f7f7f", "label": "baseline"},
}


def validate_points(points) -> list[dict]:
    """Check accuracy-against-latency points and return them as plain dicts.

    Each point needs `name` (str), `accuracy` (a fraction in [0, 1]), `latency_ms` (> 0) and `role`
    (`"teacher"`, `"student"` or `"baseline"`). Raises a ValueError naming the bad point and field.
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
        checked.append({"name": name, "accuracy": float(accuracy), "latency_ms": float(latency), "role": role})
    return checked


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
            (`"teacher"`, `"student"` or `"baseline"`; one colour and marker per role).
        path: where to write the PNG (written to a temporary file beside it, then moved into place).
        title: optional plot title.
        latency_label: the x-axis label; keep the unit in it.

    Returns:
        `path` as a string.
    """
    points = validate_points(points)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_accuracy_vs_latency needs matplotlib: `pip install matplotlib`.") from error

    figure = Figure(figsize=(6.4, 4.4), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for role in ROLES:
        chosen = [p for p in points if p["role"] == role]
        if not chosen:
            continue
        style = _STYLES[role]
        axes.scatter(
            [p["latency_ms"] for p in chosen],
            [100 * p["accuracy"] for p in chosen],
            marker=style["marker"],
            color=style["color"],
            s=60,
            label=style["label"],
            zorder=3,
        )
        for point in chosen:
            axes.annotate(
                point["name"],
                (point["latency_ms"], 100 * point["accuracy"]),
                xytext=(6, 6),
                textcoords="offset points",
                fontsize=8,
            )
    latencies = [p["latency_ms"] for p in points]
    accuracies = [100 * p["accuracy"] for p in points]
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


__all__ = ["plot_accuracy_vs_latency", "validate_points"]
