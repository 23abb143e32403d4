"""What a distillation run measures and records: accuracy and agreement with the teacher (gathered over processes),
MLM loss, the teacher's own scores (from the logits cache where it has them), latency side by side, and the results
dict written to `results.json`.

Every reported number comes from a float32 forward pass of the weights that are saved: the recipe trains under
`accelerator.autocast()` and keeps the models' own forward as it is.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics

import torch
from accelerate.utils import DistributedType, gather_object
from transformers.utils import logging

from .benchmarking import hardware_name, median_batch_ms
from .mlm_checks import untrained_mlm_head, unused_mlm_head
from .results import DistributedRecord, ModelRecord, RunResults, SpeedRecord, TeacherRecord, TrainingRecord, card_inputs
from .teacher_cache import teacher_logits_column, update_with_weights


logger = logging.get_logger(__name__)


def scored(predictions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and labels where a label is given (flattened): every example of a sequence task, the labelled
    tokens (first sub-token of each word) of a token task; -100 marks the others."""
    keep = labels != -100
    return predictions[keep], labels[keep]


def _metrics(predictions, references, teacher_predictions=None) -> dict[str, float]:
    metrics = {"accuracy": (predictions == references).float().mean().item()}
    if teacher_predictions is not None:
        metrics["agreement"] = (predictions == teacher_predictions).float().mean().item()
    return metrics


@torch.inference_mode()
def evaluate(model, dataloader, accelerator, teacher_predictions=None) -> tuple[dict[str, float], torch.Tensor]:
    """Accuracy on the dataloader's labels and, if teacher predictions are given, agreement with them."""
    model = accelerator.unwrap_model(model).eval()
    predictions, references = [], []
    for batch in dataloader:
        labels = batch.pop("labels")
        batch.pop("teacher_logits", None)
        batch_predictions = model(**batch).logits.argmax(-1)
        if labels.dim() == 2:  # token classification: processes' batches may differ in length
            batch_predictions = accelerator.pad_across_processes(batch_predictions, dim=1, pad_index=-100)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
        gathered = accelerator.gather_for_metrics((batch_predictions, labels))
        batch_predictions, labels = scored(gathered[0].cpu(), gathered[1].cpu())
        predictions.append(batch_predictions)
        references.append(labels)
    predictions = torch.cat(predictions)
    return _metrics(predictions, torch.cat(references), teacher_predictions), predictions


@torch.inference_mode()
def evaluate_mlm(model, dataloader, accelerator) -> dict[str, float]:
    model = accelerator.unwrap_model(model).eval()
    losses = [accelerator.gather_for_metrics(model(**batch).loss.detach().reshape(1)).mean().item()
              for batch in dataloader]
    loss = statistics.fmean(losses)
    return {"mlm_loss": loss, "perplexity": math.exp(min(loss, 50))}


def untrained_head(model_args, objective, teacher) -> str | None:
    """Why a masked-LM run's student head is random weights (`hf_compact.mlm_checks.untrained_mlm_head`), or None."""
    if model_args.task != "mlm":
        return None
    return untrained_mlm_head(objective, teacher, from_scratch=model_args.init == "scratch")


def evaluate_student(task: str, student, loaders, accelerator, teacher_predictions, split: str,
                     untrained: str | None = None) -> dict[str, float]:
    """The student's metrics on `split`; none for a masked-LM student whose head is random weights (`untrained` says
    why: `untrained_head`)."""
    if task == "mlm":
        return {} if untrained else evaluate_mlm(student, loaders[split], accelerator)
    return evaluate(student, loaders[split], accelerator, teacher_predictions[split])[0]


def _cached_scores(teacher, dataset, cache_dir, collator, batch_size):
    logits = teacher_logits_column(teacher, dataset, cache_dir, collator, batch_size=batch_size, show_progress=False)
    predictions, labels = [], []
    for row, label in zip(logits, dataset["labels"]):  # per example: a label, or per-token tags
        prediction, label = scored(torch.as_tensor(row.argmax(-1)).reshape(-1), torch.as_tensor(label).reshape(-1))
        predictions.append(prediction)
        labels.append(label)
    predictions = torch.cat(predictions)
    return _metrics(predictions, torch.cat(labels)), predictions


