"""Progress of a training run, reported to a callback: how the demo (or any caller of a recipe's Python API)
follows a run without reading its console output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import TrainerCallback


@dataclass
class Progress:
    """One report. `stage` is "train" (after an optimizer step), "evaluate" (metrics of an evaluation) or "done"."""

    stage: str
    step: int
    total_steps: int
    epoch: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


class TrainerProgress(TrainerCallback):
    """Forwards a `transformers.Trainer`'s steps and evaluations to a `ProgressCallback`."""

    def __init__(self, callback: ProgressCallback):
        self.callback = callback

    def _report(self, stage, state, metrics=None):
        self.callback(Progress(stage, state.global_step, state.max_steps, state.epoch or 0.0, dict(metrics or {})))

    def on_step_end(self, args, state, control, **kwargs):
        self._report("train", state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._report("evaluate", state, metrics)

    def on_train_end(self, args, state, control, **kwargs):
        self._report("done", state)


__all__ = ["Progress", "ProgressCallback", "TrainerProgress"]
