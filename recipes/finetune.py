"""Fine-tune a BERT-family or compact model with the transformers Trainer, optionally with LoRA.

Sequence classification (single-label, multi-label or regression, as the label column says) on text columns:

    python recipes/finetune.py --model_name_or_path bert-folder --train_file reviews.csv \\
        --text_column review --label_column sentiment --num_train_epochs 3 --output_dir outputs/teacher

Token classification on pre-split words with one tag per word:

    python recipes/finetune.py --task token-classification --model_name_or_path bert-folder \\
        --train_file ner.json --text_column tokens --label_column tags --output_dir outputs/ner

Every `TrainingArguments` flag works (`--per_device_train_batch_size`, `--learning_rate`, `--bf16`, `--use_cpu`,
`--report_to`, ...); where this recipe's default differs from the Trainer's, --help shows the recipe's. The same
script runs under `accelerate launch`. It evaluates on the validation split each epoch with the project's local
`evaluate` metrics (no network needed), keeps the best epoch, continues an interrupted run with
`--resume_from_checkpoint last`, and saves the model with its tokenizer, a `results.json` of the test metrics and
a model card in `--output_dir`. `--teacher` adds the agreement of the model's predictions with a teacher's.
`--lora_r` trains LoRA adapters (PEFT); with `--merge_lora` they are merged into the weights where the layers allow,
else saved as an adapter, which names its base model by `--hub_base_model` or else by the local folder's absolute
path.
"""

import argparse
import os
from dataclasses import dataclass, field

from transformers import AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, get_last_checkpoint

