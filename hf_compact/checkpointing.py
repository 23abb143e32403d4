"""Training checkpoints of the distillation recipe, the Accelerate way, resumed past damage.

`accelerator.save_state()` with `ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)` writes
`<project_dir>/checkpoints/checkpoint_<i>` (the student, a learned projection if any, optimizer, scheduler and random
states; never the frozen teacher, which is not prepared) and keeps the newest N. `save_checkpoint` adds
`progress.json`, written last and atomically: a checkpoint without it was cut short and is not one. `load_latest`
tries the newest checkpoint first and falls back to older ones when one is damaged (a truncated weights file, a
missing `progress.json`), naming each one it skips.

```python
>>> folder = save_checkpoint(accelerator, {"completed_batches": 24, "step": 24})  # doctest: +SKIP
>>> folder, progress = load_latest(accelerator)  # doctest: +SKIP
```
"""

from __future__ import annotations

import json
import os
import re

from .io import write_json_atomic


PROGRESS_FILE = "progress.json"
_NAME = re.compile(r"^checkpoint_(\d+)$")


def _numbered(root: str | os.PathLike) -> list[tuple[int, str]]:
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    found = [(int(match.group(1)), os.path.join(root, name))
             for name in os.listdir(root) if (match := _NAME.match(name))]
    return sorted(found)


def list_checkpoints(root: str | os.PathLike) -> list[str]:
    """Complete checkpoint folders under `root`, oldest first (by number, so checkpoint_10 comes after
    checkpoint_9)."""
    return [folder for _, folder in _numbered(root) if os.path.isfile(os.path.join(folder, PROGRESS_FILE))]


def save_checkpoint(accelerator, progress: dict) -> str:
    """`accelerator.save_state()` into the next numbered folder, then `progress.json` (`progress`: where the run is,
    e.g. the batches it has completed), which marks the checkpoint complete."""
    folder = accelerator.save_state()
    accelerator.wait_for_everyone()  # every process's files are in before the checkpoint counts
    if accelerator.is_main_process:
        write_json_atomic(os.path.join(folder, PROGRESS_FILE), progress)
    accelerator.wait_for_everyone()
    return folder


def load_latest(accelerator, root: str | os.PathLike | None = None) -> tuple[str, dict]:
    """Load the newest checkpoint under `root` (default: the project's `checkpoints/`) that loads; returns its folder
    and its progress. A damaged checkpoint is reported and skipped; when none loads, SystemExit names each one and why.
    Later saves continue the numbering after the newest folder."""
    root = root or os.path.join(accelerator.project_dir, "checkpoints")
    found = _numbered(root)
    if not found:
        raise SystemExit(f"--resume_from_checkpoint: no checkpoint in {root} to resume from.")
    accelerator.project_configuration.iteration = found[-1][0] + 1
    failures = []
    for _, folder in reversed(found):
        try:
            return folder, load_checkpoint(accelerator, folder)
        except Exception as error:  # any damage: a truncated file, a missing one, bad JSON
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            accelerator.print(f"checkpoint {folder} is damaged ({reason}); trying the one before it")
            failures.append(f"{folder} ({reason})")
    raise SystemExit("--resume_from_checkpoint: no checkpoint could be loaded:\n  " + "\n  ".join(failures))


def load_checkpoint(accelerator, folder: str | os.PathLike) -> dict:
    """Load one checkpoint folder into the prepared objects and return its progress."""
    with open(os.path.join(folder, PROGRESS_FILE)) as handle:
        progress = json.load(handle)
    accelerator.load_state(os.fspath(folder))
    return progress


def resume_from(accelerator, checkpoint: str) -> tuple[str, dict]:
    """Load `checkpoint` (a folder, or "last" for the newest one of the project that loads); later saves continue the
    project's numbering."""
    if checkpoint == "last":
        return load_latest(accelerator)
    if not os.path.isdir(checkpoint):
        raise SystemExit(
            f"--resume_from_checkpoint {checkpoint}: no such folder (give a checkpoint folder or 'last')."
        )
    found = _numbered(os.path.join(accelerator.project_dir, "checkpoints"))
    accelerator.project_configuration.iteration = found[-1][0] + 1 if found else 0
    return checkpoint, load_checkpoint(accelerator, checkpoint)


__all__ = ["PROGRESS_FILE", "list_checkpoints", "load_checkpoint", "load_latest", "resume_from", "save_checkpoint"]
