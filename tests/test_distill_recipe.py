"""recipes/distill.py end to end on a tiny trained teacher: learning, two processes, kill and resume, bad input."""

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

import hf_compact  # noqa: F401  (registers the compact types for the reload checks)


RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "distill.py")
FAST = ["--report_to", "none", "--latency_batches", "2", "--per_device_train_batch_size", "32", "--max_length", "32"]


def run(args, expect_ok=True, launcher=None):
    """Run the recipe: `distill.main(args)` in this process (see `run_in_process`), or under `launcher` (e.g.
    `accelerate launch`) in processes of their own. A run expected to succeed must exit with status 0."""
    if launcher is None:
        result = run_in_process(args)
    else:
        command = launcher + [RECIPE] + [str(a) for a in args]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def run_in_process(args):
    """`distill.main(args)` in this process, with what it prints captured and its exit status as a process would
    report it: argparse's 2, 1 for a SystemExit message or an error. Starting an interpreter that imports torch,
    transformers and accelerate costs more than most of the tests' runs; the tests whose claim is about processes
    (two of them, a killed one) start real ones."""
    from accelerate.state import AcceleratorState

    sys.path.insert(0, str(Path(RECIPE).parent))
    import distill

    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    # Warnings logged during the run reach its stderr, as Python's last-resort handler sends them in a process of
    # its own (here pytest's handlers would take them).
    log_handler = logging.StreamHandler(stderr)
    log_handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(log_handler)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            distill.main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
            if not isinstance(stop.code, int) and stop.code is not None:
                print(stop.code, file=sys.stderr)
        except Exception:  # noqa: BLE001  (as the interpreter would: the traceback on stderr, status 1)
            code = 1
            traceback.print_exc()
        finally:
            AcceleratorState._reset_state(True)
            logging.getLogger().removeHandler(log_handler)
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def run_killed(args, at_step):
    """Run the recipe in a real process that SIGKILLs itself right after optimizer step `at_step` (from its progress
    callback, so the step is the same on every machine): nothing after that step runs, as in a crash."""
    code = ("import os, signal, sys; sys.path.insert(0, sys.argv[1]); import distill; at = int(sys.argv[2]); "
            "distill.main(sys.argv[3:], progress=lambda p: p.stage == 'train' and p.step >= at "
            "and os.kill(os.getpid(), signal.SIGKILL))")
    command = [sys.executable, "-c", code, str(Path(RECIPE).parent), str(at_step)] + [str(a) for a in args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return result


def cache_entries(cache_dir):
    return sorted(p for p in os.listdir(cache_dir) if not p.startswith("."))  # .locks/ holds the file locks


def common(teacher, data, output_dir, *extra):
    return ["--teacher", teacher, "--train_file", data, "--output_dir", output_dir, *FAST, *extra]


def test_distillation_student_learns_to_agree_with_the_teacher(trained_teacher, synthetic_csv, tmp_path):
    out = tmp_path / "student"
    result = run(common(trained_teacher, synthetic_csv, out, "--student_layers", "2", "--num_train_epochs", "4",
                        "--learning_rate", "2e-3", "--teacher_cache_dir", tmp_path / "cache"))
    assert "teacher validation accuracy" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["teacher"]["metrics"]["accuracy"] > 0.85  # the fixture teacher has learned the task
    assert results["student"]["metrics"]["agreement"] > 0.85  # chance agreement is about 0.5
    assert results["retention"]["accuracy"] == pytest.approx(
        results["student"]["metrics"]["accuracy"] / results["teacher"]["metrics"]["accuracy"]
    )
    assert results["training"]["layer_map"] == [1, 3]
    assert results["training"]["teacher_cache"] is True
    assert results["speed"]["speedup"] > 0 and results["student"]["file_size_bytes"] > 0
    cached = cache_entries(tmp_path / "cache")
    assert len(cached) == 3  # the teacher's logits on train, validation and test, each computed once
    again = run(common(trained_teacher, synthetic_csv, tmp_path / "again", "--student_layers", "2",
                       "--num_train_epochs", "1",
                       "--teacher_cache_dir", tmp_path / "cache", "--latency_batches", "0"))
    assert cache_entries(tmp_path / "cache") == cached  # a later run reads them back
    assert json.loads((tmp_path / "again" / "results.json").read_text())["teacher"]["metrics"] == (
        results["teacher"]["metrics"]
    )

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model).__name__ == "CompactDistilBertForSequenceClassification"
    classifier = pipeline("text-classification", model=str(out), device="cpu")
    assert classifier("w1 w20 w30")[0]["label"] in ("negative", "positive")
    assert (out / "modeling_compact_distilbert.py").exists()  # loads without hf_compact too


