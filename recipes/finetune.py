"""Fine-tune a BERT-family or compact model with the transformers Trainer, optionally with LoRA.

Sequence classification (single-label, multi-label or regression, as the label column says) on text columns:

    python recipes/finetune.py --model_name_or_path bert-folder --train_file reviews.csv \
        --text_column review --label_column sentiment --output_dir outputs/teacher

Token classification on pre-split words with one tag per word:

    python recipes/finetune.py --task token-classification --model_name_or_path bert-folder \
        --train_file ner.json --text_column tokens --label_column tags --output_dir outputs/ner

The same script runs under `accelerate launch` (the Trainer uses Accelerate underneath). It evaluates on the
validation split each epoch with the project's local `evaluate` metrics (no network needed), keeps Trainer
checkpoints so `--resume` continues an interrupted run, and finishes with the best model (by validation score)
saved in `--output_dir` with its tokenizer, a `results.json` of the test metrics and a model card. `--teacher`
adds the agreement of the model's predictions with a teacher's. `--lora_r` trains LoRA adapters (PEFT); with
`--merge_lora` they are merged into the weights where the layers allow, else saved as an adapter, which names its
base model by the Hub id given with `--hub_base_model` or else by the absolute path of the local folder.
"""

import argparse
import os
import shutil
import tempfile

import datasets
import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_compact  # noqa: F401  (registers the compact model types)
from hf_compact.hub import publishing_problem
from hf_compact.io import write_json_atomic
from hf_compact.devices import has_accelerator
from hf_compact.data import label_names, load_recipe_dataset, tokenize_dataset, tokenize_token_dataset
from hf_compact.metrics import compute_classification_metrics, predictions_from_logits
from hf_compact.model_card import add_card_arguments, card_inputs, hub_model_id
from hf_compact.output_dir import create_work_dir, finish_output_dir, plan_output_dir
from hf_compact.validation import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--train_file", help="CSV / JSON / JSON Lines / Parquet file of training examples.")
    data.add_argument("--validation_file")
    data.add_argument("--test_file")
    data.add_argument("--dataset_name", help="A Hub dataset name (instead of files).")
    data.add_argument("--dataset_config_name")
    data.add_argument("--builtin_dataset", choices=["rotten_tomatoes"],
                      help="A dataset that ships with hf_compact (Rotten Tomatoes review snippets).")
    data.add_argument("--text_column", default="text", help="Text column (a column of word lists for tokens).")
    data.add_argument("--text_pair_column")
    data.add_argument("--label_column", default="label")
    data.add_argument("--max_length", type=int, default=128)
    data.add_argument("--max_train_samples", type=int, help="Keep the first N training examples.")
    data.add_argument("--max_eval_samples", type=int, help="Keep the first N validation and test examples.")
    data.add_argument("--split_seed", type=int, default=42, help="Seed of the train/validation/test splits.")

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", required=True, help="Folder or Hub name of a BERT-family model.")
    model.add_argument("--task", choices=["sequence-classification", "token-classification"],
                       default="sequence-classification")
    model.add_argument("--teacher", help="A fine-tuned teacher: report agreement of predictions with it.")
    model.add_argument("--attn_implementation", choices=["sdpa", "eager"],
                       help="Attention kernel while training (default: the model's). With bf16 on a CPU, eager trains "
                            "faster at short lengths. The saved model loads with the default.")
    model.add_argument("--freeze_word_embeddings", action="store_true",
                       help="Keep the word embeddings as loaded (faster steps on a CPU, less overfitting).")
    model.add_argument("--lora_r", type=int, default=0, help="LoRA rank (0: train all weights).")
    model.add_argument("--lora_alpha", type=int, default=16)
    model.add_argument("--lora_dropout", type=float, default=0.1)
    model.add_argument("--lora_target_modules", help="Comma-separated module names (default: the model type's).")
    model.add_argument("--merge_lora", action="store_true", help="Merge adapters into the saved weights.")
    model.add_argument("--hub_base_model",
                       help="Hub id of --model_name_or_path when that is a local folder: the base model named in the "
                            "card and, for a LoRA adapter, in adapter_config.json. Needed to push an adapter.")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=float, default=3)
    training.add_argument("--max_steps", type=int, default=-1)
    training.add_argument("--batch_size", type=int, default=32)
    training.add_argument("--eval_batch_size", type=int, default=64)
    training.add_argument("--learning_rate", type=float, default=5e-5)
    training.add_argument("--weight_decay", type=float, default=0.01)
    training.add_argument("--warmup_ratio", type=float, default=0.06)
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    training.add_argument("--seed", type=int, default=42, help="Seed of initialisation and batch order.")
    training.add_argument("--cpu", action="store_true", help="Train on the CPU even where a GPU is present.")

    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", required=True)
    output.add_argument("--overwrite_output_dir", action="store_true")
    output.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in output_dir.")
    output.add_argument("--save_total_limit", type=int, default=2)
    output.add_argument("--report_to", default="tensorboard", help="Trainer integration(s), or 'none'.")
    output.add_argument("--no_model_card", action="store_true")
    output.add_argument("--push_to_hub", action="store_true")
    output.add_argument("--hub_model_id", help="owner/name of the Hub repository.")
    output.add_argument("--hub_private", action="store_true")
    add_card_arguments(parser)
    args = parser.parse_args(argv)

    sources = [bool(args.train_file), bool(args.dataset_name), bool(args.builtin_dataset)]
    if sum(sources) != 1:
        parser.error("Give exactly one of --train_file, --dataset_name, --builtin_dataset.")
    for name in ("batch_size", "epochs", "gradient_accumulation_steps", "max_length"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}.")
    if args.lora_r < 0:
        parser.error(f"--lora_r must be 0 (no LoRA) or positive, got {args.lora_r}.")
    if args.merge_lora and not args.lora_r:
        parser.error("--merge_lora needs --lora_r.")
    if args.hub_base_model and not hub_model_id(args.hub_base_model):
        parser.error(f"--hub_base_model must be a Hub model id such as owner/name, got {args.hub_base_model!r}.")
    if args.push_to_hub and args.lora_r and not args.merge_lora and not base_model_on_hub(args):
        parser.error(
            f"--push_to_hub would publish a LoRA adapter whose base model is the local folder "
            f"{args.model_name_or_path}, which nobody else can load. Push the base model to the Hub and pass its id "
            "with --hub_base_model owner/name, or merge the adapters into the weights with --merge_lora."
        )
    problem = publishing_problem(args.push_to_hub, args.hub_model_id)
    if problem:
        parser.error(problem)
    return args


