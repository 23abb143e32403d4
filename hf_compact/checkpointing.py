"""Training checkpoints of the distillation recipe: saved whole or not at all, rotated, and resumed past damage.

Each checkpoint is a folder `<root>/step_<N>` written by `accelerator.save_state` (the student, a learned projection
if any, optimizer, scheduler and random states; never the frozen teacher) plus `progress.json`. It is written
under a temporary name and renamed into place, so a crash never leaves half a checkpoint. `load_latest` tries the
newest checkpoint first and falls back to older ones when one is damaged (a truncated weights file, a missing
`progress.json`), naming each one it skips.
"""

from __future__ import annotations

import json
import os
import shutil

from .io import write_json_atomic


PREFIX = "step_"


def list_checkpoints(root: str | os.PathLike) -> list[str]:
    """Complete checkpoint folders under `root`, oldest first (by step number, so step_10 comes after step_9)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    steps = []
    for name in os.listdir(root):
        number = name[len(PREFIX):]
        if name.startswith(PREFIX) and number.isdigit():
            steps.append(int(number))
    return [os.path.join(root, f"{PREFIX}{step}") for step in sorted(steps)]


def save_checkpoint(accelerator, root: str | os.PathLike, completed_batches: int, keep: int) -> str:
    """Save the training state as `<root>/step_<completed_batches>` and keep only the newest `keep` checkpoints."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}.")
    root = os.fspath(root)
    final = os.path.join(root, f"{PREFIX}{completed_batches}")
    staging = final + ".tmp"
    os.makedirs(staging, exist_ok=True)  # every process writes its random states there
    accelerator.save_state(staging)
    accelerator.wait_for_everyone()  # all processes' files are in before the folder moves
    if accelerator.is_main_process:
        write_json_atomic(os.path.join(staging, "progress.json"), {"completed_batches": completed_batches})
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest(accelerator, root: str | os.PathLike) -> tuple[str, int]:
    """Load the newest checkpoint under `root` that loads; returns its folder and the batches it had completed.

    A damaged checkpoint is reported and skipped; when none loads, SystemExit names each one and why.
    """
    found = list_checkpoints(root)
    if not found:
        raise SystemExit(f"--resume: no checkpoint in {root} to resume from.")
    failures = []
    for folder in reversed(found):
        try:
            with open(os.path.join(folder, "progress.json")) as handle:
                completed_batches = int(json.load(handle)["completed_batches"])
            accelerator.load_state(folder)
        except Exception as error:  # any damage: a truncated file, a missing one, bad JSON
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            accelerator.print(f"checkpoint {folder} is damaged ({reason}); trying the one before it")
            failures.append(f"{folder} ({reason})")
            continue
        return folder, completed_batches
    raise SystemExit("--resume: no checkpoint could be loaded:\n  " + "\n  ".join(failures))


__all__ = ["list_checkpoints", "load_latest", "save_checkpoint"]