def test_squeezebert_student_with_hidden_state_and_attention_losses(trained_teacher, synthetic_csv, tmp_path):
    out = tmp_path / "squeeze"
    run(common(trained_teacher, synthetic_csv, out, "--student_type", "compact_squeezebert", "--student_groups", "2",
               "--student_layers", "2", "--num_train_epochs", "1", "--max_steps", "6", "--ce_weight", "0.5",
               "--cos_weight", "1", "--attention_weight", "1", "--learning_rate", "1e-3"))
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["teacher_cache"] is False  # hidden-state losses need the teacher each step
    assert results["training"]["loss_weights"]["attention"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "compact_squeezebert" and config["q_groups"] == 2
    assert "grouped projections fitted" in results["training"]["init"]


def test_cheap_training_options_reach_the_saved_student(trained_teacher, synthetic_csv, tmp_path):
    """No dropout, eager attention and bf16 autocast while training; the saved student loads as usual."""
    out = tmp_path / "cheap"
    run(common(trained_teacher, synthetic_csv, out, "--student_type", "compact_squeezebert", "--student_groups", "2",
               "--student_layers", "2", "--num_train_epochs", "1", "--max_steps", "4", "--student_dropout", "0",
               "--attn_implementation", "eager", "--mixed_precision", "bf16", "--grouped_init", "block-diagonal",
               "--latency_batches", "0", "--student_feed_forward_groups", "4"))
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["mixed_precision"] == "bf16" and results["training"]["dropout"] == 0
    assert results["training"]["init"].endswith("block-diagonal part")
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0 and config["attention_probs_dropout_prob"] == 0
    groups = [config[f"{name}_groups"] for name in ("q", "k", "v", "post_attention", "intermediate", "output")]
    assert groups == [2, 2, 2, 1, 4, 4]  # a cheaper feed-forward than the attention projections
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config._attn_implementation == "sdpa"
    bad = run(common(trained_teacher, synthetic_csv, tmp_path / "bad", "--student_dropout", "1.5"), expect_ok=False)
    assert bad.returncode != 0 and "--student_dropout must be in [0, 1)" in bad.stderr


def test_killed_run_resumes_to_the_same_weights(trained_teacher, synthetic_csv, tmp_path):
    args = ["--student_layers", "2", "--num_train_epochs", "2", "--save_steps", "3", "--learning_rate", "1e-3",
            "--no_teacher_cache", "--latency_batches", "0"]
    run(common(trained_teacher, synthetic_csv, tmp_path / "whole", *args))
    run_killed(common(trained_teacher, synthetic_csv, tmp_path / "resumed", *args), at_step=26)
    # killed in the second epoch, two steps after the checkpoint at step 24
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint_7" / "progress.json").exists()
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = run(common(trained_teacher, synthetic_csv, tmp_path / "resumed", *args,
                         "--resume_from_checkpoint", "last"))
    assert "resumed from" in resumed.stdout
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    again = load_file(tmp_path / "resumed" / "model.safetensors")
    assert whole.keys() == again.keys()
    for name in whole:
        torch.testing.assert_close(again[name], whole[name], rtol=0, atol=0)


def test_bad_input_fails_before_training_with_a_clear_message(trained_teacher, synthetic_csv, tmp_path):
    missing = run(common(trained_teacher, synthetic_csv, tmp_path / "a", "--text_column", "review"), expect_ok=False)
    assert missing.returncode != 0 and "['review'] not found" in missing.stderr + missing.stdout

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("earlier results")
    taken = run(common(trained_teacher, synthetic_csv, tmp_path / "taken"), expect_ok=False)
    assert "exists and is not empty" in taken.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "earlier results"

    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    result = run(common(trained_teacher, empty, tmp_path / "b"), expect_ok=False)
    assert result.returncode != 0 and "empty" in result.stderr

    three_labels = tmp_path / "three.csv"
    rows = ["text,label"] + [f"w{i % 40 + 6} w7,{['a', 'b', 'c'][i % 3]}" for i in range(90)]
    three_labels.write_text("\n".join(rows) + "\n")
    result = run(common(trained_teacher, three_labels, tmp_path / "c"), expect_ok=False)
    assert "predicts 2 labels" in result.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(trained_teacher, synthetic_csv, tmp_path):
    out = tmp_path / "nan"
    result = run(common(trained_teacher, synthetic_csv, out, "--student_layers", "1", "--num_train_epochs", "1",
                        "--save_steps", "1", "--learning_rate", "1e30", "--warmup_ratio", "0",
                        "--no_teacher_cache"), expect_ok=False)
    assert result.returncode != 0
    assert "The loss became nan" in result.stderr or "The loss became inf" in result.stderr
    assert list((out / "checkpoints").iterdir())  # the good checkpoints are still there
    assert not (out / "model.safetensors").exists()


def test_results_and_card_say_what_was_run_on_which_data(trained_teacher, tmp_path):
    """A --max_steps run on the demo's reviews, written to files: steps and epochs as run, the user's license,
    language and data description, a usage example from the data, and no Hub dataset id for local files."""
    from huggingface_hub import ModelCard

    sys.path.insert(0, str(Path(RECIPE).parent))
    from rotten_tomatoes import write_splits

    files = write_splits(tmp_path / "reviews")
    out = tmp_path / "short"
    run(["--teacher", trained_teacher, "--train_file", files["train"], "--validation_file", files["validation"],
         "--test_file", files["test"], "--output_dir", out, *FAST,
         "--max_train_samples", "64", "--max_eval_samples", "32", "--student_layers", "1",
         "--per_device_train_batch_size", "8", "--num_train_epochs", "3", "--max_steps", "2",
         "--gradient_accumulation_steps", "2", "--license", "cc-by-4.0", "--language", "en",
         "--dataset_description", "Rotten Tomatoes review snippets"])
    results = json.loads((out / "results.json").read_text())
    assert (results["training"]["steps"], results["training"]["epochs"]) == (2, 0.5)  # 4 of 8 batches per epoch
    assert (results["license"], results["language"]) == ("cc-by-4.0", "en")
    first_test_text = json.loads(Path(files["test"]).read_text().splitlines()[0])["text"]
    assert results["dataset"]["example"] == first_test_text
    card = ModelCard.load(out / "README.md")
    assert (card.data.license, card.data.language) == ("cc-by-4.0", "en")
    assert "2 optimizer steps (0.50 epochs)" in card.text and "3 epochs" not in card.text
    assert f'classifier("{first_test_text}")' in card.text
    assert "hub_id" not in results["dataset"]
    assert results["dataset"]["description"] == "Rotten Tomatoes review snippets"
    assert card.data.datasets is None and not card.data.eval_results  # no Hub dataset id anywhere


def test_accelerate_config_files_load():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(RECIPE).parent / "accelerate_configs"
    expected = {"cpu": "NO", "cpu_2_processes": "MULTI_GPU", "gpu_fp16": "NO", "multi_gpu_bf16": "MULTI_GPU",
                "deepspeed_zero2": "DEEPSPEED", "fsdp": "FSDP"}
    for name, distributed_type in expected.items():
        config = load_config_from_file(str(folder / f"{name}.yaml"))
        assert config.distributed_type.value == distributed_type, name
    fsdp = load_config_from_file(str(folder / "fsdp.yaml")).fsdp_config
    # every block class it wraps must exist in the modeling files
    import hf_compact.modeling.modeling_compact_distilbert as distilbert
    import hf_compact.modeling.modeling_compact_squeezebert as squeezebert

    wrapped = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert hasattr(distilbert, wrapped[0]) and hasattr(squeezebert, wrapped[1])


@pytest.fixture(scope="module")
def token_task(tmp_path_factory, tokenizer_dir):
    """A tiny BERT tagger (a word is tagged POS when it is one of POSITIVE_WORDS) and JSON-lines data for it."""
    import random

    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from conftest import POSITIVE_WORDS, VOCAB, WORDS

    folder = tmp_path_factory.mktemp("tagger")
    rng = random.Random(0)
    rows = []
    for _ in range(400):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        rows.append({"tokens": words, "tags": ["POS" if w in POSITIVE_WORDS else "O" for w in words]})
    data = folder / "tags.json"
    data.write_text("\n".join(json.dumps(r) for r in rows))

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, id2label={0: "O", 1: "POS"},
                        label2id={"O": 0, "POS": 1})
    model = BertForTokenClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = [rows[(step * 32 + k) % len(rows)] for k in range(32)]
        encoded = tokenizer([r["tokens"] for r in batch], is_split_into_words=True, padding=True, return_tensors="pt")
        labels = torch.full(encoded["input_ids"].shape, -100)
        for i, r in enumerate(batch):  # one token per word in this vocabulary; position 0 is [CLS]
            labels[i, 1 : len(r["tags"]) + 1] = torch.tensor([int(t == "POS") for t in r["tags"]])
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model", data


