"""recipes/finetune.py end to end on tiny models: it learns, resumes, does LoRA, multi-label, regression and token
classification, reports agreement with a teacher, and refuses bad input before training."""

import json
import os
import random
import re
import sys

import datasets
import pytest
import torch
from huggingface_hub import ModelCard, constants
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

import hf_compact
import hf_compact.data
from conftest import POSITIVE_WORDS, VOCAB, WORDS, synthetic_rows, write_csv
from hub_server import fake_hub  # noqa: F401  (fixture)


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
sys.path.insert(0, RECIPES)
import finetune  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small train many times faster on one thread than on two on a shared 2-core machine, where
    threads wait for each other at every operation; the numbers checked are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_bert(tmp_path_factory, tokenizer_dir):
    """An untrained 2-layer BERT with a tokenizer: the model to fine-tune."""
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def run(tmp_path, model, data, *extra, progress=None):
    output = tmp_path / "out"
    argv = ["--model_name_or_path", str(model), "--train_file", str(data), "--output_dir", str(output),
            "--num_train_epochs", "4", "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
            "--report_to", "none", *extra]
    return finetune.main(argv, progress).model.metrics, output


def test_single_label_learns_and_saves_a_loadable_model(tmp_path, base_bert, synthetic_csv):
    reports = []
    metrics, output = run(tmp_path, base_bert, synthetic_csv, "--license", "mit", "--language", "en",
                          progress=reports.append)
    assert metrics["accuracy"] >= 0.9  # the synthetic task is learnable; chance is 0.5
    steps = [p.step for p in reports if p.stage == "train"]
    assert steps == list(range(1, 129)) and {p.total_steps for p in reports} == {128}  # 4 epochs of 512 / 16
    evaluations = [p for p in reports if p.stage == "evaluate" and "eval_accuracy" in p.metrics]
    assert [p.epoch for p in evaluations] == [1, 2, 3, 4] and evaluations[-1].metrics["eval_accuracy"] >= 0.9
    assert [p.metrics["test_accuracy"] for p in reports if "test_accuracy" in p.metrics] == [metrics["accuracy"]]
    assert "done" in [p.stage for p in reports]
    results = json.loads((output / "results.json").read_text())
    assert results["model"]["metrics"]["accuracy"] == metrics["accuracy"]
    assert results["training"]["problem_type"] == "single_label_classification"
    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert not any(name.endswith((".bin", ".pt")) for name in os.listdir(output))
    card = (output / "README.md").read_text()
    assert f"{100 * metrics['accuracy']:.2f}" in card and "hf_compact" in card
    assert (results["license"], results["language"]) == ("mit", "en")  # as given, never assumed
    first_test_text = hf_compact.data.load_recipe_dataset(train_file=str(synthetic_csv), text_column="text",
                                                   label_column="label", split_seed=42)["test"][0]["text"]
    assert results["dataset"]["example"] == first_test_text
    assert f'classifier("{first_test_text}")' in card and "beautifully acted" not in card
    assert (ModelCard(card).data.license, ModelCard(card).data.language) == ("mit", "en")


def test_resume_continues_from_the_last_checkpoint(tmp_path, base_bert, synthetic_csv):
    _, output = run(tmp_path, base_bert, synthetic_csv, "--no_model_card", "--max_steps", "32")
    steps = sorted(int(d.split("-")[1]) for d in os.listdir(output) if d.startswith("checkpoint-"))
    assert steps and steps[-1] == 32
    metrics, _ = run(tmp_path, base_bert, synthetic_csv, "--no_model_card", "--max_steps", "64",
                     "--resume_from_checkpoint", "last")
    state = json.loads((output / "checkpoint-64" / "trainer_state.json").read_text())
    assert state["global_step"] == 64 and metrics["accuracy"] >= 0.8