import hf_compact  # noqa: F401  (registers the compact model types)
from hf_compact.arguments import CardArguments, DataArguments, ExportArguments
from hf_compact.data import label_names
from hf_compact.devices import has_accelerator
from hf_compact.finetuning import (
    ModelArguments,
    best_model_metric,
    check_adapter_is_publishable,
    final_test_metrics,
    label_count,
    load_data,
    load_model,
    metrics_function,
    problem_type_of,
    results_record,
    save_final_model,
    teacher_predictions,
    tokenize_for_task,
)
from hf_compact.hub import publishing_problem, push_folder_to_hub
from hf_compact.model_card import write_model_card
from hf_compact.output_dir import create_work_dir, finish_output_dir, plan_output_dir
from hf_compact.precision import check_run_request, variants_for_run
from hf_compact.progress import ProgressCallback, TrainerProgress
from hf_compact.results import RunResults
from hf_compact.validation import load_config


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """`TrainingArguments` with this recipe's defaults: evaluate and save each epoch, keep the best epoch and two
    checkpoints, batches of similar lengths, TensorBoard logs, and the CPU where there is no other device."""

    output_dir: str = field(metadata={"help": "Folder of the fine-tuned model, its card and checkpoints."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace an existing --output_dir (only once the new model is saved)."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Continue the interrupted run in --output_dir: 'last' for its newest checkpoint-*, or one "
                          "of its checkpoint folders."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: float = field(
        default=0.06, metadata={"help": "Warm-up steps; below 1, a share of the total steps."}
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."}
    )
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "When to save a checkpoint."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept in --output_dir (the best one is always kept)."}
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "End with the checkpoint of the best validation score."}
    )
    metric_for_best_model: str | None = field(
        default="auto",
        metadata={"help": "Validation metric that picks the best checkpoint; 'auto': accuracy, mse for regression."},
    )
    train_sampling_strategy: str = field(
        default="group_by_length", metadata={"help": "Batches of similar lengths pad less."}
    )
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "Trainer integration(s) that receive the logs, or 'none'."}
    )
    use_cpu: bool = field(
        default=not has_accelerator(), metadata={"help": "Train on the CPU (the default where there is no GPU)."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("per_device_train_batch_size", "num_train_epochs", "gradient_accumulation_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help with every default, and the description above as written."""


def parse_args(argv: list[str] | None = None):
    """The five argument groups; bad input ends here with an argparse error, before any work."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, CardArguments, FinetuneTrainingArguments, ExportArguments),
        description=__doc__, formatter_class=HelpFormatter,
    )
    try:
        model_args, data_args, card_args, training_args, export_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:
        parser.error(str(error))
    if export_args.precisions and model_args.saves_adapter:
        parser.error("--export builds variants of a whole model; with LoRA add --merge_lora.")
    if training_args.push_to_hub and model_args.saves_adapter and not model_args.base_model_on_hub:
        parser.error(
            f"--push_to_hub would publish a LoRA adapter whose base model is the local folder "
            f"{model_args.model_name_or_path}, which nobody else can load. Push the base model to the Hub and pass "
            "its id with --hub_base_model owner/name, or merge the adapters into the weights with --merge_lora."
        )
    problem = publishing_problem(training_args.push_to_hub, training_args.hub_model_id)
    if problem:
        parser.error(problem)
    return model_args, data_args, card_args, training_args, export_args


def main(argv: list[str] | None = None, progress: ProgressCallback | None = None) -> RunResults | None:
    """Fine-tune as `argv` says (the command line when None) and return what results.json records (None on the
    other processes of a launch). `progress` receives each optimizer step and evaluation."""
    model_args, data_args, card_args, training_args, export_args = parse_args(argv)
    output_dir, resume = training_args.output_dir, training_args.resume_from_checkpoint
    # Every check runs before anything is written: an existing folder is replaced only once the new model is saved.
    work_dir = plan_output_dir(output_dir, overwrite=training_args.overwrite_output_dir, resume=bool(resume))
    if resume and resume.lower() in ("last", "true"):
        resume = get_last_checkpoint(work_dir)
        if not resume:
            raise SystemExit(f"--resume_from_checkpoint last: no checkpoint-* folder in {output_dir}.")
    load_config(model_args.model_name_or_path, "--model_name_or_path")  # a mistyped folder, before the data
    set_seed(training_args.seed)

    data = load_data(data_args)
    problem_type = problem_type_of(data, data_args.label_column, model_args.task)
    names = label_names(data, data_args.label_column)
    num_labels = label_count(data, data_args.label_column, problem_type)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    tokenized, collator = tokenize_for_task(data, tokenizer, data_args, problem_type)
    model, base_kwargs = load_model(model_args, num_labels, names, problem_type)
    check_adapter_is_publishable(model, model_args, training_args.push_to_hub)
    check_run_request(export_args.precisions, model, text_pair_column=data_args.text_pair_column)
    teacher_labels = {}
    if model_args.teacher:
        if problem_type == "token_classification":
            raise SystemExit("--teacher agreement is reported for sequence classification only.")
        teacher_labels = teacher_predictions(model_args.teacher, tokenized, collator, problem_type,
                                             training_args.per_device_eval_batch_size)

    if training_args.metric_for_best_model == "auto":
        training_args.metric_for_best_model, training_args.greater_is_better = best_model_metric(problem_type)
    # The Trainer writes to the staging folder, and the finished folder is pushed below, not every checkpoint.
    push_to_hub, training_args.push_to_hub, training_args.output_dir = training_args.push_to_hub, False, work_dir
    if training_args.process_index == 0:
        create_work_dir(work_dir)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=metrics_function(problem_type, num_labels, teacher_labels.get("validation")),
        callbacks=[TrainerProgress(progress)] if progress else None,
    )
    trainer.train(resume_from_checkpoint=resume)

    trainer.compute_metrics = metrics_function(problem_type, num_labels, teacher_labels.get("test"))
    metrics = final_test_metrics(trainer, tokenized["test"])
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if not trainer.is_world_process_zero():
        return None

    saved = save_final_model(trainer.model, tokenizer, work_dir, merge_lora=model_args.merge_lora)
    results = results_record(trainer, model_args, data_args, card_args, data, output_dir=output_dir,
                             work_dir=work_dir, saved=saved, problem_type=problem_type, metrics=metrics,
                             base_kwargs=base_kwargs)
    if export_args.precisions:
        results.variants = variants_for_run(work_dir, export_args.precisions, data, text_column=data_args.text_column,
                                            label_column=data_args.label_column,
                                            tolerance_points=export_args.export_tolerance)
    results.save(os.path.join(work_dir, "results.json"))
    if not card_args.no_model_card:
        write_model_card(work_dir, results, repo_id=training_args.hub_model_id)
    finish_output_dir(work_dir, output_dir)  # the old folder, if any, gives way only now
    print(f"{saved} saved to {output_dir}")
    if push_to_hub:
        url = push_folder_to_hub(output_dir, training_args.hub_model_id, private=bool(training_args.hub_private_repo),
                                 commit_message="Fine-tuned with hf_compact", token=training_args.hub_token)
        print(f"pushed to {url}")
    return results


if __name__ == "__main__":
    main()
