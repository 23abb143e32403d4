"""Knowledge distillation from a BERT-family teacher into a compact student, with Accelerate.

Task distillation (a fine-tuned sequence classifier as the teacher):

    accelerate launch recipes/distill.py --teacher path/to/teacher --train_file train.csv \
        --student_type compact_distilbert --output_dir outputs/student

Token classification (a fine-tuned tagger as the teacher; a column of word lists and a column of tags per word):

    accelerate launch recipes/distill.py --task token-classification --teacher path/to/tagger \
        --train_file ner.json --text_column tokens --label_column tags --output_dir outputs/tagger-student

General distillation on raw text (a masked-LM teacher), as DistilBERT was trained:

    accelerate launch recipes/distill.py --task mlm --teacher bert-folder --train_file corpus.txt.csv \
        --label_column none --ce_weight 1 --cos_weight 1 --output_dir outputs/mlm-student

The same script runs as plain `python`, under `accelerate launch --cpu --num_processes 2` (gloo), on GPUs, with mixed
precision, gradient accumulation, DeepSpeed or FSDP: see the configuration files in recipes/accelerate_configs/.

The student starts from the teacher (`hf_compact.convert_to_compact`: embeddings plus the layers of the layer map)
unless `--init scratch`. With only soft-target and hard-label losses, the teacher's logits are computed once and
cached on disk (`--teacher_cache_dir`), so epochs run without a teacher forward pass; the hidden-state and attention
losses need the teacher at every step.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
)

import hf_compact
from hf_compact.hub import publishing_problem
from hf_compact.io import write_json_atomic
from hf_compact.benchmarking import hardware_name
from hf_compact.checkpointing import list_checkpoints, load_latest, save_checkpoint
from hf_compact.devices import has_accelerator
from hf_compact.data import (
    EpochLengthGroupedSampler,
    label_names,
    load_recipe_dataset,
    tokenize_dataset,
    tokenize_token_dataset,
)
from hf_compact.distillation import DistillationConfig, Distiller, is_finite
from hf_compact.layer_map import default_layer_map, parse_layer_map
from hf_compact.model_card import add_card_arguments, card_inputs, comparison_from_results, write_model_card
from hf_compact.output_dir import check_free_space, create_work_dir, finish_output_dir, plan_output_dir
from hf_compact.teacher_cache import teacher_logits_column, update_with_weights
from hf_compact.validation import load_config


# Each task: the teacher's Auto class, the head its architecture name ends with, and the Hub pipeline tag.
TASKS = {
    "sequence-classification": (AutoModelForSequenceClassification, "ForSequenceClassification", "text-classification"),
    "token-classification": (AutoModelForTokenClassification, "ForTokenClassification", "token-classification"),
    "mlm": (AutoModelForMaskedLM, "ForMaskedLM", "fill-mask"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--train_file", help="CSV / JSON / JSON Lines / Parquet file of training examples.")
    data.add_argument("--validation_file")
    data.add_argument("--test_file")
    data.add_argument("--dataset_name", help="A Hub dataset name (instead of files).")
    data.add_argument("--dataset_config_name")
    data.add_argument("--builtin_dataset", choices=["rotten_tomatoes"],
                      help="Data that ships with hf_compact: the Rotten Tomatoes review snippets.")
    data.add_argument("--text_column", default="text")
    data.add_argument("--text_pair_column")
    data.add_argument("--label_column", default="label", help="'none' for raw text (--task mlm).")
    data.add_argument("--max_length", type=int, default=128)
    data.add_argument("--max_train_samples", type=int, help="Keep the first N training examples.")
    data.add_argument("--max_eval_samples", type=int, help="Keep the first N validation and test examples.")
    data.add_argument("--split_seed", type=int, default=42, help="Seed of the train/validation/test splits.")
    data.add_argument("--seed", type=int, default=42, help="Seed of initialisation and batch order.")

    models = parser.add_argument_group("teacher and student")
    models.add_argument("--teacher", required=True, help="Folder or Hub name of a BERT-family teacher.")
    models.add_argument("--task", choices=list(TASKS), default="sequence-classification",
                        help="token-classification: --text_column holds each example's words, --label_column one tag "
                             "per word.")
    models.add_argument("--student_type", choices=list(hf_compact.conversion.TARGET_MODEL_TYPES),
                        default="compact_distilbert")
    models.add_argument("--student_config", help="JSON file of student config fields (overrides the flags below).")
    models.add_argument("--student_layers", type=int, help="Student depth (default: half the teacher's).")
    models.add_argument("--student_groups", type=int,
                        help="compact_squeezebert: groups of the q/k/v, intermediate and output projections.")
    models.add_argument("--layer_map", help="Teacher layer per student layer, e.g. '1,3,5' (default: automatic).")
    models.add_argument("--layer_strategy", choices=["uniform", "alternate"], default="uniform")
    models.add_argument("--init", choices=["teacher", "scratch"], default="teacher")
    models.add_argument("--grouped_init", choices=["fit", "block-diagonal"], default="fit",
                        help="compact_squeezebert from the teacher: start each grouped projection from the least-squares "
                             "fit of the dense one on the teacher's activations (hf_compact.fit_grouped_projections), "
                             "or from its block-diagonal part.")
    models.add_argument("--grouped_init_samples", type=int, default=512,
                        help="Training examples whose activations the grouped fit uses.")
    models.add_argument("--student_dropout", type=float,
                        help="Dropout of the student's hidden states and attention while it trains (default: the "
                             "teacher's). 0 makes steps cheaper on a CPU, where drawing dropout masks is slow.")
    models.add_argument("--attn_implementation", choices=["sdpa", "eager"],
                        help="Attention kernel of the student while it trains (default: sdpa; eager when attention is "
                             "distilled). With bf16 on a CPU, eager trains faster. The saved model loads with sdpa.")
    models.add_argument("--freeze_word_embeddings", action="store_true",
                        help="Keep the student's word embeddings as initialised (faster steps on a CPU: the "
                             "embedding matrix is most of a small student's weights).")

    objective = parser.add_argument_group("objective")
    objective.add_argument("--temperature", type=float, default=2.0)
    objective.add_argument("--kd_weight", type=float, default=1.0)
    objective.add_argument("--ce_weight", type=float, default=0.0)
    objective.add_argument("--cos_weight", type=float, default=0.0)
    objective.add_argument("--mse_weight", type=float, default=0.0)
    objective.add_argument("--attention_weight", type=float, default=0.0)
    objective.add_argument("--teacher_cache_dir", help="Where cached teacher logits live (default: output_dir/..).")
    objective.add_argument("--no_teacher_cache", action="store_true", help="Run the teacher at every step.")
    objective.add_argument("--teacher_cache_top_k", type=int, help="Cache only the k largest teacher logits.")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=3)
    training.add_argument("--max_steps", type=int, help="Stop after this many optimizer steps.")
    training.add_argument("--batch_size", type=int, default=32)
    training.add_argument("--eval_batch_size", type=int, default=64)
    training.add_argument("--learning_rate", type=float, default=5e-5)
    training.add_argument("--weight_decay", type=float, default=0.01)
    training.add_argument("--warmup_ratio", type=float, default=0.06)
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    training.add_argument("--cpu", action="store_true", help="Train on the CPU even where a GPU is present.")

    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", required=True)
    output.add_argument("--overwrite_output_dir", action="store_true")
    output.add_argument("--checkpointing_steps", type=int, default=0, help="Save the training state every N steps.")
    output.add_argument("--keep_checkpoints", type=int, default=2)
    output.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in output_dir.")
    output.add_argument("--report_to", default="tensorboard", help="Accelerate tracker(s), or 'none'.")
    output.add_argument("--eval_last_epoch_only", action="store_true",
                        help="Evaluate on the validation split after the last epoch only (not after each one).")
    output.add_argument("--latency_batches", type=int, default=8, help="Batches timed for the latency ratio.")
    output.add_argument("--no_model_card", action="store_true", help="Do not write README.md (the model card).")
    output.add_argument("--push_to_hub", action="store_true")
    output.add_argument("--hub_model_id", help="owner/name of the Hub repository.")
    output.add_argument("--hub_private", action="store_true")
    output.add_argument("--stop_after_steps", type=int, help=argparse.SUPPRESS)  # simulates a crash, for tests
    add_card_arguments(parser)
    args = parser.parse_args(argv)

    if args.label_column.lower() == "none":
        args.label_column = None
    if args.task == "mlm" and args.label_column is not None:
        args.label_column = None
    if args.task != "mlm" and args.label_column is None:
        parser.error(f"--task {args.task} needs --label_column.")
    sources = [bool(args.train_file), bool(args.dataset_name), bool(args.builtin_dataset)]
    if sum(sources) != 1:
        parser.error("Give exactly one of --train_file, --dataset_name, --builtin_dataset.")
    problem = publishing_problem(args.push_to_hub, args.hub_model_id)
    if problem:
        parser.error(problem)
    if args.student_dropout is not None and not 0 <= args.student_dropout < 1:
        parser.error(f"--student_dropout must be in [0, 1), got {args.student_dropout}.")
    for name in ("batch_size", "epochs", "gradient_accumulation_steps", "max_length", "keep_checkpoints",
                 "student_layers", "max_steps"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}.")
    if args.checkpointing_steps < 0:
        parser.error(f"--checkpointing_steps must be 0 (no checkpoints) or positive, got {args.checkpointing_steps}.")
    return args


def load_data(args):
    try:
        return load_recipe_dataset(
            builtin_dataset=args.builtin_dataset, dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_file=args.train_file, validation_file=args.validation_file, test_file=args.test_file,
            text_column=args.text_column, text_pair_column=args.text_pair_column, label_column=args.label_column,
            split_seed=args.split_seed, max_train_samples=args.max_train_samples,
            max_eval_samples=args.max_eval_samples,
        )
    except ValueError as error:  # a column, label or split problem: the message says which
        raise SystemExit(str(error)) from None


def load_teacher(args):
    auto_class, wanted, _ = TASKS[args.task]
    config = load_config(args.teacher, "--teacher")
    if config.model_type not in hf_compact.conversion.SOURCE_MODEL_TYPES:
        raise SystemExit(
            f"The teacher is a {config.model_type!r} model; hf_compact distils BERT-family teachers of types "
            f"{hf_compact.conversion.SOURCE_MODEL_TYPES}."
        )
    architectures = config.architectures or []
    if architectures and not any(a.endswith(wanted) or a.endswith("ForPreTraining") for a in architectures):
        raise SystemExit(
            f"The teacher's head is {architectures[0]}, which does not fit --task {args.task} (needs *{wanted}). "
            + ("Give a teacher saved with a trained masked-LM head (its checkpoint holds the MLM weights)."
               if args.task == "mlm"
               else "Fine-tune a classifier first (recipes/finetune.py) or pick the matching --task.")
        )
    return auto_class.from_pretrained(args.teacher, use_safetensors=True)


def build_student(args, teacher):
    overrides = {}
    if args.student_config:
        with open(args.student_config) as handle:
            overrides = json.load(handle)
        overrides.pop("model_type", None)
    if args.student_dropout is not None:
        names = (("dropout", "attention_dropout") if args.student_type == "compact_distilbert"
                 else ("hidden_dropout_prob", "attention_probs_dropout_prob"))
        for name in names:
            overrides[name] = args.student_dropout
    if args.student_groups and args.student_type == "compact_squeezebert":
        for name in ("q_groups", "k_groups", "v_groups", "intermediate_groups", "output_groups"):
            overrides.setdefault(name, args.student_groups)
    num_teacher_layers = teacher.config.num_hidden_layers
    num_layers = args.student_layers or overrides.pop("num_hidden_layers", overrides.pop("n_layers", None))
    num_layers = num_layers or max(1, num_teacher_layers // 2)
    if args.layer_map:
        layers = parse_layer_map(args.layer_map, num_teacher_layers, num_layers)
    else:
        layers = default_layer_map(num_teacher_layers, num_layers, args.layer_strategy)
    attn = "eager" if args.attention_weight > 0 else args.attn_implementation
    if args.init == "teacher":
        student = hf_compact.convert_to_compact(teacher, args.student_type, layers=layers, **overrides)
        if attn:
            student.set_attn_implementation(attn)
    else:
        student_config = AutoConfig.for_model(args.student_type, **overrides)
        depth_field = "n_layers" if args.student_type == "compact_distilbert" else "num_hidden_layers"
        setattr(student_config, depth_field, num_layers)
        for name in ("vocab_size", "id2label", "label2id", "pad_token_id"):
            setattr(student_config, name, getattr(teacher.config, name))
        student_config.teacher_layer_map = layers
        student = TASKS[args.task][0].from_config(student_config, attn_implementation=attn)
    return student, layers


class TokenLogitsCollator:
    """Pads a batch for token classification, cached per-token teacher logits included (zeros past each example's
    end, where the attention mask leaves them out of the loss)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        features = [dict(f) for f in features]
        logits = [torch.tensor(f.pop("teacher_logits")) for f in features] if "teacher_logits" in features[0] else None
        batch = self.collator(features)
        if logits is not None:
            padded = logits[0].new_zeros(len(logits), batch["input_ids"].shape[1], logits[0].shape[-1])
            for row, example in zip(padded, logits):
                row[: len(example)] = example
            batch["teacher_logits"] = padded
        return batch


