"""Knowledge distillation from a BERT-family teacher into a compact student, with Accelerate.

Task distillation (a fine-tuned sequence classifier as the teacher):

    accelerate launch recipes/distill.py --teacher path/to/teacher --train_file train.csv \
        --student_type compact_distilbert --output_dir outputs/student

Token classification (a fine-tuned tagger as the teacher; a column of word lists and a column of tags per word):

    accelerate launch recipes/distill.py --task token-classification --teacher path/to/tagger \
        --train_file ner.json --text_column tokens --label_column tags --output_dir outputs/tagger-student

With a transfer set (Tang et al., 2019): texts without labels, and augmented copies of the training texts, that
the student learns from the teacher's soft targets alone:

    accelerate launch recipes/distill.py --teacher path/to/teacher --train_file train.csv \
        --unlabeled_file more_texts.jsonl other_texts.txt --augment 4 --output_dir outputs/student

General distillation on raw text (a masked-LM teacher), as DistilBERT was trained:

    accelerate launch recipes/distill.py --task mlm --teacher bert-folder --train_file corpus.txt.csv \
        --label_column none --ce_weight 1 --cos_weight 1 --output_dir outputs/mlm-student

From Python (the demo does): `main(argv, progress=callback)` returns the results and reports each optimizer step,
evaluation and the end to `callback` as `hf_compact.progress.Progress`.

The same script runs as plain `python`, under `accelerate launch --cpu --num_processes 2` (gloo), on GPUs, with mixed
precision, gradient accumulation, DeepSpeed or FSDP: see the configuration files in recipes/accelerate_configs/.

The student starts from the teacher (`hf_compact.convert_to_compact`: embeddings plus the layers of the layer map)
unless `--init scratch`. With only soft-target and hard-label losses, the teacher's logits are computed once and
cached on disk (`--teacher_cache_dir`), so epochs run without a teacher forward pass; the hidden-state and attention
losses need the teacher at every step.
"""

import argparse

import os
import time

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from transformers import AutoTokenizer, HfArgumentParser

from hf_compact.arguments import CardArguments, DataArguments, ExportArguments
from hf_compact.checkpointing import resume_from, save_checkpoint
from hf_compact.data import collator_for_task, load_recipe_dataset, mix_unlabeled, tokenize_for_task
from hf_compact.devices import has_accelerator
from hf_compact.distill_arguments import DistillTrainingArguments, ModelArguments, TransferArguments
from hf_compact.distill_evaluation import (
    distill_results,
    evaluate_student,
    evaluate_teacher,
    measure_latency,
    untrained_head,
)
from hf_compact.distill_models import (
    TASKS,
    build_student,
    fit_grouped_student,
    init_description,
    load_teacher,
    output_bytes,
    preflight,
)
from hf_compact.distill_training import (
    TRANSFER_SPLITS,
    ProgressBar,
    eval_dataloaders,
    optimizer_and_schedule,
    reporter,
    student_forward,
    train_dataloader,
    transfer_sets,
)
from hf_compact.distillation import DistillationConfig, Distiller, stop_unless_finite
from hf_compact.hub import publishing_problem, push_folder_to_hub
from hf_compact.model_card import comparison_from_results, write_model_card
from hf_compact.output_dir import (
    check_free_space,
    create_work_dir,
    finish_output_dir,
    plan_output_dir,
    save_model_atomic,
)
from hf_compact.progress import Progress, ProgressCallback
from hf_compact.precision import check_run_request, variants_for_run
from hf_compact.results import RunResults
from hf_compact.teacher_cache import add_teacher_logits


class RunArguments:
    """The parsed flags, by group: `model`, `objective`, `data`, `training`, `card`, `export`, `transfer`."""

    def __init__(self, model, objective, data, training, card, export, transfer):
        self.model, self.objective, self.data, self.training, self.card = model, objective, data, training, card
        self.export, self.transfer = export, transfer


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parse_args(argv: list[str] | None = None) -> RunArguments:
    parser = HfArgumentParser((ModelArguments, DistillationConfig, DataArguments, DistillTrainingArguments,
                               CardArguments, ExportArguments, TransferArguments), description=__doc__,
                               formatter_class=HelpFormatter)
    try:
        run = RunArguments(*parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False))
    except ValueError as error:  # a dataclass's own check: reported as an argument error, before any work
        parser.error(str(error))
    if run.data.label_column.lower() == "none" or run.model.task == "mlm":
        run.data.label_column = None
    elif run.model.task != "sequence-classification" and run.data.label_column is None:
        parser.error(f"--task {run.model.task} needs --label_column.")
    if run.export.precisions and run.model.task != "sequence-classification":
        parser.error(f"--export checks variants by classification accuracy: it needs --task sequence-classification, "
                     f"not {run.model.task}.")
    problem = publishing_problem(run.training.push_to_hub, run.training.hub_model_id) or run.transfer.problem(
        run.model.task, run.objective.uses_teacher, run.data.text_pair_column)
    if problem:
        parser.error(problem)
    return run


