"""Output folders that lose nothing: every check before anything is written, and an old folder replaced only by a
finished one.

`plan_output_dir` runs before any work. It refuses an existing, non-empty folder unless the run resumes it or
replaces it, checks that the folder can be created and written, and returns the folder the run should write to:
the output folder itself, or, when an existing one is to be replaced, a staging folder beside it
(`<output_dir>.incoming`). `check_free_space` refuses a run whose outputs would not fit on the disk. After the new
model is saved, `finish_output_dir` puts the staging folder in the old one's place; a run that fails on the way
leaves the old folder as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile


INCOMING_SUFFIX = ".incoming"


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def plan_output_dir(output_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> str:
    """Check `output_dir` before any work and return the folder to write to (nothing is created or deleted)."""
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise SystemExit(f"--output_dir {output_dir} is a file, not a folder.")
    existing = os.path.isdir(output_dir) and bool(os.listdir(output_dir))
    if existing and not (overwrite or resume):
        raise SystemExit(
            f"Output folder {output_dir} exists and is not empty. Pass --resume_from_checkpoint last to continue its "
            "run, "
            "--overwrite_output_dir to replace it, or choose another --output_dir."
        )
    if resume and not existing:
        raise SystemExit(f"--resume_from_checkpoint: {output_dir} holds no earlier run to continue.")
    work_dir = output_dir + INCOMING_SUFFIX if existing and not resume else output_dir
    anchor = _nearest_existing(work_dir)
    if not os.path.isdir(anchor):
        raise SystemExit(f"Cannot create {work_dir}: {anchor} is a file, not a folder.")
    try:  # a real write: permissions alone do not tell (read-only mounts, quotas, root on a network share)
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as error:
        raise SystemExit(f"Cannot write to {anchor} ({error.strerror}): choose another --output_dir.") from None
    return work_dir


def check_free_space(work_dir: str | os.PathLike, needed_bytes: int) -> None:
    """Refuse a run whose outputs (`needed_bytes`, estimated by the caller) would not fit on the disk."""
    anchor = _nearest_existing(os.fspath(work_dir))
    free = shutil.disk_usage(anchor).free
    if free < needed_bytes:
        raise SystemExit(
            f"Not enough free space for the outputs in {anchor}: {free / 2**20:.0f} MiB free, about "
            f"{needed_bytes / 2**20:.0f} MiB needed. Free some space, keep fewer checkpoints, or choose another "
            "--output_dir."
        )


def create_work_dir(work_dir: str | os.PathLike) -> None:
    """Create the folder a run writes to, once every check has passed; a staging folder left by an earlier run that
    did not finish is started afresh."""
    work_dir = os.fspath(work_dir)
    if work_dir.endswith(INCOMING_SUFFIX):
        shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir, exist_ok=True)


def finish_output_dir(work_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Put a finished staging folder in place of the old output folder (no-op when the run wrote in place)."""
    work_dir, output_dir = os.path.abspath(os.fspath(work_dir)), os.path.abspath(os.fspath(output_dir))
    if work_dir == output_dir:
        return
    replaced = output_dir + ".replaced"
    shutil.rmtree(replaced, ignore_errors=True)
    os.replace(output_dir, replaced)
    os.replace(work_dir, output_dir)
    shutil.rmtree(replaced, ignore_errors=True)


def save_model_atomic(accelerator, model, tokenizer, output_dir: str | os.PathLike) -> None:
    """`save_pretrained` (model and tokenizer) into a staging folder, then move each file into `output_dir`: a run cut
    short while saving leaves no half-written weights there."""
    staging = os.path.join(os.fspath(output_dir), ".staging-model")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).save_pretrained(staging, is_main_process=accelerator.is_main_process,
                                                    save_function=accelerator.save,
                                                    state_dict=accelerator.get_state_dict(model))
    if accelerator.is_main_process:
        tokenizer.save_pretrained(staging)
        move_into(staging, output_dir)
    accelerator.wait_for_everyone()


def move_into(staging: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Move every file (or folder) of a finished save in `staging` into `output_dir`, each in one rename replacing
    what had its name, then remove the empty `staging`."""
    for name in os.listdir(staging):
        target = os.path.join(output_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
    os.rmdir(staging)


__all__ = [
    "INCOMING_SUFFIX",
    "check_free_space",
    "create_work_dir",
    "finish_output_dir",
    "move_into",
    "plan_output_dir",
    "save_model_atomic",
]
