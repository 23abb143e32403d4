"""Which device the recipes train on."""

from __future__ import annotations

import torch


def has_accelerator() -> bool:
    """A GPU or another device Accelerate and Trainer would train on. Without one, the recipes ask for the CPU
    explicitly: processes started by `accelerate launch` or `torchrun` then form one gloo group instead of each
    running alone."""
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    )


__all__ = ["has_accelerator"]
