"""Atomic writes: a crash or a full disk never leaves a half-written results file behind."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_atomic(path: str | os.PathLike, payload) -> str:
    """Write `payload` as indented JSON to a temporary file beside `path`, then rename it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as handle:
        try:
            json.dump(payload, handle, indent=2, default=float)
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)
    return path


__all__ = ["write_json_atomic"]