def scores(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()) or "not measured"


def stop_on_bad_data(load, *args, **kwargs):
    """`load(*args, **kwargs)`; its ValueError (a column, label, split or file problem, the message says which) ends
    the run with the message alone."""
    try:
        return load(*args, **kwargs)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def load_data(args: DataArguments):
    return stop_on_bad_data(load_recipe_dataset, **{k: v for k, v in vars(args).items() if k != "max_length"})


def load_transfer_sets(run: RunArguments, data, tokenizer) -> dict:
    """The tokenized transfer set (`hf_compact.distill_training.transfer_sets`); empty when none is asked for."""
    return stop_on_bad_data(transfer_sets, run.transfer, data, tokenizer, text_column=run.data.text_column,
                            label_column=run.data.label_column, max_length=run.data.max_length,
                            seed=run.training.seed)


def get_models_and_data(run: RunArguments, accelerator, work_dir: str):
    """Teacher, tokenizer, student (and its layer map), distiller, data and its tokenized splits, once every check
    has passed; then the work folder is created."""
    model_args, objective, args = run.model, run.objective, run.training
    teacher = load_teacher(model_args.teacher, model_args.task)
    tokenizer = AutoTokenizer.from_pretrained(model_args.teacher)
    student, layer_map = build_student(model_args, teacher, eager_attention=objective.needs_attentions)
    check_run_request(run.export.precisions, student, text_pair_column=run.data.text_pair_column)
    if objective.needs_attentions:
        teacher.set_attn_implementation("eager")
    distiller = Distiller.between(objective, layer_map, student, teacher)
    with accelerator.main_process_first():
        data = load_data(run.data)
        preflight(model_args.task, teacher, student, tokenizer, data, run.data.label_column, run.data.max_length,
                  text_column=run.data.text_column, soft_target_weight=objective.kd_weight)
        tokenized = tokenize_for_task(data, tokenizer, model_args.task, text_column=run.data.text_column,
                                      text_pair_column=run.data.text_pair_column,
                                      label_column=run.data.label_column, max_length=run.data.max_length)
        tokenized.update(load_transfer_sets(run, data, tokenizer))
    check_free_space(work_dir, output_bytes(student, args.save_total_limit if args.save_steps else 0))
    if accelerator.is_main_process:
        create_work_dir(work_dir)
    accelerator.wait_for_everyone()

    return teacher, tokenizer, student, layer_map, distiller, data, tokenized


def make_accelerator(args: DistillTrainingArguments, work_dir: str) -> Accelerator:
    """The CPU where there is no accelerator (so `accelerate launch` and torchrun processes form one gloo group),
    checkpoints named and rotated by Accelerate inside the work folder, tracker logs in its runs/."""
    return Accelerator(
        cpu=args.use_cpu or not has_accelerator(), mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=work_dir, logging_dir=os.path.join(work_dir, "runs"),
                                            automatic_checkpoint_naming=True, total_limit=args.save_total_limit),
    )


def cached_soft_targets(run: RunArguments, accelerator, teacher, tokenized, collator):
    """The training split, the transfer set's examples mixed in (without labels). When the losses need nothing from
    the teacher but its logits, with the teacher's soft targets added, computed once in the training precision (as
    the teacher would give them in the loop) and cached, each part in its own entry; the cache folder, and the seconds
    it took (a forward pass over the data, or a read from disk). Otherwise the split as it is, and None twice."""
    model_args, args = run.model, run.training
    parts = [tokenized[split] for split in ("train", *TRANSFER_SPLITS) if split in tokenized]
    if model_args.task == "mlm" or run.objective.needs_teacher_forward or model_args.no_teacher_cache:
        return mix_unlabeled(parts[0], parts[1:]), None, None
    cache_dir = model_args.teacher_cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.output_dir)),
                                                             ".teacher_cache")
    start = time.perf_counter()
    with accelerator.main_process_first():
        parts = [add_teacher_logits(
            teacher, part, cache_dir, collator, top_k=model_args.teacher_cache_top_k,
            batch_size=args.per_device_eval_batch_size, show_progress=accelerator.is_local_main_process,
            autocast_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision))
            for part in parts]
    return mix_unlabeled(parts[0], parts[1:]), cache_dir, time.perf_counter() - start