def test_token_classification_distillation(token_task, tmp_path):
    teacher, data = token_task
    out = tmp_path / "tagger-student"
    task = ["--task", "token-classification", "--text_column", "tokens", "--label_column", "tags"]
    run(common(teacher, data, out, *task, "--student_layers", "2", "--num_train_epochs", "3",
               "--learning_rate", "3e-3",
               "--teacher_cache_dir", tmp_path / "cache"))
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "token-classification" and results["training"]["teacher_cache"] is True
    assert results["teacher"]["metrics"]["accuracy"] > 0.9  # scored on the tagged tokens
    assert results["student"]["metrics"]["agreement"] > 0.9  # the share of tagged tokens where both agree
    assert len(cache_entries(tmp_path / "cache")) == 3  # per-token teacher logits of train, validation and test
    assert 'pipeline("token-classification"' in (out / "README.md").read_text()

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(out)
    assert type(model).__name__ == "CompactDistilBertForTokenClassification"
    tagger = pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(out), device="cpu")
    assert {entity["word"] for entity in tagger("w1 w20 w30")} <= {"w1", "w20", "w30"}

    wrong = run(common(teacher, data, tmp_path / "wrong", "--student_layers", "2"), expect_ok=False)
    assert wrong.returncode != 0 and "does not fit --task sequence-classification" in wrong.stderr