@contextlib.contextmanager
def float32_forward(accelerator, model):
    """The unwrapped `model`, running its own forward: under --mixed_precision, Accelerate wraps the forward in
    autocast for training, but reported metrics and cached teacher logits are those of the float32 weights that are
    saved and that users load."""
    module = accelerator.unwrap_model(model)
    wrapped, original = module.__dict__.get("forward"), module.__dict__.get("_original_forward")
    if wrapped is not None and original is not None:
        module.forward = original
    try:
        yield module
    finally:
        if wrapped is not None and original is not None:
            module.forward = wrapped


def scored(predictions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and labels where a label is given (flattened): every example of a sequence task, the labelled
    tokens (first sub-token of each word) of a token task; -100 marks the others."""
    keep = labels != -100
    return predictions[keep], labels[keep]


def has_grouped_projections(config) -> bool:
    return config.model_type == "compact_squeezebert" and any(
        getattr(config, f, 1) > 1 for f in hf_compact.conversion.SQUEEZEBERT_GROUP_FIELDS
    )


def fit_grouped_student(args, teacher, student, layer_map, train_set, collator):
    """Refit a grouped student's projections to the dense ones they replace, on the first training examples."""
    if not has_grouped_projections(student.config):
        return
    dense_config = {f: getattr(student.config, f) for f in ("hidden_act", "layer_norm_eps")}
    dense_config.update({f: 1 for f in hf_compact.conversion.SQUEEZEBERT_GROUP_FIELDS})
    dense = hf_compact.convert_to_compact(teacher, "compact_squeezebert", layers=layer_map, **dense_config)
    examples = train_set.select(range(min(args.grouped_init_samples, len(train_set))))
    examples = examples.remove_columns([c for c in examples.column_names if c not in ("input_ids", "attention_mask",
                                                                                        "token_type_ids")])
    loader = DataLoader(examples, batch_size=args.eval_batch_size, collate_fn=collator)
    hf_compact.fit_grouped_projections(student, dense, loader)


def init_description(args, student, num_train_examples: int) -> str:
    if args.init == "scratch":
        return "scratch"
    if has_grouped_projections(student.config):
        if args.grouped_init == "fit":
            return (f"teacher layers; grouped projections fitted to the dense ones on "
                    f"{min(args.grouped_init_samples, num_train_examples)} training examples")
        return "teacher layers; grouped projections from their block-diagonal part"
    return "teacher layers"


def preflight(args, teacher, student, tokenizer, data):
    """Checks that would otherwise fail hours later, each with the change that fixes it."""
    if student.config.vocab_size != teacher.config.vocab_size:
        raise SystemExit(
            f"Student vocab_size={student.config.vocab_size} differs from the teacher's "
            f"{teacher.config.vocab_size}: both must read the teacher's tokenizer. Remove vocab_size from the "
            "student config."
        )
    # Embedding tables may be padded past the vocabulary by a few rows, never by a tenth of it.
    if not 0.9 * teacher.config.vocab_size <= len(tokenizer) <= teacher.config.vocab_size:
        raise SystemExit(
            f"The tokenizer has {len(tokenizer)} tokens but the teacher's embeddings "
            f"{teacher.config.vocab_size}: this tokenizer does not belong to this teacher. Save the tokenizer the "
            "teacher was trained with into its folder."
        )
    positions = min(teacher.config.max_position_embeddings, student.config.max_position_embeddings)
    if args.max_length > positions:
        raise SystemExit(
            f"--max_length {args.max_length} is longer than the position table of the teacher or student "
            f"({positions} positions): use --max_length {positions} or less."
        )
    if args.task != "mlm":
        names = label_names(data, args.label_column)
        values = data["train"][args.label_column]
        if args.task == "token-classification":
            values = [tag for tags in values for tag in tags]
        num_data_labels = len(names) if names else len(set(values))
        if teacher.config.num_labels != num_data_labels:
            raise SystemExit(
                f"The teacher's head has {teacher.config.num_labels} labels but the data has {num_data_labels}: "
                "the teacher must be fine-tuned on this task (recipes/finetune.py)."
            )
        teacher_names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        generic = all(name == f"LABEL_{i}" for i, name in enumerate(teacher_names))
        if names and not generic and [n.lower() for n in names] != [n.lower() for n in teacher_names]:
            raise SystemExit(
                f"The data's labels {names} do not match the teacher's id2label {teacher_names} (by id). Map the "
                "data's labels to the teacher's ids, or fine-tune the teacher on this label set."
            )


@torch.inference_mode()
def evaluate(model, dataloader, accelerator, teacher_predictions=None):
    """Accuracy on the dataloader's labels and, if teacher predictions are given, agreement with them."""
    model.eval()
    predictions, references = [], []
    for batch in dataloader:
        labels = batch.pop("labels")
        batch.pop("teacher_logits", None)
        with float32_forward(accelerator, model) as module:
            batch_predictions = module(**batch).logits.argmax(-1)
        if labels.dim() == 2:  # token classification: processes' batches may differ in length
            batch_predictions = accelerator.pad_across_processes(batch_predictions, dim=1, pad_index=-100)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
        gathered_predictions, gathered_labels = accelerator.gather_for_metrics((batch_predictions, labels))
        gathered_predictions, gathered_labels = scored(gathered_predictions.cpu(), gathered_labels.cpu())
        predictions.append(gathered_predictions)
        references.append(gathered_labels)
    predictions, references = torch.cat(predictions), torch.cat(references)
    metrics = {"accuracy": (predictions == references).float().mean().item()}
    if teacher_predictions is not None:
        metrics["agreement"] = (predictions == teacher_predictions).float().mean().item()
    return metrics, predictions


@torch.inference_mode()
def evaluate_mlm(model, dataloader, accelerator):
    model.eval()
    losses = []
    for batch in dataloader:
        loss = model(**batch).loss
        losses.append(accelerator.gather_for_metrics(loss.detach().reshape(1)).mean().item())
    loss = statistics.fmean(losses)
    return {"mlm_loss": loss, "perplexity": math.exp(min(loss, 50))}


@torch.inference_mode()
def measure_latency(teacher, student, dataloader, num_batches):
    """Median forward time (ms per batch) of teacher and student on the same batches, interleaved in one process."""
    teacher.eval()
    student.eval()
    batches = []
    for batch in dataloader:
        batches.append({k: v for k, v in batch.items() if k not in ("labels", "teacher_logits")})
        if len(batches) == num_batches:
            break
    for model in (teacher, student):  # warm-up
        model(**batches[0])
    times = {"teacher": [], "student": []}
    for batch in batches:
        for name, model in (("teacher", teacher), ("student", student)):
            start = time.perf_counter()
            model(**batch)
            times[name].append((time.perf_counter() - start) * 1000)
    teacher_ms, student_ms = statistics.median(times["teacher"]), statistics.median(times["student"])
    return {
        "teacher_ms": teacher_ms,
        "student_ms": student_ms,
        "speedup": teacher_ms / student_ms,
        "batch_size": batches[0]["input_ids"].shape[0],
        "sequence_length": "real",
        "threads": torch.get_num_threads(),
        "hardware": hardware_name(),
        "batches": len(batches),
    }


def output_bytes(args, student) -> int:
    """Disk space the run's outputs need: the saved student, plus the kept checkpoints (weights and AdamW state)."""
    weights = sum(p.numel() * p.element_size() for p in student.parameters())
    return weights * (1 + (3 * args.keep_checkpoints if args.checkpointing_steps else 0))


def weight_checksum(model) -> str:
    digest = hashlib.sha256()
    update_with_weights(digest, model)
    return digest.hexdigest()[:16]


def distributed_summary(args, accelerator, student) -> dict:
    """How the run was spread: processes, batch sizes, threads, and a checksum of each process's weights (all equal
    when data-parallel processes stayed in step; sharded set-ups hold different parts and record none)."""
    replicated = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                                   DistributedType.MULTI_GPU)
    checksums = gather_object([weight_checksum(accelerator.unwrap_model(student))]) if replicated else None
    return {
        "num_processes": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "per_device_batch_size": args.batch_size,
        "global_batch_size": args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "threads_per_process": torch.get_num_threads(),
        "rank_weight_checksums": checksums,
    }