def test_lora_on_a_compact_student_with_teacher_agreement(tmp_path, trained_teacher, synthetic_csv):
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher)
    student = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=2)
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    AutoTokenizer.from_pretrained(trained_teacher).save_pretrained(folder)
    metrics, output = run(tmp_path, folder, synthetic_csv, "--no_model_card", "--lora_r", "4",
                          "--teacher", str(trained_teacher))
    assert 0.0 <= metrics["agreement"] <= 1.0 and metrics["accuracy"] > 0.6
    assert (output / "adapter_config.json").exists()
    from peft import PeftModel

    base = hf_compact.CompactDistilBertForSequenceClassification.from_pretrained(folder)
    reloaded = PeftModel.from_pretrained(base, output).eval()
    tokenizer = AutoTokenizer.from_pretrained(output)
    encoded = tokenizer(["w0 w9 w10", "w20 w30"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = reloaded(**encoded).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_multi_label_and_regression(tmp_path, base_bert):
    rng = random.Random(0)
    rows = []
    for _ in range(320):
        words = [rng.choice(WORDS) for _ in range(6)]
        rows.append({"text": " ".join(words), "tags": json.dumps(None),
                     "score": float(sum(w in POSITIVE_WORDS for w in words))})
    multi = [{"text": r["text"], "labels": [int("w0" in r["text"].split()), int("w1" in r["text"].split())]}
             for r in rows]
    (tmp_path / "multi.json").write_text("\n".join(json.dumps(r) for r in multi))
    metrics, output = run(tmp_path, base_bert, tmp_path / "multi.json", "--no_model_card", "--label_column", "labels",
                          "--max_steps", "4")
    assert {"accuracy", "f1_micro"} <= set(metrics)
    assert AutoModelForSequenceClassification.from_pretrained(output).config.problem_type == (
        "multi_label_classification")
    regression = tmp_path / "regression.csv"
    write_csv(regression, [{"text": r["text"], "score": r["score"]} for r in rows])
    metrics, output = run(tmp_path / "r", base_bert, regression, "--no_model_card", "--label_column", "score",
                          "--max_steps", "4")
    assert {"mse", "pearson"} <= set(metrics)
    assert AutoModelForSequenceClassification.from_pretrained(output).config.num_labels == 1


def test_token_classification(tmp_path, base_bert):
    rng = random.Random(0)
    rows = []
    for _ in range(320):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        rows.append({"tokens": words, "tags": ["POS" if w in POSITIVE_WORDS else "O" for w in words]})
    (tmp_path / "ner.json").write_text("\n".join(json.dumps(r) for r in rows))
    metrics, output = run(tmp_path, base_bert, tmp_path / "ner.json", "--no_model_card", "--task",
                          "token-classification", "--text_column", "tokens", "--label_column", "tags")
    assert metrics["accuracy"] >= 0.9
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "O", "1": "POS"}


def test_bad_input_is_refused_before_training(tmp_path, base_bert, trained_teacher, synthetic_csv, capsys):
    with pytest.raises(ValueError, match="Column\\(s\\) \\['review'\\] not found"):
        run(tmp_path, base_bert, synthetic_csv, "--text_column", "review")
    three = tmp_path / "three.csv"
    write_csv(three, [{"text": r["text"], "label": ["bad", "good", "meh"][i % 3]}
                      for i, r in enumerate(synthetic_rows(90))])
    with pytest.raises(SystemExit, match="predicts 2 labels"):
        run(tmp_path, trained_teacher, three)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "keep.txt").write_text("earlier results")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        run(tmp_path, base_bert, synthetic_csv)
    assert (tmp_path / "out" / "keep.txt").read_text() == "earlier results"
    with pytest.raises(SystemExit) as failed:
        finetune.main(["--model_name_or_path", str(base_bert), "--train_file", str(synthetic_csv), "--output_dir",
                       str(tmp_path / "x"), "--push_to_hub", "--hub_model_id", "not-an-owner-slash-name"])
    assert failed.value.code == 2 and "owner/name" in capsys.readouterr().err  # argparse's usage error
    assert not (tmp_path / "x").exists()