def test_evaluation_runs_the_float32_weights_under_mixed_precision():
    """The recipe takes Accelerate's autocast wrapper off the prepared student (public API) and autocasts the training
    forward itself: metrics and saved weights are float32, the loop's steps bf16."""
    import copy

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=128)).eval()
    reference = copy.deepcopy(model)
    inputs = {"input_ids": torch.randint(0, 99, (4, 16))}
    try:
        accelerator = Accelerator(cpu=True, mixed_precision="bf16")
        prepared = accelerator.prepare_model(model, evaluation_mode=True)
        accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
        with torch.no_grad():
            expected = reference(**inputs).logits
            float32 = prepared(**inputs).logits
            with accelerator.autocast():
                autocast = prepared(**inputs).logits
    finally:
        AcceleratorState._reset_state(True)
    assert torch.equal(float32, expected)
    assert autocast.dtype == torch.bfloat16 and not torch.equal(autocast.float(), expected)


def test_the_progress_callback_receives_every_step_and_the_end(trained_teacher, synthetic_csv, tmp_path):
    sys.path.insert(0, str(Path(RECIPE).parent))
    import distill

    reports = []
    from accelerate.state import AcceleratorState

    argv = common(trained_teacher, synthetic_csv, tmp_path / "out", "--student_layers", "1", "--max_steps", "3",
                  "--latency_batches", "0", "--no_model_card")
    try:
        results = distill.main([str(a) for a in argv], progress=reports.append)
    finally:
        AcceleratorState._reset_state(True)
    train = [r for r in reports if r.stage == "train"]
    assert [r.step for r in train] == [1, 2, 3] and {r.total_steps for r in train} == {3}
    assert 0 < train[0].epoch < train[-1].epoch and "loss" in train[-1].metrics
    assert [r.stage for r in reports[-2:]] == ["evaluate", "done"]
    assert reports[-2].metrics["accuracy"] == results.training.history[-1]["accuracy"]
    assert reports[-1].metrics == results.student.metrics


def test_export_keeps_gated_variants_and_refuses_bad_requests(trained_teacher, synthetic_csv, tmp_path):
    out = tmp_path / "student"
    run(common(trained_teacher, synthetic_csv, out, "--student_layers", "1", "--num_train_epochs", "1",
               "--latency_batches", "0", "--export", "bf16,int8", "--export_tolerance", "100"))
    results = json.loads((out / "results.json").read_text())
    variants = {v["precision"]: v for v in results["variants"]}
    assert set(variants) == {"bf16", "int8"}
    for precision, variant in variants.items():
        assert variant["passed_gate"] is True  # within a tolerance of 100 points
        if "path" in variant:  # kept: faster than float32 here
            assert variant["path"] == f"variants/{precision}" and (out / variant["path"] / "config.json").exists()
        else:
            assert variant["reason"].startswith("slower than float32") and not (out / "variants" / precision).exists()
        assert variant["texts_per_s"] > 0 and variant["file_size_bytes"] > 0 and "cpu_flags" in variant
    assert (out / "variants" / "int8" / "model.onnx").exists() == ("path" in variants["int8"])
    assert "Lower-precision variants" in (out / "README.md").read_text()

    bad = run(common(trained_teacher, synthetic_csv, tmp_path / "a", "--export", "bf16,fp8"), expect_ok=False)
    assert bad.returncode == 2 and "Unknown precision 'fp8'" in bad.stderr
    bad = run(common(trained_teacher, synthetic_csv, tmp_path / "b", "--export_tolerance", "-1"), expect_ok=False)
    assert bad.returncode == 2 and "--export_tolerance must be zero or more" in bad.stderr
    mlm = run(["--teacher", trained_teacher, "--train_file", synthetic_csv, "--output_dir", tmp_path / "c", *FAST,
               "--task", "mlm", "--export", "int8"], expect_ok=False)
    assert mlm.returncode == 2 and "it needs --task sequence-classification, not mlm" in mlm.stderr
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