def base_model_on_hub(args) -> str | None:
    """The Hub id of the model fine-tuned: --hub_base_model, or --model_name_or_path when that is not a local
    folder; None for a local folder without one."""
    return args.hub_base_model or hub_model_id(args.model_name_or_path)


def base_model_reference(args) -> str:
    """The base model a LoRA adapter names in adapter_config.json: its Hub id where known, else the absolute path
    of the local folder (a relative one breaks as soon as the adapter is loaded from another folder)."""
    return base_model_on_hub(args) or os.path.abspath(args.model_name_or_path)


def lora_mergeable(model) -> bool:
    """Whether merge_and_unload can fold every adapter into its layer: PEFT cannot merge into grouped
    convolutions (compact_squeezebert's projections with groups > 1)."""
    from peft.tuners.lora import LoraLayer

    return all(getattr(m.get_base_layer(), "groups", 1) == 1 for m in model.modules() if isinstance(m, LoraLayer))


def problem_type_of(args, data) -> str:
    """What the label column holds: class ids, per-word tags, multi-label indicators or regression values."""
    if args.task == "token-classification":
        return "token_classification"
    feature = data["train"].features[args.label_column]
    if label_names(data, args.label_column) is not None or getattr(feature, "dtype", "").startswith("int"):
        return "single_label_classification"
    if hasattr(feature, "feature") or isinstance(feature, list):
        return "multi_label_classification"
    return "regression"