def test_steps_and_epochs_are_recorded_as_run(tmp_path, base_bert, synthetic_csv):
    _, output = run(tmp_path, base_bert, synthetic_csv, "--num_train_epochs", "3", "--max_steps", "5",
                    "--save_total_limit", "1")
    results = json.loads((output / "results.json").read_text())
    steps_per_epoch = 512 // 16  # 640 examples less 10% validation and 10% test, batch 16
    assert results["training"]["steps"] == 5
    assert results["training"]["epochs"] == pytest.approx(5 / steps_per_epoch)
    card = (output / "README.md").read_text()
    assert "5 optimizer steps (0.16 epochs)" in card and "3 epochs" not in card
    # Neither --license nor --language was given: left out of the metadata, and the card says so.
    assert "license" not in results and "language" not in results
    assert ModelCard(card).data.license is None and "not given when the model was trained (`--license`)" in card


def test_only_a_hub_dataset_is_named_by_its_hub_id(tmp_path, base_bert, monkeypatch):
    rows = synthetic_rows(200)
    hub_data = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    loaded = []
    monkeypatch.setattr(hf_compact.data.datasets, "load_dataset",
                        lambda name, config=None: loaded.append((name, config)) or hub_data)
    output = tmp_path / "hub-data"
    finetune.main(["--model_name_or_path", str(base_bert), "--dataset_name", "someone/speeches",
                   "--output_dir", str(output), "--max_steps", "2", "--report_to", "none"])
    assert loaded == [("someone/speeches", None)]
    results = json.loads((output / "results.json").read_text())
    assert results["dataset"]["hub_id"] == "someone/speeches"
    card = ModelCard.load(output / "README.md")
    assert card.data.datasets == ["someone/speeches"]
    assert {r.dataset_type for r in card.data.eval_results} == {"someone/speeches"}


def compact_student_folder(folder, trained_teacher):
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher)
    student = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=2)
    student.save_pretrained(folder)
    AutoTokenizer.from_pretrained(trained_teacher).save_pretrained(folder)
    return student


