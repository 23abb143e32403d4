"""Choose the training precision by measurement: bf16 autocast is worth it only where the machine computes it faster
than float32, which the CPU's flags do not tell reliably (a CPU may advertise bf16 instructions and still run a
bf16 training step slower). `fastest_training_precision` times a few training steps of the model itself on a real
batch, both ways, in turn, and keeps the faster."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def bf16_usable(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast can run on `device` at all."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def _step_function(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], bf16: bool) -> Callable[[], None]:
    """One forward + backward + optimizer step of a private copy of `model` (the model itself is not changed)."""
    model = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_training_steps(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *, steps: int = 5, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of a training step of `model` on `batch` in float32 (`"no"`) and in bf16 autocast (`"bf16"`),
    the two taking their steps in turn after `warmup` steps each. `batch` must give the model a loss (labels)."""
    functions = {"no": _step_function(model, batch, False), "bf16": _step_function(model, batch, True)}
    for function in functions.values():
        for _ in range(warmup):
            function()
    seconds = {name: [] for name in functions}
    for _ in range(steps):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def choose_precision(seconds: Mapping[str, float], *, margin: float = 1.1) -> str:
    """`"bf16"` when its step is at least `margin` times as fast as float32's, else `"no"`: bf16 costs accuracy
    headroom, so it has to pay for itself."""
    return "bf16" if seconds["no"] >= margin * seconds["bf16"] else "no"


def fastest_training_precision(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *, steps: int = 5, margin: float = 1.1
) -> tuple[str, dict[str, float]]:
    """The precision (`"no"` or `"bf16"`) whose training step runs faster here, and the measured seconds per step.
    Where bf16 autocast cannot run, `"no"` without a measurement."""
    device = next(model.parameters()).device
    if not bf16_usable(device):
        return "no", {}
    seconds = time_training_steps(model, batch, steps=steps)
    return choose_precision(seconds, margin=margin), seconds


__all__ = ["bf16_usable", "choose_precision", "fastest_training_precision", "time_training_steps"]