def evaluate_teacher(task, teacher, eval_sets, loaders, accelerator, collator, batch_size, cache_dir=None,
                     soft_target_weight: float | None = None):
    """The teacher's metrics and predictions on the validation and test splits (validation MLM loss for "mlm"); read
    from the logits cache in `cache_dir` when one is given. A teacher far below chance on validation is refused (the
    data's label ids do not follow its id2label); one near chance is reported loudly.

    For "mlm" the MLM loss and perplexity are those of the teacher's head, measured only when the run uses it: not
    when `soft_target_weight` (the run's --kd_weight) is 0 or the checkpoint holds no head
    (`hf_compact.mlm_checks.unused_mlm_head`); the log then says why and the validation metrics are empty."""
    if task == "mlm":
        unused = unused_mlm_head(teacher, soft_target_weight)
        if unused:
            logger.warning(f"The teacher's masked-LM head is not used: {unused}. Its perplexity would measure an "
                           "unused head, so it is neither measured nor recorded.")
            return {"validation": {}}, {}
        return {"validation": evaluate_mlm(teacher, loaders["validation"], accelerator)}, {}
    metrics, predictions = {}, {}
    for split, loader in loaders.items():
        if cache_dir is None:
            metrics[split], predictions[split] = evaluate(teacher, loader, accelerator)
        else:  # later runs on the same data read the teacher's evaluation from the cache too
            with accelerator.main_process_first():
                metrics[split], predictions[split] = _cached_scores(teacher, eval_sets[split], cache_dir, collator,
                                                                    batch_size)
    chance, accuracy = 1 / teacher.config.num_labels, metrics["validation"]["accuracy"]
    if accuracy < chance / 2:
        raise SystemExit(
            f"The teacher is right on {100 * accuracy:.1f}% of the validation examples, far below chance "
            f"({100 * chance:.1f}%): the data's label ids do not follow the teacher's id2label "
            f"{[teacher.config.id2label[i] for i in range(teacher.config.num_labels)]}. Map the labels to those "
            "ids (or use the label names) and run again."
        )
    if accuracy < chance + 0.05:
        logger.warning(
            f"The teacher is near chance on the validation split ({accuracy:.3f} vs chance {chance:.3f}). A student "
            "cannot learn more than its teacher knows: fine-tune the teacher first (recipes/finetune.py)."
        )
    return metrics, predictions


def measure_latency(teacher, student, dataloader, num_batches: int) -> dict:
    """Median forward time (ms per batch) of teacher and student on the same test batches, taking turns in one
    process (`hf_compact.benchmarking.median_batch_ms`)."""
    batches = []
    for batch in dataloader:
        batches.append({k: v for k, v in batch.items() if k not in ("labels", "teacher_logits")})
        if len(batches) == num_batches:
            break
    times = median_batch_ms({"teacher": teacher, "student": student}, batches)
    return {
        "teacher_ms": times["teacher"],
        "student_ms": times["student"],
        "speedup": times["teacher"] / times["student"],
        "batch_size": batches[0]["input_ids"].shape[0],
        "sequence_length": "real",
        "threads": torch.get_num_threads(),
        "hardware": hardware_name(),
        "batches": len(batches),
    }


def weight_checksum(model) -> str:
    digest = hashlib.sha256()
    update_with_weights(digest, model)
    return digest.hexdigest()[:16]


def distributed_summary(accelerator, student, per_device_batch_size: int) -> dict:
    """How the run was spread: processes, batch sizes, threads, and a checksum of each process's weights (all equal
    when data-parallel processes stayed in step; sharded set-ups hold different parts and record none)."""
    replicated = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                                   DistributedType.MULTI_GPU)
    checksums = gather_object([weight_checksum(accelerator.unwrap_model(student))]) if replicated else None
    return {
        "num_processes": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "per_device_batch_size": per_device_batch_size,
        "global_batch_size": (per_device_batch_size * accelerator.num_processes
                              * accelerator.gradient_accumulation_steps),
        "threads_per_process": torch.get_num_threads(),
        "rank_weight_checksums": checksums,
    }