def training_function(run: RunArguments, progress: ProgressCallback | None = None) -> RunResults:
    model_args, objective, args = run.model, run.objective, run.training
    # Every check runs before anything is written: an existing folder is replaced only once the new model is saved.
    work_dir = plan_output_dir(args.output_dir, overwrite=args.overwrite_output_dir,
                               resume=bool(args.resume_from_checkpoint))
    accelerator = make_accelerator(args, work_dir)
    accelerator.print(f"{accelerator.num_processes} process(es), {accelerator.distributed_type.value}, "
                      f"{torch.get_num_threads()} thread(s) each")
    set_seed(args.seed)

    teacher, tokenizer, student, layer_map, distiller, data, tokenized = get_models_and_data(run, accelerator,
                                                                                             work_dir)
    collator = collator_for_task(tokenizer, model_args.task)
    teacher = teacher.to(accelerator.device).eval()  # never prepared: frozen, and out of the checkpoints
    train_set, cache_dir, cache_seconds = cached_soft_targets(run, accelerator, teacher, tokenized, collator)
    if not args.resume_from_checkpoint:
        fit_grouped_student(model_args, teacher, student, layer_map, train_set, collator,
                            args.per_device_eval_batch_size)
    if model_args.freeze_word_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    loader = train_dataloader(train_set, collator, batch_size=args.per_device_train_batch_size,
                              num_processes=accelerator.num_processes, seed=args.seed)
    eval_sets, eval_loaders = eval_dataloaders(tokenized, collator, args.per_device_eval_batch_size)
    optimizer, scheduler, total_steps = optimizer_and_schedule(student, distiller, args, len(loader),
                                                               accelerator.num_processes, accelerator.device.type)
    student, optimizer, loader, scheduler = accelerator.prepare(student, optimizer, loader, scheduler)
    distiller = accelerator.prepare_model(distiller) if any(p.requires_grad for p in distiller.parameters()) else (
        distiller.to(accelerator.device))
    for model in (student, distiller):  # their own float32 forward: the loop autocasts explicitly, metrics do not
        accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    eval_loaders = {split: accelerator.prepare(d) for split, d in eval_loaders.items()}
    teacher_metrics, teacher_predictions = evaluate_teacher(
        model_args.task, teacher, eval_sets, eval_loaders, accelerator, collator, args.per_device_eval_batch_size,
        cache_dir, soft_target_weight=objective.kd_weight)
    accelerator.print(f"teacher validation {scores(teacher_metrics['validation'])}")
    untrained = untrained_head(model_args, objective, teacher)  # a random masked-LM head's perplexity is not measured
    accelerator.init_trackers("distill", config={k: v for group in vars(run).values() for k, v in vars(group).items()
                                                 if isinstance(v, (int, float, str, bool))})
    report = reporter(ProgressBar("distilling" if objective.uses_teacher else "training on labels alone",
                                  disable=not accelerator.is_local_main_process), progress)

    completed_batches, step, history = 0, 0, []
    if args.resume_from_checkpoint:
        folder, state = resume_from(accelerator, args.resume_from_checkpoint)
        completed_batches, step = state["completed_batches"], state["step"]
        accelerator.print(f"resumed from {folder} ({completed_batches} batches done)")
    total_batches = min(args.num_train_epochs * len(loader), total_steps * args.gradient_accumulation_steps)
    for epoch in range(completed_batches // len(loader), args.num_train_epochs):
        student.train()
        loader.set_epoch(epoch)  # the sampler's order of this epoch
        skip = completed_batches - epoch * len(loader)  # batches a resumed run already trained on
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch_loader.set_epoch(epoch)
        epoch_start, epoch_examples = time.perf_counter(), 0
        for batch in epoch_loader:
            with accelerator.accumulate(student):
                cached_logits = batch.pop("teacher_logits", None)
                with accelerator.autocast():
                    teacher_outputs = objective.teacher_outputs(teacher, batch) if cached_logits is None else None
                    student_outputs = student_forward(student, objective, batch)
                loss, parts = distiller(student_outputs, cached_logits, teacher_outputs, batch.get("attention_mask"))
                stop_unless_finite(loss, parts, completed_batches, os.path.join(work_dir, "checkpoints"))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            completed_batches += 1
            epoch_examples += batch["input_ids"].shape[0]
            if accelerator.sync_gradients:
                step += 1
                logged = {"loss": loss.item(), **parts, "lr": scheduler.get_last_lr()[0]}
                accelerator.log({f"train/{k}": v for k, v in logged.items()}, step=step)
                if args.save_steps and step % args.save_steps == 0:
                    save_checkpoint(accelerator, {"completed_batches": completed_batches, "step": step})
                report(Progress("train", step, total_steps, completed_batches / len(loader), logged))
            if completed_batches >= total_batches:
                break
        train_seconds = time.perf_counter() - epoch_start
        last_epoch = epoch + 1 == args.num_train_epochs or completed_batches >= total_batches
        metrics = {} if args.eval_last_epoch_only and not last_epoch else evaluate_student(
            model_args.task, student, eval_loaders, accelerator, teacher_predictions, "validation", untrained)
        history.append({"epoch": epoch + 1, **metrics, "train_seconds": train_seconds,
                        "train_samples_per_s": epoch_examples * accelerator.num_processes / train_seconds})
        if metrics:
            accelerator.print(f"epoch {epoch + 1}: student {scores(metrics)}")
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=step)
            report(Progress("evaluate", step, total_steps, completed_batches / len(loader), metrics))
        if completed_batches >= total_batches:
            break

    results = final_results(run, accelerator, teacher, student, layer_map, data, tokenized, history,
                            completed_batches, len(loader), cache_seconds, teacher_metrics, teacher_predictions,
                            eval_loaders, untrained)
    save_outputs(accelerator, student, tokenizer, work_dir, results, run, data)
    report(Progress("done", step, total_steps, completed_batches / len(loader), results.student.metrics))
    accelerator.end_training()  # last: it also ends the process group
    return results


