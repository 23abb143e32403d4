"""The pieces of a distillation run's training loop that are not the loop: length-grouped batches that N processes
share as one process would see them, the optimizer and schedule, and a progress bar driven by `Progress` reports.

```python
>>> loader = train_dataloader(tokenized["train"], collator, batch_size=32, num_processes=1, seed=42)  # doctest: +SKIP
>>> optimizer, scheduler, total_steps = optimizer_and_schedule(  # doctest: +SKIP
...     student, distiller, training_args, len(loader), num_processes=1, device_type="cpu")
```
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .data import EpochLengthGroupedSampler
from .progress import Progress


def train_dataloader(dataset, collator, *, batch_size: int, num_processes: int, seed: int) -> DataLoader:
    """Batches of similar lengths, grouped over the global batch so that N processes see in each step the examples one
    process would; the order of epoch e is fixed by the seed (set with `set_epoch`), which lets a run resume
    exactly."""
    lengths = dataset["length"]
    sampler = EpochLengthGroupedSampler(lengths, batch_size * num_processes, seed=seed)
    # Its own generator: creating an iterator then draws nothing from the global RNG, so a resumed run's dropout masks
    # follow the uninterrupted run's exactly.
    return DataLoader(dataset.remove_columns(["length"]), batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      generator=torch.Generator().manual_seed(seed))


def eval_dataloaders(tokenized, collator, batch_size: int) -> tuple[dict, dict[str, DataLoader]]:
    """The validation and test sets sorted by length (each batch pads to similar lengths; predictions, labels and
    cached teacher logits all follow that order) and their dataloaders."""
    sets = {split: tokenized[split].sort("length").remove_columns(["length"]) for split in ("validation", "test")}
    return sets, {split: DataLoader(d, batch_size=batch_size, shuffle=False, collate_fn=collator)
                  for split, d in sets.items()}


def optimizer_and_schedule(student, distiller, args, batches_per_epoch: int, num_processes: int, device_type: str):
    """AdamW over the student's trainable weights (and a learned projection, if any) with linear warm-up and decay;
    returns the optimizer, the scheduler and the run's total optimizer steps (`args`: the training flags)."""
    parameters = [p for p in student.parameters() if p.requires_grad] + list(distiller.parameters())
    # The fused kernel updates every parameter in one pass; Trainer uses it by default too. Other devices keep the
    # per-parameter loop.
    fused = device_type in ("cpu", "cuda") and all(p.is_floating_point() for p in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay,
                                  fused=fused or None)
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps / num_processes)
    total_steps = args.max_steps or args.num_train_epochs * steps_per_epoch
    # Once prepared, the scheduler advances once per process at every optimizer step.
    scheduler_steps = total_steps * num_processes
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * scheduler_steps), scheduler_steps)
    return optimizer, scheduler, total_steps


class ProgressBar:
    """A `ProgressCallback` that shows the optimizer steps as a tqdm bar with the last loss."""

    def __init__(self, description: str, disable: bool = False):
        self.description, self.disable, self.bar = description, disable, None

    def __call__(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(total=progress.total_steps, initial=max(progress.step - 1, 0), desc=self.description,
                            disable=self.disable)
        if progress.stage == "train":
            self.bar.update(progress.step - self.bar.n)
            if "loss" in progress.metrics:
                self.bar.set_postfix(loss=f"{progress.metrics['loss']:.4f}")
        elif progress.stage == "done":
            self.bar.close()


def reporter(*callbacks):
    """One `ProgressCallback` that passes each report to every callback given (None ones left out)."""
    callbacks = [callback for callback in callbacks if callback is not None]

    def report(progress: Progress) -> None:
        for callback in callbacks:
            callback(progress)

    return report


__all__ = ["ProgressBar", "eval_dataloaders", "optimizer_and_schedule", "reporter", "train_dataloader"]