def optimizer_steps(completed_batches: int, batches_per_epoch: int, accumulation: int) -> int:
    """Optimizer steps after `completed_batches`: one per `accumulation` batches and one at the end of each epoch."""
    epochs, rest = divmod(completed_batches, batches_per_epoch)
    return epochs * math.ceil(batches_per_epoch / accumulation) + rest // accumulation


def distill_results(run, *, accelerator, teacher, student, objective, layer_map, init, data, history,
                    completed_batches, batches_per_epoch, teacher_cache_seconds, teacher_metrics, student_metrics,
                    speed=None, pipeline_tag: str, transfer: dict | None = None,
                    untrained: str | None = None) -> RunResults:
    """The results record of a run (`results.json`). `run` holds the parsed flags as attributes `model`, `data`,
    `training` and `card` (the dataclasses). `transfer` (`TransferArguments.record`), when it says anything, goes
    into the training record: the examples without labels the run added and where they came from. A masked-LM
    teacher whose head the run does not use has no metrics in the record, and the record says why; so has a masked-LM
    student whose head is random weights (`untrained` says why, see `untrained_head`; `student_metrics` is then
    empty)."""
    model_args, training_args = run.model, run.training
    split = "test" if model_args.task != "mlm" else "validation"
    unwrapped = accelerator.unwrap_model(student)
    retention = None
    if model_args.task != "mlm":
        retention = {"accuracy": student_metrics["accuracy"] / max(teacher_metrics["test"]["accuracy"], 1e-12)}
    teacher_scores, teacher_notes = teacher_metrics[split] or None, {}
    unused = unused_mlm_head(teacher, objective.kd_weight) if model_args.task == "mlm" else None
    if unused:
        teacher_scores, teacher_notes = None, {"metrics_not_measured": f"its masked-LM head is not used: {unused}"}
    student_notes = {"metrics_not_measured": f"its masked-LM head is not trained: {untrained}"} if untrained else {}
    return RunResults(
        model_name=os.path.basename(os.path.abspath(training_args.output_dir)),
        model_type=model_args.student_type,
        task=pipeline_tag,
        teacher=TeacherRecord(name_or_path=model_args.teacher, model_type=teacher.config.model_type,
                              parameters=teacher.num_parameters(), metrics=teacher_scores, extra=teacher_notes),
        student=ModelRecord(parameters=unwrapped.num_parameters(), metrics=student_metrics, extra=student_notes),
        training=TrainingRecord(
            method="distillation" if objective.uses_teacher else "fine-tuning on labels alone",
            # As run (--max_steps may end an epoch early).
            epochs=completed_batches / batches_per_epoch,
            steps=optimizer_steps(completed_batches, batches_per_epoch, training_args.gradient_accumulation_steps),
            learning_rate=training_args.learning_rate,
            batch_size=training_args.per_device_train_batch_size,
            seed=training_args.seed,
            temperature=objective.temperature,
            loss_weights=objective.weights(),
            layer_map=layer_map,
            init=init,
            frozen=["word embeddings"] if model_args.freeze_word_embeddings else [],
            mixed_precision=accelerator.mixed_precision,
            dropout=model_args.student_dropout,
            teacher_cache=teacher_cache_seconds is not None,
            teacher_cache_seconds=teacher_cache_seconds,
            history=history,
            train_seconds=sum(epoch["train_seconds"] for epoch in history),
            distributed=DistributedRecord(
                **distributed_summary(accelerator, student, training_args.per_device_train_batch_size)),
            extra=dict(transfer or {}),
        ),
        config=unwrapped.config.to_diff_dict(),
        retention=retention,
        speed=SpeedRecord(**speed) if speed is not None else None,
        **card_inputs(run.data, run.card, data, split),
    )


__all__ = [
    "distill_results",
    "distributed_summary",
    "evaluate",
    "evaluate_mlm",
    "evaluate_student",
    "evaluate_teacher",
    "measure_latency",
    "optimizer_steps",
    "scored",
    "untrained_head",
    "weight_checksum",
]
