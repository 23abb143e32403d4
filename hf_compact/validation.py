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


def check_labels(
    config: PretrainedConfig,
    num_labels: int,
    names: list[str] | None,
    *,
    model: str,
    require_trained_head: bool = False,
) -> bool:
    """Whether `config`'s head was trained on named labels (an `id2label` other than `LABEL_0`, `LABEL_1`, ...), after
    refusing data whose labels do not fit that head: another number of labels, or other names in id order (compared
    without case). `model` names the model in the messages (e.g. "--teacher path"). A head with generic names is a new
    one that takes the data's labels, unless `require_trained_head` (a distillation teacher), when its size must fit
    too.

    ```python
    >>> from transformers import BertConfig
    >>> check_labels(BertConfig(id2label={0: "neg", 1: "pos"}), 2, ["neg", "pos"], model="--teacher t")
    True
    ```
    """
    trained_names = [str(config.id2label[i]) for i in range(config.num_labels)]
    trained = not all(name == f"LABEL_{i}" for i, name in enumerate(trained_names))
    if not (trained or require_trained_head):
        return False
    if config.num_labels != num_labels:
        fix = ("fine-tune it on this task first (recipes/finetune.py)" if require_trained_head
               else "fine-tune from a model without a trained head")
        raise SystemExit(
            f"{model} predicts {config.num_labels} labels ({trained_names}) but the data has {num_labels}"
            f"{f' ({list(names)})' if names else ''}: {fix}, or fix --label_column."
        )
    if trained and names is not None and [n.lower() for n in names] != [n.lower() for n in trained_names]:
        raise SystemExit(
            f"{model} was trained on labels {trained_names}, the data has {list(names)} in that id order; rename or "
            "reorder the data's labels to the model's ids."
        )
    return trained


__all__ = ["check_labels", "load_config"]