def test_lora_adapter_is_saved_as_peft_writes_it(tmp_path, trained_teacher, synthetic_csv, monkeypatch):
    """Trained from a relative folder, the adapter names its base by an absolute path, its card is a PEFT card whose
    snippet loads it from anywhere, and the classifier head was trained and saved with it."""
    from safetensors.torch import load_file

    work = tmp_path / "work"
    student = compact_student_folder(work / "student", trained_teacher)
    monkeypatch.chdir(work)
    _, output = run(tmp_path, "student", synthetic_csv, "--lora_r", "4", "--max_steps", "4")

    adapter_config = json.loads((output / "adapter_config.json").read_text())
    assert os.path.isabs(adapter_config["base_model_name_or_path"])
    assert os.path.samefile(adapter_config["base_model_name_or_path"], work / "student")
    assert {"pre_classifier", "classifier"} <= set(adapter_config["modules_to_save"])
    saved = load_file(output / "adapter_model.safetensors")
    head = [name for name in saved if name.endswith("classifier.weight") and "pre_classifier" not in name]
    assert head and not torch.allclose(saved[head[0]], student.classifier.weight)  # the head was trained

    card = ModelCard.load(output / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model is None  # a local base is no Hub id
    assert "trust_remote_code" not in card.text and "AutoPeftModelForSequenceClassification" in card.text
    assert str(work) not in str(card)
    snippet = re.findall(r"```python\n(.*?)```", card.text, flags=re.DOTALL)[0]
    monkeypatch.chdir(tmp_path)  # loaded from elsewhere
    namespace = {}
    exec(compile(snippet.replace('"out"', json.dumps(str(output))), "<card snippet>", "exec"), namespace)
    assert namespace["classifier"]("w0 w9 w10")[0]["label"] in {"negative", "positive"}


def test_pushing_an_adapter_of_a_local_model_needs_its_hub_id(tmp_path, base_bert, synthetic_csv, capsys,
                                                               monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)  # never used: the run stops before training
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # and a push could not leave the machine
    push = ["--lora_r", "4", "--push_to_hub", "--hub_model_id", "alice/lora"]
    with pytest.raises(SystemExit):
        run(tmp_path, base_bert, synthetic_csv, *push)
    assert "--hub_base_model" in capsys.readouterr().err and not (tmp_path / "out").exists()

    # Adapters on grouped projections cannot be merged: --merge_lora would fall back to an adapter.
    squeeze = tmp_path / "squeeze"
    config = hf_compact.CompactSqueezeBertConfig(
        vocab_size=len(VOCAB), hidden_size=32, embedding_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, q_groups=2, v_groups=2)
    hf_compact.CompactSqueezeBertForSequenceClassification(config).save_pretrained(squeeze)
    AutoTokenizer.from_pretrained(base_bert).save_pretrained(squeeze)
    with pytest.raises(SystemExit, match="cannot be merged.*--hub_base_model"):
        run(tmp_path, squeeze, synthetic_csv, *push, "--merge_lora")
    assert not (tmp_path / "out").exists()  # refused before any training


def test_pushed_adapter_names_its_base_model_by_hub_id(tmp_path, base_bert, synthetic_csv, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    run(tmp_path, base_bert, synthetic_csv, "--lora_r", "4", "--max_steps", "4", "--push_to_hub",
        "--hub_model_id", "alice/bert-lora", "--hub_base_model", "alice/tiny-bert")
    remote = fake_hub.repo_files("alice/bert-lora")
    adapter_config, readme = remote["adapter_config.json"].decode(), remote["README.md"].decode()
    assert json.loads(adapter_config)["base_model_name_or_path"] == "alice/tiny-bert"
    card = ModelCard(readme)
    assert (card.data.library_name, card.data.base_model) == ("peft", "alice/tiny-bert")
    assert str(base_bert) not in adapter_config + readme and str(tmp_path) not in adapter_config + readme
    # The head was new (the base has no trained labels): the snippet loads the base with the data's labels.
    assert 'id2label={0: "negative", 1: "positive"}' in readme and 'from_pretrained(\n    "alice/bert-lora"' in readme


def test_readme_peft_example_trains_the_classifier_head():
    """The README's PEFT example, run on a compact classifier: the new head must train beside the adapters."""
    from peft import LoraConfig, get_peft_model

    readme = open(os.path.join(os.path.dirname(RECIPES), "README.md")).read()
    section = readme.split("## PEFT / LoRA", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    snippets += [f"model = {code}" for code in re.findall(r"`(get_peft_model\([^`]*\))`", section)]
    assert snippets
    for snippet in snippets:
        config = hf_compact.CompactDistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=4,
                                                    hidden_dim=37)
        namespace = {"model": hf_compact.CompactDistilBertForSequenceClassification(config),
                     "LoraConfig": LoraConfig, "get_peft_model": get_peft_model}
        exec(compile(snippet, "<README PEFT example>", "exec"), namespace)
        head = namespace["model"].get_base_model().classifier
        trained = head.modules_to_save["default"] if hasattr(head, "modules_to_save") else head  # PEFT's copy
        assert all(p.requires_grad for p in trained.parameters()), snippet
        assert "classifier" in namespace["model"].peft_config["default"].modules_to_save


def test_merged_lora_is_a_plain_model_with_the_usual_card(tmp_path, trained_teacher, synthetic_csv):
    compact_student_folder(tmp_path / "student", trained_teacher)
    _, output = run(tmp_path, tmp_path / "student", synthetic_csv, "--lora_r", "4", "--merge_lora", "--max_steps", "4")
    assert (output / "model.safetensors").exists() and not (output / "adapter_config.json").exists()
    card = ModelCard.load(output / "README.md")
    assert card.data.library_name == "transformers" and "trust_remote_code=True" in card.text
    assert "AutoPeft" not in card.text


def test_overwrite_with_a_typo_keeps_the_old_model(tmp_path, base_bert, synthetic_csv):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier model")
    with pytest.raises(ValueError, match="reviw"):
        run(tmp_path, base_bert, synthetic_csv, "--overwrite_output_dir", "--text_column", "reviw")
    assert (tmp_path / "out" / "keep.txt").read_text() == "earlier model"

    run(tmp_path, base_bert, synthetic_csv, "--overwrite_output_dir", "--max_steps", "2")
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the staging folder took the old one's place
    distributed = json.loads((tmp_path / "out" / "results.json").read_text())["training"]["distributed"]
    assert distributed == {"num_processes": 1, "per_device_batch_size": 16, "global_batch_size": 16}


def test_flags_are_training_arguments_with_the_recipe_defaults(tmp_path, base_bert, synthetic_csv, capsys):
    required = ["--model_name_or_path", str(base_bert), "--train_file", str(synthetic_csv), "--output_dir",
                str(tmp_path / "out")]
    *_, training_args, _ = finetune.parse_args(required)
    assert isinstance(training_args, finetune.TrainingArguments)
    assert (training_args.eval_strategy, training_args.save_strategy) == ("epoch", "epoch")
    assert training_args.load_best_model_at_end and training_args.save_total_limit == 2
    assert training_args.report_to == ["tensorboard"] and training_args.per_device_train_batch_size == 32
    assert training_args.metric_for_best_model == "auto"  # accuracy, or mse for regression, once the data is read
    _, _, _, chosen, _ = finetune.parse_args(required + ["--lr_scheduler_type", "cosine", "--num_train_epochs", "1.5",
                                                      "--report_to", "none", "--save_total_limit", "1"])
    assert (chosen.lr_scheduler_type, chosen.num_train_epochs, chosen.report_to, chosen.save_total_limit) == (
        "cosine", 1.5, [], 1)

    with pytest.raises(SystemExit):
        finetune.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Training batch size per device. (default: 32)" in help_text
    assert "--resume_from_checkpoint" in help_text and "--hub_private_repo" in help_text

    for argv, message in (
        (required[:-2], "--output_dir"),
        (required + ["--merge_lora"], "--merge_lora needs --lora_r"),
        (required + ["--dataset_name", "someone/data"], "exactly one of --train_file and --dataset_name"),
        (required + ["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be positive"),
        (required + ["--hub_base_model", "./here"], "--hub_base_model must be a Hub model id"),
    ):
        with pytest.raises(SystemExit) as failed:
            finetune.parse_args(argv)
        assert failed.value.code == 2 and message in capsys.readouterr().err, argv


def test_export_is_checked_before_training(tmp_path, base_bert, synthetic_csv, capsys):
    with pytest.raises(SystemExit) as failed:
        run(tmp_path, base_bert, synthetic_csv, "--export", "int4")
    assert failed.value.code == 2 and "Unknown precision 'int4'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as failed:
        run(tmp_path, base_bert, synthetic_csv, "--export", "int8", "--lora_r", "4")
    assert failed.value.code == 2 and "with LoRA add --merge_lora" in capsys.readouterr().err
    tags = tmp_path / "tags.json"
    tags.write_text("\n".join(json.dumps({"tokens": ["w1", "w7"], "tags": ["A", "B"]}) for _ in range(40)) + "\n")
    with pytest.raises(SystemExit, match="need a sequence-classification model"):
        run(tmp_path, base_bert, tags, "--task", "token-classification", "--text_column", "tokens",
            "--label_column", "tags", "--export", "int8")
    assert not (tmp_path / "out").exists()
