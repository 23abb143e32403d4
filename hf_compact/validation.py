"""Input checks shared by the recipes, each failing with the change that fixes it."""

from __future__ import annotations

import os

from transformers import AutoConfig, PretrainedConfig


def load_config(name_or_path: str, flag: str) -> PretrainedConfig:
    """The configuration of a model given on the command line as a local folder or a Hub id. A mistyped folder gets
    a message about the folder, not about the network."""
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        if os.path.isdir(name_or_path):
            raise SystemExit(f"{flag} {name_or_path}: the folder holds no loadable model ({error}).") from None
        raise SystemExit(
            f"{flag} {name_or_path}: there is no such local folder, and it could not be loaded as a Hub model id "
            f"({str(error).splitlines()[0]}). Check the path."
        ) from None


__all__ = ["load_config"]