def label_count(data, label_column, problem_type) -> int:
    names = label_names(data, label_column)
    if names is not None:
        return len(names)
    values = [v for split in data.values() for v in split[label_column]]
    if problem_type == "single_label_classification":
        return int(max(values)) + 1
    if problem_type == "multi_label_classification":
        return len(values[0])
    if problem_type == "token_classification":
        return int(max(max(tags) for tags in values)) + 1
    return 1


def check_labels(args, config, num_labels, names, problem_type):
    """A classifier fine-tuned before must see the labels it was trained on; a new head takes the data's."""
    trained_labels = {i: l for i, l in config.id2label.items() if not str(l).startswith("LABEL_")}
    if not trained_labels:
        return False
    if config.num_labels != num_labels:
        raise SystemExit(
            f"{args.model_name_or_path} predicts {config.num_labels} labels ({list(config.id2label.values())}) but "
            f"the data has {num_labels} ({names}); fine-tune from a model without a trained head, or fix "
            f"--label_column."
        )
    if names is not None and [config.id2label[i] for i in range(num_labels)] != list(names):
        raise SystemExit(
            f"{args.model_name_or_path} was trained on labels {[config.id2label[i] for i in range(num_labels)]}, "
            f"the data has {list(names)} in that id order; rename or reorder the labels."
        )
    return True


def load_model(args, num_labels, names, problem_type):
    config = load_config(args.model_name_or_path, "--model_name_or_path")
    trained_head = check_labels(args, config, num_labels, names, problem_type)
    # A head that was never trained for labels is replaced when the data has another number of them.
    kwargs = {"num_labels": num_labels, "ignore_mismatched_sizes": not trained_head}
    if names is not None:
        kwargs["id2label"] = dict(enumerate(names))
        kwargs["label2id"] = {name: i for i, name in enumerate(names)}
    if problem_type != "token_classification":
        kwargs["problem_type"] = problem_type
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    auto_class = AutoModelForTokenClassification if problem_type == "token_classification" else (
        AutoModelForSequenceClassification
    )
    model = auto_class.from_pretrained(args.model_name_or_path, use_safetensors=True, **kwargs)
    # How the base model must be loaded for an adapter's head: with the data's labels where the head is new.
    base_kwargs = {} if trained_head else {k: v for k, v in kwargs.items() if k != "attn_implementation"}
    if not args.lora_r:
        return model, base_kwargs
    from peft import LoraConfig, TaskType, get_peft_model

    # PEFT writes the model's name_or_path into adapter_config.json and its tags.
    model.name_or_path = model.config._name_or_path = base_model_reference(args)

    # Heads are trained in full beside the adapters (DistilBERT-style heads have a pre-classifier too).
    heads = [name for name in ("pre_classifier", "classifier") if hasattr(model, name)]
    lora = LoraConfig(
        task_type=TaskType.TOKEN_CLS if problem_type == "token_classification" else TaskType.SEQ_CLS,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules.split(",") if args.lora_target_modules else None,
        modules_to_save=heads,
    )
    model = get_peft_model(model, lora)
    model.print_trainable_parameters()
    return model, base_kwargs


def lora_record(model) -> dict:
    """The LoRA set-up as run, for results.json and the card: rank, alpha, dropout, the adapted modules and the
    modules trained in full (the heads)."""
    config = model.peft_config[model.active_adapter]
    return {
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": sorted(config.target_modules),
        "modules_to_save": [name for name in config.modules_to_save or [] if hasattr(model.get_base_model(), name)],
    }


def teacher_predictions(args, tokenized, collator, problem_type):
    """The teacher's predictions on the evaluation splits, for the agreement metric."""
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher, use_safetensors=True).eval()
    predictions = {}
    for split in ("validation", "test"):
        columns = [c for c in tokenized[split].column_names if c not in ("labels", "length")]
        loader = torch.utils.data.DataLoader(
            tokenized[split].remove_columns(["labels", "length"]), batch_size=args.eval_batch_size,
            collate_fn=collator,
        )
        logits = []
        with torch.inference_mode():
            for batch in loader:
                logits.append(teacher(**{k: batch[k] for k in columns if k in batch}).logits)
        predictions[split] = predictions_from_logits(torch.cat(logits).float().numpy(), problem_type)
    return predictions


