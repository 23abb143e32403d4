"""Atomic writes: a crash or a full disk never leaves a half-written file behind. Every file hf_compact writes
outside a model folder's own `save_pretrained` goes through here."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; once the block ends without an error, the file written there takes
    `path`'s place in one rename (readable by everyone, as a plain write would leave it). On an error it is removed
    and `path` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + "-", suffix=".tmp")
    os.close(handle)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    return os.fspath(path)


def write_json_atomic(path: str | os.PathLike, payload) -> str:
    """Write `payload` as indented JSON to `path` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=float) + "\n")


__all__ = ["atomic_path", "write_json_atomic", "write_text_atomic"]