def final_results(run, accelerator, teacher, student, layer_map, data, tokenized, history, completed_batches,
                  batches_per_epoch, cache_seconds, teacher_metrics, teacher_predictions, eval_loaders,
                  untrained: str | None) -> RunResults:
    """The student's final scores (test split; validation for MLM; none when `untrained` says why its masked-LM head
    is random weights), the latency ratio, and the results record."""
    model_args, args = run.model, run.training
    transfer = {split: len(tokenized[split]) for split in TRANSFER_SPLITS if split in tokenized}
    num_train_examples = len(tokenized["train"]) + sum(transfer.values())
    final_split = "validation" if model_args.task == "mlm" else "test"
    student_metrics = evaluate_student(model_args.task, student, eval_loaders, accelerator, teacher_predictions,
                                       final_split, untrained)
    accelerator.print(f"{final_split}: teacher {scores(teacher_metrics[final_split])} | student "
                      + (f"not measured (its masked-LM head is not trained: {untrained})" if untrained
                         else scores(student_metrics)))
    speed = None
    if accelerator.is_main_process and args.latency_batches > 0:
        speed = measure_latency(teacher, accelerator.unwrap_model(student), eval_loaders["test"], args.latency_batches)
        accelerator.print(f"latency per batch: teacher {speed['teacher_ms']:.1f} ms, student "
                          f"{speed['student_ms']:.1f} ms ({speed['speedup']:.2f}x)")
    results = distill_results(
        run, accelerator=accelerator, teacher=teacher, student=student, objective=run.objective, layer_map=layer_map,
        init=init_description(model_args, accelerator.unwrap_model(student), num_train_examples), data=data,
        history=history, completed_batches=completed_batches, batches_per_epoch=batches_per_epoch,
        teacher_cache_seconds=cache_seconds, teacher_metrics=teacher_metrics, student_metrics=student_metrics,
        speed=speed, pipeline_tag=TASKS[model_args.task][2], transfer=run.transfer.record(transfer),
        untrained=untrained)
    return results


def save_outputs(accelerator, student, tokenizer, work_dir: str, results: RunResults, run: RunArguments,
                 data) -> None:
    """The student, its gated lower-precision variants (--export), results.json and the card into the work folder,
    which then takes the output folder's place; then the push, if asked for."""
    args = run.training
    save_model_atomic(accelerator, student, tokenizer, work_dir)
    if accelerator.is_main_process:
        weights = os.path.join(work_dir, "model.safetensors")
        results.student.file_size_bytes = os.path.getsize(weights) if os.path.exists(weights) else None
        if run.export.precisions:
            results.variants = variants_for_run(work_dir, run.export.precisions, data, text_column=run.data.text_column,
                                                label_column=run.data.label_column,
                                                tolerance_points=run.export.export_tolerance, log=accelerator.print)
        results.save(os.path.join(work_dir, "results.json"))
        if not run.card.no_model_card:
            write_model_card(work_dir, results, comparison=comparison_from_results(results),
                             repo_id=args.hub_model_id)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish_output_dir(work_dir, args.output_dir)  # the old folder, if any, gives way only now
        accelerator.print(f"student saved to {args.output_dir}")
        if args.push_to_hub:
            url = push_folder_to_hub(args.output_dir, args.hub_model_id, private=args.hub_private_repo,
                                     commit_message="Distilled with hf_compact")
            accelerator.print(f"pushed to {url}")


def main(argv: list[str] | None = None, progress: ProgressCallback | None = None) -> RunResults:
    """Run the recipe with command-line flags `argv` (default: sys.argv); returns the record written to results.json
    (a `hf_compact.results.RunResults`). `progress` receives a report after each optimizer step, each evaluation and
    at the end."""
    return training_function(parse_args(argv), progress)


if __name__ == "__main__":
    main()