def metrics_function(problem_type, num_labels, teacher_labels):
    def compute_metrics(evaluation):
        logits = evaluation.predictions[0] if isinstance(evaluation.predictions, tuple) else evaluation.predictions
        references = evaluation.label_ids
        if problem_type == "token_classification":
            predictions = np.argmax(logits, axis=-1)
            scored = references != -100
            return compute_classification_metrics(
                np.where(scored, predictions, -100), references, problem_type=problem_type, num_labels=num_labels
            )
        predictions = predictions_from_logits(logits, problem_type)
        teacher = teacher_labels
        if teacher is not None and len(teacher) != len(predictions):
            teacher = None
        return compute_classification_metrics(
            predictions, references, problem_type=problem_type, num_labels=num_labels, teacher_predictions=teacher
        )

    return compute_metrics


def save_final_model(trainer, model, tokenizer, args, output_dir):
    """Save the model (merged, full or adapter) and tokenizer into a staging folder, then move them into place."""
    staging = tempfile.mkdtemp(prefix=".staging-", dir=output_dir)
    saved = "model"
    if args.lora_r and args.merge_lora:
        try:
            model = model.merge_and_unload()
            saved = "merged model"
        except (NotImplementedError, ValueError, RuntimeError) as error:
            print(f"LoRA adapters cannot be merged here ({error}); saving them as an adapter instead.")
            saved = "adapter"
    elif args.lora_r:
        saved = "adapter"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for name in os.listdir(staging):
        target = os.path.join(output_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
    os.rmdir(staging)
    return saved


def main(argv=None):
    args = parse_args(argv)
    # Every check runs before anything is written: an existing folder is replaced only once the new model is saved.
    work_dir = plan_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=args.resume)
    if args.resume and not get_last_checkpoint(work_dir):
        raise SystemExit(f"--resume: no checkpoint-* folder in {args.output_dir} to continue from.")
    load_config(args.model_name_or_path, "--model_name_or_path")  # a mistyped folder, before the data is read
    set_seed(args.seed)

    data = load_recipe_dataset(
        builtin_dataset=args.builtin_dataset, dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name, train_file=args.train_file,
        validation_file=args.validation_file, test_file=args.test_file, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column, split_seed=args.split_seed,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
    )
    problem_type = problem_type_of(args, data)
    names = label_names(data, args.label_column)
    num_labels = label_count(data, args.label_column, problem_type)

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    if problem_type == "token_classification":
        tokenized = tokenize_token_dataset(
            data, tokenizer, words_column=args.text_column, tags_column=args.label_column, max_length=args.max_length
        )
        collator = DataCollatorForTokenClassification(tokenizer)
    else:
        tokenized = tokenize_dataset(
            data, tokenizer, text_column=args.text_column, text_pair_column=args.text_pair_column,
            label_column=args.label_column, max_length=args.max_length,
        )
        if problem_type == "multi_label_classification":  # BCE wants float targets
            tokenized = tokenized.cast_column("labels", datasets.Sequence(datasets.Value("float32")))
        collator = DataCollatorWithPadding(tokenizer)
    model, base_kwargs = load_model(args, num_labels, names, problem_type)
    if args.push_to_hub and args.merge_lora and not base_model_on_hub(args) and not lora_mergeable(model):
        raise SystemExit(
            "The LoRA adapters on grouped projections cannot be merged, so --merge_lora would save an adapter whose "
            f"base model is the local folder {args.model_name_or_path}, which nobody else can load. Push the base "
            "model to the Hub and pass its id with --hub_base_model owner/name."
        )
    if args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)

    teacher_labels = {}
    if args.teacher:
        if problem_type == "token_classification":
            raise SystemExit("--teacher agreement is reported for sequence classification only.")
        teacher_labels = teacher_predictions(args, tokenized, collator, problem_type)

    if int(os.environ.get("RANK", "0")) == 0:  # the first of the processes a launcher started, or the only one
        create_work_dir(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    training_args = TrainingArguments(
        output_dir=work_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the total steps
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        fp16=args.mixed_precision == "fp16",
        bf16=args.mixed_precision == "bf16",
        use_cpu=args.cpu or not has_accelerator(),
        seed=args.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="mse" if problem_type == "regression" else "accuracy",
        greater_is_better=problem_type != "regression",
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        logging_steps=50,
        report_to=[] if args.report_to == "none" else args.report_to.split(","),
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=metrics_function(problem_type, num_labels, teacher_labels.get("validation")),
    )
    trainer.train(resume_from_checkpoint=get_last_checkpoint(work_dir) if args.resume else None)

    trainer.compute_metrics = metrics_function(problem_type, num_labels, teacher_labels.get("test"))
    # Test metrics of the float32 model that is saved: drop the autocast that --mixed_precision wrapped around the
    # forward for training.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    test_metrics = trainer.evaluate(tokenized["test"], metric_key_prefix="test")
    test_metrics = {k[len("test_"):]: v for k, v in test_metrics.items()
                    if k.startswith("test_") and k[len("test_"):] not in ("loss", "runtime", "samples_per_second",
                                                                          "steps_per_second")}
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in test_metrics.items()))

    if trainer.is_world_process_zero():
        saved = save_final_model(trainer, trainer.model, tokenizer, args, work_dir)
        base = trainer.model.get_base_model() if args.lora_r else trainer.model
        weights = os.path.join(work_dir,
                               "adapter_model.safetensors" if saved == "adapter" else "model.safetensors")
        results = {
            "model_name": os.path.basename(os.path.abspath(args.output_dir)),
            "model_type": base.config.model_type,
            "task": "token-classification" if problem_type == "token_classification" else "text-classification",
            "model": {
                "name_or_path": args.model_name_or_path,
                "parameters": base.num_parameters(),
                "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                "file_size_bytes": os.path.getsize(weights) if os.path.exists(weights) else None,
                "saved_as": saved,
                "metrics": test_metrics,
                **({"base_model_kwargs": base_kwargs} if saved == "adapter" and base_kwargs else {}),
            },
            "training": {
                "method": "fine-tuning" + (f" with LoRA (r={args.lora_r})" if args.lora_r else ""),
                "problem_type": problem_type,
                "epochs": trainer.state.epoch,  # as run: fractional when --max_steps ends an epoch early
                "steps": trainer.state.global_step,
                "learning_rate": args.learning_rate,
                "batch_size": args.batch_size,
                "distributed": {
                    "num_processes": trainer.args.world_size,
                    "per_device_batch_size": args.batch_size,
                    "global_batch_size": args.batch_size * trainer.args.world_size * args.gradient_accumulation_steps,
                },
                "seed": args.seed,
                "history": [entry for entry in trainer.state.log_history if "eval_loss" in entry],
                **({"lora": lora_record(trainer.model)} if args.lora_r else {}),
            },
            "config": base.config.to_diff_dict(),
            **card_inputs(args, data, "test"),
        }
        if base_model_on_hub(args):
            results["base_model"] = base_model_on_hub(args)
        if args.teacher:
            results["teacher"] = {"name_or_path": args.teacher}
        write_json_atomic(os.path.join(work_dir, "results.json"), results)
        if not args.no_model_card:
            from hf_compact.model_card import write_model_card

            write_model_card(work_dir, results, repo_id=args.hub_model_id)
        finish_output_dir(work_dir, args.output_dir)  # the old folder, if any, gives way only now
        print(f"{saved} saved to {args.output_dir}")
        if args.push_to_hub:
            from hf_compact.hub import push_folder_to_hub

            url = push_folder_to_hub(args.output_dir, args.hub_model_id, private=args.hub_private,
                                     commit_message="Fine-tuned with hf_compact")
            print(f"pushed to {url}")
    return test_metrics


if __name__ == "__main__":
    main()
