"""The pieces of a distillation run's training loop that are not the loop: the transfer set (texts without labels
added to the training split), length-grouped batches that N processes share as one process would see them, the
student's forward pass with a label loss that skips unlabelled examples, the optimizer and schedule, and a progress
bar driven by `Progress` reports.

```python
>>> loader = train_dataloader(tokenized["train"], collator, batch_size=32, num_processes=1, seed=42)  # doctest: +SKIP
>>> optimizer, scheduler, total_steps = optimizer_and_schedule(  # doctest: +SKIP
...     student, distiller, training_args, len(loader), num_processes=1, device_type="cpu")
```
"""

from __future__ import annotations

import math

import datasets
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging

from .augmentation import augment_texts
from .data import UNLABELED, EpochLengthGroupedSampler, load_unlabeled_texts, tokenize_dataset
from .progress import Progress


logger = logging.get_logger(__name__)

TRANSFER_SPLITS = ("unlabeled", "augmented")  # the transfer set's parts, each scored and cached on its own


def transfer_sets(args, data: datasets.DatasetDict, tokenizer, *, text_column: str, label_column: str | None,
                  max_length: int, seed: int) -> dict[str, datasets.Dataset]:
    """The tokenized transfer set of a run (`args`: `hf_compact.distill_arguments.TransferArguments`): "unlabeled",
    the texts of the files, and "augmented", `args.augment` copies of each training text; parts that are not asked
    for are left out. Texts that are also in the validation or test split are dropped: the student would otherwise
    be fitted to the teacher's answers on the examples it is scored on. Raises ValueError for unusable files."""
    if not args.used:
        return {}
    if label_column is not None and not isinstance(data["train"].features[label_column], datasets.ClassLabel):
        raise ValueError(f"--unlabeled_file and --augment need class labels; the column {label_column!r} holds "
                         f"{data['train'].features[label_column]} (regression or multi-label targets).")
    texts = {}
    if args.unlabeled_file:
        texts["unlabeled"] = load_unlabeled_texts(args.unlabeled_file, args.unlabeled_text_column or text_column)
    if args.augment:
        copies = augment_texts(data["train"][text_column], args.augment, seed, tokenizer.mask_token,
                               **vars(args.augmentation))
        texts["augmented"] = datasets.Dataset.from_dict({"text": copies},
                                                        features=datasets.Features({"text": datasets.Value("string")}))
    scored = {text for split in ("validation", "test") for text in data[split][text_column]}
    tokenized = {}
    for split, dataset in texts.items():
        kept = dataset.filter(lambda text: text not in scored, input_columns="text")
        if len(kept) < len(dataset):
            logger.warning("%d %s texts are also validation or test texts: they are left out.",
                           len(dataset) - len(kept), split)
        if len(kept):
            tokenized[split] = tokenize_dataset(datasets.DatasetDict({"train": kept}), tokenizer, label_column=None,
                                                max_length=max_length)["train"]
    return tokenized


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the examples that have a label (`labels` other than `UNLABELED`), in float32; 0
    (still a function of the logits) for a batch with none."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=UNLABELED, reduction="sum")
    return total / (labels != UNLABELED).sum().clamp(min=1)


def student_forward(student, objective, batch: dict):
    """The student's outputs on a batch, with what `objective` (a `DistillationConfig`) needs. With the label loss on
    and unlabelled examples in the batch, `loss` is `labelled_cross_entropy`: the unlabelled ones learn from the
    teacher alone. Other batches go through the model's own loss, which it equals there."""
    labels = batch.get("labels")
    if objective.ce_weight == 0 or labels is None or labels.dim() != 1 or bool((labels != UNLABELED).all()):
        return student(**objective.student_inputs(batch), **objective.output_flags())
    outputs = student(**{k: v for k, v in batch.items() if k != "labels"}, **objective.output_flags())
    outputs["loss"] = labelled_cross_entropy(outputs.logits, labels)  # an item, so copies of the outputs keep it
    return outputs


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


__all__ = [
    "TRANSFER_SPLITS",
    "ProgressBar",
    "eval_dataloaders",
    "labelled_cross_entropy",
    "optimizer_and_schedule",
    "reporter",
    "student_forward",
    "train_dataloader",
    "transfer_sets",
]