def save_model_atomic(accelerator, model, tokenizer, output_dir):
    """save_pretrained into a staging folder, then move each file into output_dir."""
    staging = os.path.join(output_dir, ".staging-model")
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    unwrapped.save_pretrained(staging, is_main_process=accelerator.is_main_process, save_function=accelerator.save,
                              state_dict=accelerator.get_state_dict(model))
    if accelerator.is_main_process:
        tokenizer.save_pretrained(staging)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        os.rmdir(staging)
    accelerator.wait_for_everyone()


def training_function(args):
    # Every check runs before anything is written: an existing folder is replaced only once the new model is saved.
    work_dir = plan_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, resume=args.resume)
    trackers = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(
        cpu=args.cpu or not has_accelerator(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=work_dir, logging_dir=os.path.join(work_dir, "runs")),
    )
    accelerator.print(f"{accelerator.num_processes} process(es), {accelerator.distributed_type.value}, "
                      f"{torch.get_num_threads()} thread(s) each")
    set_seed(args.seed)

    teacher = load_teacher(args)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    student, layer_map = build_student(args, teacher)
    objective = DistillationConfig(
        temperature=args.temperature,
        kd_weight=args.kd_weight,
        ce_weight=args.ce_weight,
        cos_weight=args.cos_weight,
        mse_weight=args.mse_weight,
        attention_weight=args.attention_weight,
    )
    if objective.needs_attentions:
        teacher.set_attn_implementation("eager")
    distiller = Distiller(
        objective,
        layer_map,
        student.config.hidden_size,
        teacher.config.hidden_size,
        student.config.num_attention_heads,
        teacher.config.num_attention_heads,
    )

    with accelerator.main_process_first():
        data = load_data(args)
        preflight(args, teacher, student, tokenizer, data)
        if args.task == "token-classification":
            tokenized = tokenize_token_dataset(data, tokenizer, words_column=args.text_column,
                                               tags_column=args.label_column, max_length=args.max_length)
        else:
            tokenized = tokenize_dataset(
                data, tokenizer, text_column=args.text_column, text_pair_column=args.text_pair_column,
                label_column=args.label_column, max_length=args.max_length,
            )
    check_free_space(work_dir, output_bytes(args, student))
    if accelerator.is_main_process:
        create_work_dir(work_dir)
    accelerator.wait_for_everyone()

    if args.task == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    elif args.task == "token-classification":
        collator = TokenLogitsCollator(DataCollatorForTokenClassification(tokenizer))
    else:
        collator = DataCollatorWithPadding(tokenizer)
    use_cache = args.task != "mlm" and not objective.needs_teacher_forward and not args.no_teacher_cache
    train_set = tokenized["train"]
    if use_cache:
        cache_dir = args.teacher_cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.output_dir)),
                                                           ".teacher_cache")
        cache_start = time.perf_counter()
        # The soft targets in the training precision, as the teacher would give them inside the training loop (under
        # bf16, 1.65x as fast to compute on a CPU with native bf16: benchmarks/teacher_logits_precision.py);
        # evaluation sets keep float32 below.
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
        with accelerator.main_process_first():
            column = teacher_logits_column(
                teacher.to(accelerator.device), train_set, cache_dir, collator, top_k=args.teacher_cache_top_k,
                batch_size=args.eval_batch_size, show_progress=accelerator.is_local_main_process,
                autocast_dtype=autocast_dtype,
            )
        train_set = train_set.add_column("teacher_logits", [row.tolist() for row in column])
        cache_seconds = time.perf_counter() - cache_start  # a forward pass over the data, or a read from disk
    train_set = train_set.remove_columns(["length"]) if "length" in train_set.column_names else train_set
    if args.init == "teacher" and args.grouped_init == "fit" and not args.resume:
        fit_grouped_student(args, teacher, student, layer_map, train_set, collator)
    lengths = tokenized["train"]["length"]
    # Grouped by the global batch, so that N processes see in each step the examples one process would.
    sampler = EpochLengthGroupedSampler(lengths, args.batch_size * accelerator.num_processes, seed=args.seed)
    # Its own generator: creating an iterator then draws nothing from the global RNG, so a resumed run's dropout
    # masks follow the uninterrupted run's exactly.
    train_dataloader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, collate_fn=collator,
                                  generator=torch.Generator().manual_seed(args.seed))
    # Evaluation order does not matter (predictions, labels and cached teacher logits follow the same one): sorted by
    # length, each batch pads to similar lengths.
    eval_sets = {s: tokenized[s].sort("length").remove_columns(["length"]) for s in ("validation", "test")}
    eval_dataloaders = {
        s: DataLoader(d, batch_size=args.eval_batch_size, shuffle=False, collate_fn=collator)
        for s, d in eval_sets.items()
    }

    if args.freeze_word_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    parameters = [p for p in student.parameters() if p.requires_grad] + list(distiller.parameters())
    # The fused kernel updates every parameter in one pass (on a CPU, 4-7 ms less per step for the demo's students:
    # benchmarks/training_step.py); Trainer uses it by default too. Other devices keep the per-parameter loop.
    fused = accelerator.device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay, fused=fused or None)
    batches_per_epoch = len(train_dataloader)
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps / accelerator.num_processes)
    total_updates = args.max_steps or args.epochs * updates_per_epoch
    # Once prepared, the scheduler advances once per process at every optimizer step.
    scheduler_steps = total_updates * accelerator.num_processes
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * scheduler_steps), scheduler_steps)

    student, optimizer, train_dataloader, scheduler = accelerator.prepare(
        student, optimizer, train_dataloader, scheduler
    )
    if any(p.requires_grad for p in distiller.parameters()):  # the learned projection of the MSE loss
        distiller = accelerator.prepare_model(distiller)
    else:
        distiller = distiller.to(accelerator.device)
    eval_dataloaders = {s: accelerator.prepare(d) for s, d in eval_dataloaders.items()}
    # Not prepared: the frozen teacher needs no gradient sync and stays out of the checkpoints.
    teacher = teacher.to(accelerator.device).eval()

    teacher_metrics, teacher_predictions = {}, {}
    if args.task != "mlm":
        for split, loader in eval_dataloaders.items():
            if use_cache:  # later runs on the same data read the teacher's evaluation from the cache too
                with accelerator.main_process_first(), float32_forward(accelerator, teacher) as module:
                    logits = teacher_logits_column(
                        module, eval_sets[split], cache_dir, collator, batch_size=args.eval_batch_size,
                        show_progress=False,
                    )
                predictions, labels = [], []
                for row, label in zip(logits, eval_sets[split]["labels"]):  # per example: a label or per-token tags
                    prediction, label = scored(torch.as_tensor(row.argmax(-1)).reshape(-1),
                                               torch.as_tensor(label).reshape(-1))
                    predictions.append(prediction)
                    labels.append(label)
                predictions, labels = torch.cat(predictions), torch.cat(labels)
                teacher_predictions[split] = predictions
                teacher_metrics[split] = {"accuracy": (predictions == labels).float().mean().item()}
            else:
                teacher_metrics[split], teacher_predictions[split] = evaluate(teacher, loader, accelerator)
        chance = 1 / teacher.config.num_labels
        accuracy = teacher_metrics["validation"]["accuracy"]
        accelerator.print(f"teacher validation accuracy: {accuracy:.4f}")
        if accuracy < chance / 2:
            raise SystemExit(
                f"The teacher is right on {100 * accuracy:.1f}% of the validation examples, far below chance "
                f"({100 * chance:.1f}%): the data's label ids do not follow the teacher's id2label "
                f"{[teacher.config.id2label[i] for i in range(teacher.config.num_labels)]}. Map the labels to those "
                "ids (or use the label names) and run again."
            )
        if accuracy < chance + 0.05:
            accelerator.print(
                "\n" + "!" * 88 + f"\nWARNING: the teacher is near chance on the validation split ({accuracy:.3f} vs "
                f"chance {chance:.3f}).\nA student cannot learn more than its teacher knows: fine-tune the teacher "
                "first (recipes/finetune.py).\n" + "!" * 88 + "\n"
            )
    else:
        teacher_metrics["validation"] = evaluate_mlm(teacher, eval_dataloaders["validation"], accelerator)

    run_config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    if trackers:
        accelerator.init_trackers("distill", config=run_config)

    completed_batches = 0
    checkpoint_root = os.path.join(work_dir, "checkpoints")
    if args.resume:
        latest, completed_batches = load_latest(accelerator, checkpoint_root)
        accelerator.print(f"resumed from {latest} ({completed_batches} batches done)")

    local_batches = len(train_dataloader)
    total_batches = min(args.epochs * local_batches, (args.max_steps or 10**12) * args.gradient_accumulation_steps)
    progress = tqdm(total=total_batches, initial=completed_batches,
                    desc="distilling" if objective.uses_teacher else "training on labels alone",
                    disable=not accelerator.is_local_main_process)
    start_epoch = completed_batches // local_batches
    history = []
    for epoch in range(start_epoch, args.epochs):
        student.train()
        train_dataloader.set_epoch(epoch)  # accelerate passes it on to the sampler at every new iteration
        # Batches done before a resume are drawn and dropped from the same loader, so the order, and every random
        # draw after it, are exactly those of an uninterrupted run.
        skip = completed_batches - epoch * local_batches
        epoch_start, epoch_examples = time.perf_counter(), 0
        for index, batch in enumerate(train_dataloader):
            if index < skip:
                continue
            if completed_batches >= total_batches:
                break
            with accelerator.accumulate(student):
                cached_logits = batch.pop("teacher_logits", None)
                teacher_outputs = None
                if cached_logits is None:
                    with torch.no_grad(), accelerator.autocast():
                        teacher_inputs = {k: v for k, v in batch.items() if k != "labels"}
                        teacher_outputs = teacher(
                            **teacher_inputs,
                            output_hidden_states=objective.needs_hidden_states or objective.needs_attentions,
                            output_attentions=objective.needs_attentions,
                        )
                student_inputs = batch if objective.ce_weight > 0 else {k: v for k, v in batch.items() if k != "labels"}
                student_outputs = student(
                    **student_inputs,
                    output_hidden_states=objective.needs_hidden_states or objective.needs_attentions,
                    output_attentions=objective.needs_attentions,
                )
                mask = batch["attention_mask"] if student_outputs.logits.dim() == 3 else None
                loss, parts = distiller(student_outputs, cached_logits, teacher_outputs, mask)
                if not is_finite(loss):
                    kept = list_checkpoints(checkpoint_root)
                    raise SystemExit(
                        f"The loss became {float(loss)} at batch {completed_batches} (parts: {parts}). Training "
                        f"stopped; the last good checkpoint is kept in {kept[-1] if kept else 'none (none saved)'}. "
                        "Lower --learning_rate or --temperature, or use --mixed_precision no."
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            completed_batches += 1
            epoch_examples += batch["input_ids"].shape[0]
            progress.update(1)
            loss_value = loss.detach().item()
            progress.set_postfix(loss=f"{loss_value:.4f}")
            if trackers and accelerator.sync_gradients:
                accelerator.log({"train/loss": loss_value, **{f"train/{k}": v for k, v in parts.items()},
                                 "train/lr": scheduler.get_last_lr()[0]}, step=completed_batches)
            if args.checkpointing_steps and completed_batches % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, checkpoint_root, completed_batches, args.keep_checkpoints)
            if args.stop_after_steps and completed_batches >= args.stop_after_steps:
                accelerator.print(f"stopping abruptly after {completed_batches} batches (--stop_after_steps)")
                sys.stdout.flush()
                os._exit(3)
        train_seconds = time.perf_counter() - epoch_start
        last_epoch = epoch + 1 == args.epochs or completed_batches >= total_batches
        if args.eval_last_epoch_only and not last_epoch:
            metrics = {}
        elif args.task != "mlm":
            metrics, _ = evaluate(student, eval_dataloaders["validation"], accelerator, teacher_predictions["validation"])
        else:
            metrics = evaluate_mlm(student, eval_dataloaders["validation"], accelerator)
        history.append({"epoch": epoch + 1, **metrics, "train_seconds": train_seconds,
                        "train_samples_per_s": epoch_examples * accelerator.num_processes / train_seconds})
        if metrics:
            accelerator.print(
                f"epoch {epoch + 1}: student " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                + " | teacher " + ", ".join(f"{k} {v:.4f}" for k, v in teacher_metrics["validation"].items())
            )
        if trackers and metrics:
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=completed_batches)
        if completed_batches >= total_batches:
            break
    progress.close()

    results = {
        "model_name": os.path.basename(os.path.abspath(args.output_dir)),
        "model_type": args.student_type,
        "task": TASKS[args.task][2],
        "teacher": {
            "name_or_path": args.teacher,
            "model_type": teacher.config.model_type,
            "parameters": accelerator.unwrap_model(teacher).num_parameters(),
        },
        "student": {"parameters": accelerator.unwrap_model(student).num_parameters()},
        "training": {
            "method": "distillation" if objective.uses_teacher else "fine-tuning on labels alone",
            # As run (--max_steps may end an epoch early): epochs completed, and optimizer steps, one per
            # --gradient_accumulation_steps batches and one at the end of each epoch.
            "epochs": completed_batches / local_batches,
            "steps": (completed_batches // local_batches) * math.ceil(local_batches / args.gradient_accumulation_steps)
            + completed_batches % local_batches // args.gradient_accumulation_steps,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "temperature": args.temperature,
            "loss_weights": objective.weights(),
            "layer_map": layer_map,
            "init": init_description(args, accelerator.unwrap_model(student), len(train_set)),
            "frozen": ["word embeddings"] if args.freeze_word_embeddings else [],
            "mixed_precision": accelerator.mixed_precision,
            "dropout": args.student_dropout,
            "teacher_cache": use_cache,
            "teacher_cache_seconds": cache_seconds if use_cache else None,
            "history": history,
            "train_seconds": sum(epoch["train_seconds"] for epoch in history),
            "distributed": distributed_summary(args, accelerator, student),
        },
        **card_inputs(args, data, "test" if args.task != "mlm" else "validation"),
    }
    if args.task != "mlm":
        student_test, _ = evaluate(student, eval_dataloaders["test"], accelerator, teacher_predictions["test"])
        results["teacher"]["metrics"] = teacher_metrics["test"]
        results["student"]["metrics"] = student_test
        teacher_accuracy = max(teacher_metrics["test"]["accuracy"], 1e-12)
        results["retention"] = {"accuracy": student_test["accuracy"] / teacher_accuracy}
        accelerator.print(
            f"test: teacher accuracy {teacher_metrics['test']['accuracy']:.4f}, student accuracy "
            f"{student_test['accuracy']:.4f} (retention {100 * results['retention']['accuracy']:.1f}%, agreement "
            f"{student_test['agreement']:.4f})"
        )
    else:
        results["teacher"]["metrics"] = teacher_metrics["validation"]
        results["student"]["metrics"] = evaluate_mlm(student, eval_dataloaders["validation"], accelerator)
    if accelerator.is_main_process and args.latency_batches > 0:
        with float32_forward(accelerator, teacher) as teacher_module, float32_forward(accelerator, student) as module:
            results["speed"] = measure_latency(teacher_module, module, eval_dataloaders["test"], args.latency_batches)
        accelerator.print(
            f"latency per batch: teacher {results['speed']['teacher_ms']:.1f} ms, student "
            f"{results['speed']['student_ms']:.1f} ms ({results['speed']['speedup']:.2f}x)"
        )

    save_model_atomic(accelerator, student, tokenizer, work_dir)
    if accelerator.is_main_process:
        weights = os.path.join(work_dir, "model.safetensors")
        results["student"]["file_size_bytes"] = os.path.getsize(weights) if os.path.exists(weights) else None
        write_json_atomic(os.path.join(work_dir, "results.json"), results)
        if not args.no_model_card:
            write_model_card(work_dir, results, comparison=comparison_from_results(results),
                             repo_id=args.hub_model_id)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish_output_dir(work_dir, args.output_dir)  # the old folder, if any, gives way only now
        accelerator.print(f"student saved to {args.output_dir}")
    if args.push_to_hub and accelerator.is_main_process:
        from hf_compact.hub import push_folder_to_hub

        url = push_folder_to_hub(args.output_dir, args.hub_model_id, private=args.hub_private,
                                 commit_message="Distilled with hf_compact")
        accelerator.print(f"pushed to {url}")
    if trackers:
        accelerator.end_training()  # last: it also ends the process group
    return results


def main(argv=None):
    args = parse_args(argv)
    return training_function(args)


if __name__ == "__main__":
    main()
