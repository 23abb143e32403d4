"""Model cards from measured results: metadata round trips, figures and rounding, optional sections, usage, plots."""

import copy
import json
import math
import re

import pytest
from huggingface_hub import ModelCard
from transformers import BertConfig

import hf_compact
from hf_compact.flops import flops_per_token
from hf_compact.model_card import (
    build_model_card,
    check_card_text,
    comparison_from_results,
    template_text,
    variant_points,
    write_model_card,
)
from hf_compact.plots import plot_accuracy_vs_latency, plot_marks, validate_points


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAKE_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def distilled_results(teacher_path="/home/someone/private/runs/minilm-teacher"):
    config = hf_compact.CompactDistilBertConfig(dim=384, n_layers=3, n_heads=12, hidden_dim=1536)
    return {
        "model_name": "rt-compact-distilbert",
        "model_type": "compact_distilbert",
        "task": "text-classification",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "dataset": {"name": "rotten_tomatoes", "split": "test", "num_examples": 1276, "source": "rotten_tomatoes",
                    "hub_id": None},
        "teacher": {"name_or_path": teacher_path, "model_type": "bert", "parameters": 22713602,
                    "metrics": {"accuracy": 0.8025, "f1": 0.7931}},
        "student": {"parameters": 11012354, "file_size_bytes": 44061234,
                    "metrics": {"accuracy": 0.7926, "f1": 0.7812, "agreement": 0.9312}},
        "retention": {"accuracy": 0.98765},
        "speed": {"teacher_ms": 40.14, "student_ms": 17.11, "speedup": 2.3456, "batch_size": 32,
                  "sequence_length": "real", "threads": 2, "hardware": "AMD EPYC 7B13", "batches": 20},
        "training": {"method": "distillation", "epochs": 3, "learning_rate": 5e-5, "batch_size": 32, "seed": 42,
                     "temperature": 2.0, "loss_weights": {"kd": 1.0, "ce": 0.5, "cos": 0.0, "mse": 0.0,
                                                          "attention": 0.0},
                     "layer_map": [1, 3, 5], "init": "teacher layers", "history": []},
        "config": config.to_dict(),
    }


def finetuned_results():
    """A plain fine-tuned BERT: only the required fields."""
    return {
        "model_name": "rt-bert-small",
        "model_type": "bert",
        "task": "text-classification",
        "dataset": {"name": "reviews.csv", "split": "test", "num_examples": 200},
        "model": {"parameters": 4400000, "metrics": {"accuracy": 0.81, "f1": 0.8}},
    }


def squeezebert_results():
    config = hf_compact.CompactSqueezeBertConfig(
        hidden_size=384, embedding_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=1536,
        q_groups=2, intermediate_groups=8,
    )
    results = distilled_results(teacher_path="sentence-transformers/all-MiniLM-L6-v2")
    results.update(model_name="rt-compact-squeezebert", model_type="compact_squeezebert", config=config.to_dict())
    results["training"]["seeds"] = [
        {"seed": 1, "accuracy": 0.8013, "f1": 0.7950},
        {"seed": 2, "accuracy": 0.7781, "f1": 0.7702},
        {"seed": 3, "accuracy": 0.7915, "f1": 0.7820},
    ]
    return results


def comparison_points():
    return [
        {"name": "teacher", "accuracy": 0.8025, "latency_ms": 40.14, "role": "teacher"},
        {"name": "student", "accuracy": 0.7926, "latency_ms": 17.11, "role": "student"},
        {"name": "TF-IDF + logistic regression", "accuracy": 0.7512, "latency_ms": 1.9, "role": "baseline"},
    ]


def metrics_of(card):
    return {result.metric_type: result.metric_value for result in card.data.eval_results or []}


def test_distilled_card_round_trips_metadata_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    results = distilled_results()
    path = write_model_card(tmp_path, results, comparison=comparison_points(), repo_id="me/rt-compact-distilbert")

    assert path == str(tmp_path / "README.md")
    card = ModelCard.load(path)
    data = card.data
    assert (data.license, data.language, data.library_name) == (None, None, "transformers")  # neither was given
    assert data.pipeline_tag == "text-classification"
    assert {"hf_compact", "distillation", "compact_distilbert"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.datasets is None  # no hub_id given
    assert data.model_name == "rt-compact-distilbert"

    text = card.text
    assert "98.8%" in text and "98.7%" not in text  # retention 0.98765, one decimal
    assert "**2.35x**" in text  # speed-up 2.3456, two decimals
    assert "| Accuracy | 80.25% | 79.26% |" in text
    assert "| Latency (ms per batch of 32) | 40.1 | 17.1 |" in text
    assert f"| Throughput (texts/s) | {32000 / 40.14:,.0f} | {32000 / 17.11:,.0f} |" in text
    assert "**93.12%**" in text  # agreement
    assert "44.1 MB" in text and "11.0M (11,012,354)" in text
    flops = flops_per_token(hf_compact.CompactDistilBertConfig(**results["config"]), 128)
    assert f"{flops / 1e6:.1f} MFLOPs" in text
    assert "measured side by side in one process" in text
    assert "batch size 32" in text and "2 threads" in text and "AMD EPYC 7B13" in text
    assert "student layers 0, 1, 2 start as teacher layers 1, 3, 5" in text
    assert "temperature 2" in text and "(weight 0.5)" in text and "cosine" not in text  # zero weights left out
    assert "import hf_compact" in text and "trust_remote_code=True" in text
    assert 'model="me/rt-compact-distilbert"' in text

    # The plot: written, a real PNG, embedded with a relative link, its points also listed as a table.
    plot = tmp_path / "accuracy_vs_latency.png"
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert "](accuracy_vs_latency.png)" in text
    assert "| TF-IDF + logistic regression | baseline | 75.12% | 1.9 |" in text

    # Nothing from the environment: no token, no local path of the teacher.
    raw = (tmp_path / "README.md").read_text()
    assert FAKE_TOKEN not in raw and "/home/someone" not in raw and "`minilm-teacher`" in raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "accuracy_vs_latency.png"]  # no temp files


def test_finetuned_card_without_teacher_leaves_absent_sections_out(tmp_path):
    path = write_model_card(tmp_path, finetuned_results())
    card = ModelCard.load(path)
    text = card.text

    assert "distillation" not in card.data.tags and "bert" in card.data.tags
    assert metrics_of(card) == {}  # a local file is no Hub dataset: no model-index
    assert "| Accuracy | 81.00% |" in text and "| F1 | 80.00% |" in text
    assert "| Metric | This model |" in text and "Teacher" not in text
    for absent in ("Retention", "Speed-up", "Agreement", "Latency", "Hyperparameters", "across seeds",
                   "FLOPs", "Weights file size", "Projection groups", "Speed:", "accuracy_vs_latency"):
        assert absent not in text, absent
    # A bert model loads with transformers alone: no import of hf_compact, no remote code.
    assert "import hf_compact" not in text and "trust_remote_code" not in text
    assert not (tmp_path / "accuracy_vs_latency.png").exists()
    check_card_text(str(card))  # no placeholder survived


def test_squeezebert_card_reports_groups_and_per_seed_medians():
    results = squeezebert_results()
    card = build_model_card(results)
    text = card.text

    assert "compact_squeezebert" in card.data.tags
    assert "| Projection groups | q 2, k 4, v 4, post-attention 1, intermediate 8, output 4 |" in text
    assert "3 seeds" in text and "seeds 1, 2, 3" in text
    assert "| 2 | 77.81% | 77.02% |" in text
    assert "| **Median** | **79.15%** | **78.20%** |" in text
    # The teacher is a Hub id: linked, and named as is.
    hub_id = "sentence-transformers/all-MiniLM-L6-v2"
    assert f"[{hub_id}](https://huggingface.co/{hub_id})" in text
    assert "trust_remote_code=True" in text


def test_license_and_language_come_from_the_results_or_are_said_to_be_missing():
    card = build_model_card(distilled_results())
    assert card.data.license is None and card.data.language is None
    assert "license:" not in str(card).split("---")[1] and "language:" not in str(card).split("---")[1]
    assert "| License | not given when the model was trained (`--license`) |" in card.text
    assert "| Language | not given when the model was trained (`--language`) |" in card.text
    assert "text only" not in card.text  # no language is claimed

    results = distilled_results()
    results.update(license="cc-by-4.0", language=["en", "fr"])
    card = ModelCard(str(build_model_card(results)))
    assert (card.data.license, card.data.language) == ("cc-by-4.0", ["en", "fr"])
    assert "| License | cc-by-4.0 |" in card.text and "| Language | English, French |" in card.text
    assert "English and French text only" in card.text


def test_data_not_from_the_hub_gets_no_hub_dataset_id():
    """The built-in review split is hf_compact's own: no `datasets:` entry and no model-index result naming a Hub
    dataset (the Hub requires a dataset type there, so the measured metrics stay in the card's text)."""
    results = distilled_results()
    card = ModelCard(str(build_model_card(results)))
    metadata = str(card).split("---")[1]
    assert card.data.datasets is None and not card.data.eval_results
    assert "rotten_tomatoes" not in metadata and "model-index" not in metadata
    assert "| Accuracy | 80.25% | 79.26% |" in card.text  # the figures are still there
    results["dataset"]["description"] = "review snippets built into hf_compact, not a Hub dataset"
    assert "`rotten_tomatoes`: review snippets built into hf_compact, not a Hub dataset" in build_model_card(
        results).text


def test_metadata_lists_hub_dataset_and_license():
    results = distilled_results()
    results["dataset"]["hub_id"] = "cornell-movie-review-data/rotten_tomatoes"
    results.update(license="mit", language="fr")
    card = ModelCard(str(build_model_card(results)))
    assert card.data.datasets == ["cornell-movie-review-data/rotten_tomatoes"]
    assert (card.data.license, card.data.language) == ("mit", "fr")
    assert {r.dataset_type for r in card.data.eval_results} == {"cornell-movie-review-data/rotten_tomatoes"}
    assert metrics_of(card) == results["student"]["metrics"]
    assert {(r.task_type, r.dataset_split) for r in card.data.eval_results} == {("text-classification", "test")}
    assert "French text only" in card.text


@pytest.mark.parametrize(
    "path, field",
    [
        (("model_name",), "model_name"),
        (("task",), "task"),
        (("dataset",), "dataset"),
        (("dataset", "name"), "dataset.name"),
        (("student", "metrics"), "student.metrics"),
        (("student", "parameters"), "student.parameters"),
        (("student",), "student"),
    ],
)
def test_missing_required_field_is_named(path, field):
    results = distilled_results()
    container = results
    for key in path[:-1]:
        container = container[key]
    del container[path[-1]]
    with pytest.raises(ValueError, match=re.escape(f"'{field}'")):
        build_model_card(results)


def test_missing_field_in_results_file_names_the_file(tmp_path):
    results = finetuned_results()
    del results["model"]["parameters"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"'model\.parameters'.*results\.json"):
        write_model_card(tmp_path / "card", tmp_path / "results.json")
    assert not (tmp_path / "card" / "README.md").exists()


def test_unsupported_task_is_rejected_with_choices():
    results = finetuned_results()
    results["task"] = "summarization"
    with pytest.raises(ValueError, match="summarization.*text-classification"):
        build_model_card(results)


def test_results_file_and_config_json_of_the_folder(tmp_path):
    results = distilled_results()
    config = results.pop("config")
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = ModelCard.load(write_model_card(tmp_path, tmp_path / "results.json")).text
    assert "| Layers | 3 |" in text and "| Hidden size | 384 |" in text and "MFLOPs" in text


def test_unmeasured_values_never_become_placeholders():
    results = distilled_results()
    results["dataset"]["hub_id"] = "cornell-movie-review-data/rotten_tomatoes"
    results["student"]["metrics"]["f1"] = math.nan
    results["student"]["file_size_bytes"] = None
    results["speed"]["hardware"] = None
    card = build_model_card(results)
    assert "f1" not in metrics_of(card)
    assert "| F1 |" not in card.text and "Weights file size" not in card.text
    check_card_text(str(card))


@pytest.mark.parametrize("placeholder", ["{{ model_name }}", "None", "nan", "TODO", "N/A"])
def test_check_card_text_rejects_placeholders(placeholder):
    with pytest.raises(ValueError, match="placeholder"):
        check_card_text(f"| Accuracy | {placeholder} |")
    check_card_text("Nonetheless, financial reviews are fine.")  # whole words only


def test_check_card_text_rejects_tokens(monkeypatch):
    with pytest.raises(ValueError, match="token"):
        check_card_text(f"pushed with {FAKE_TOKEN}")
    monkeypatch.setenv("HF_TOKEN", "a-private-value-123")
    with pytest.raises(ValueError, match="token"):
        check_card_text("name: a-private-value-123")


def test_comparison_from_results_gives_teacher_and_student_points():
    points = comparison_from_results(distilled_results())
    assert points == [
        {"name": "minilm-teacher", "accuracy": 0.8025, "latency_ms": 40.14, "role": "teacher"},
        {"name": "rt-compact-distilbert", "accuracy": 0.7926, "latency_ms": 17.11, "role": "student"},
    ]
    assert comparison_from_results(finetuned_results()) == []  # no latency measured


def save_tiny_classifier(folder, tokenizer_dir, dtype=None):
    """A tiny compact_distilbert classifier with its tokenizer saved in `folder` (weights in `dtype` if given)."""
    from transformers import BertTokenizer

    config = hf_compact.CompactDistilBertConfig(
        vocab_size=55, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    model = hf_compact.CompactDistilBertForSequenceClassification(config)
    (model.to(dtype) if dtype is not None else model).save_pretrained(folder)
    BertTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def test_usage_snippets_run_on_a_saved_folder(tmp_path, tokenizer_dir):
    folder = save_tiny_classifier(tmp_path / "model", tokenizer_dir)
    results = copy.deepcopy(distilled_results())
    results.pop("config")  # read from the folder's config.json
    text = ModelCard.load(write_model_card(folder, results, repo_id=str(folder))).text

    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(snippets) == 2 and "trust_remote_code=True" in snippets[0] and "import hf_compact" in snippets[1]
    for snippet in snippets:
        namespace = {}
        exec(compile(snippet, "<model card snippet>", "exec"), namespace)
        prediction = namespace["classifier"]("w1 w2 w3")
        assert prediction[0]["label"] in {"negative", "positive"}


def test_plot_is_written_atomically_as_png(tmp_path):
    target = tmp_path / "plots" / "accuracy.png"
    assert plot_accuracy_vs_latency(comparison_points(), target, title="Students") == str(target)
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in target.parent.iterdir()] == ["accuracy.png"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"accuracy": 79.3}, r"fraction in \[0, 1\].*0\.793"),
        ({"latency_ms": 0}, "positive number of milliseconds"),
        ({"role": "distilled"}, "teacher.*student.*baseline"),
        ({"name": ""}, "non-empty string"),
    ],
)
def test_plot_points_are_validated(change, message):
    points = comparison_points()
    points[1] = {**points[1], **change}
    with pytest.raises(ValueError, match=message):
        validate_points(points)


def test_template_ships_with_the_package():
    template = template_text()
    assert template.startswith("---\n{{ card_data }}\n---")
    assert "## Limitations" in template


def test_bert_config_names_give_the_architecture():
    results = finetuned_results()
    results["config"] = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                   intermediate_size=1024).to_dict()
    text = build_model_card(results).text
    assert "| Intermediate (feed-forward) size | 1024 |" in text
    assert f"{flops_per_token(BertConfig(**results['config']), 128) / 1e6:.1f} MFLOPs" in text


def test_finetune_recipe_results_with_agreement_teacher_are_not_called_distilled():
    """The fine-tuning recipe records a teacher only to measure agreement, and a minimal config dict."""
    results = finetuned_results()
    results["dataset"]["hub_id"] = "someone/reviews"
    results["model_type"] = "compact_distilbert"
    results["model"].update(name_or_path="distilbert/distilbert-base-uncased", file_size_bytes=None,
                            metrics={"accuracy": 0.81, "agreement": 0.9})
    results["teacher"] = {"name_or_path": "/tmp/teacher"}
    results["training"] = {"method": "fine-tuning with LoRA (r=8)", "epochs": 1, "seed": 7}
    results["config"] = {"model_type": "compact_distilbert", "n_layers": 2}  # defaults left out
    card = build_model_card(results)
    text = card.text

    assert "distillation" not in card.data.tags
    assert "fine-tuned from [distilbert/distilbert-base-uncased]" in text
    assert "Method: fine-tuning with LoRA (r=8) from" in text
    assert "| Metric | This model |" in text and "Retention" not in text
    assert "| Layers | 2 |" in text and "| Hidden size | 768 |" in text  # the class defaults filled in
    assert metrics_of(card) == {"accuracy": 0.81, "agreement": 0.9}


def test_training_set_up_and_grouped_initialisation_are_stated(tmp_path):
    results = squeezebert_results()
    results["training"].update(
        init="teacher layers; grouped projections fitted to the dense ones on 512 training examples",
        layer_map=[1, 3, 5], mixed_precision="bf16", dropout=0.0, frozen=["word embeddings"],
    )
    text = ModelCard.load(write_model_card(tmp_path, results)).text
    assert ("start as teacher layers 1, 3, 5 (0-based), embeddings and task head copied from the teacher; grouped "
            "projections fitted to the dense ones on 512 training examples") in text
    assert "Training set-up: bf16 autocast (weights kept and saved in float32); dropout 0; frozen: word embeddings" in text
    results["training"].update(mixed_precision="no", dropout=None, frozen=[])
    assert "Training set-up" not in ModelCard.load(write_model_card(tmp_path / "plain", results)).text


def test_usage_example_comes_from_the_data_never_a_movie_review(tmp_path, tokenizer_dir):
    results = distilled_results()
    results["dataset"]["example"] = 'The member said "None of this is new" N/A'
    text = build_model_card(results).text
    assert 'classifier("The member said \\"None of this is new\\" N/A")' in text  # a valid literal; not a placeholder
    assert "beautifully acted" not in text and "film" not in text

    del results["dataset"]["example"]  # an older results.json: a neutral text, still no review
    text = build_model_card(results).text
    assert 'classifier("Your text here.")' in text and "beautifully acted" not in text

    results = distilled_results()
    results.update(task="fill-mask")
    results["dataset"]["example"] = "The house votes on the budget tomorrow"
    text = build_model_card(results).text
    assert 'fill_mask("The house votes on the budget " + fill_mask.tokenizer.mask_token)' in text

    results.update(task="text-classification")
    results["dataset"].update(example="Is the bill passed?", example_pair="The bill passed on Tuesday.")
    text = build_model_card(results).text
    assert 'classifier({"text": "Is the bill passed?", "text_pair": "The bill passed on Tuesday."})' in text


def test_usage_example_is_cut_at_a_word_boundary():
    from hf_compact.model_card import usage_example

    assert usage_example(["EU", "leaders", "met"]) == "EU leaders met"
    long = " ".join(["word"] * 200)
    cut = usage_example(long)
    assert len(cut) <= 300 and cut.endswith("word") and long.startswith(cut)
    assert usage_example("  ") is None and usage_example(None) is None


def test_install_lines_work_and_name_the_transformers_release_the_model_code_needs():
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    from hf_compact.model_card import required_transformers

    # The one place the version lives: hf_compact's own requirement on transformers (pyproject.toml).
    requirement = next(Requirement(r) for r in requires("hf_compact") if Requirement(r).name == "transformers")
    assert requirement.specifier.contains("5.4.0") and not requirement.specifier.contains("5.3.0")
    assert required_transformers() == "5.4"
    text = build_model_card(distilled_results()).text
    assert "pip install hf_compact" not in text  # no package index serves it
    assert 'pip install "transformers>=5.4" torch' in text
    assert "from its source folder" in text and "pip install path/to/hf_compact" in text
    # A plain bert model needs neither hf_compact nor a particular release.
    text = build_model_card(finetuned_results()).text
    assert "pip install" not in text and "hf_compact" not in text.split("## How to use")[1]


def test_training_length_is_the_one_run():
    results = distilled_results()
    results["training"].update(epochs=0.15625, steps=5)  # a --max_steps 5 run with --epochs 3 asked for
    text = build_model_card(results).text
    assert "Hyperparameters: 5 optimizer steps (0.16 epochs), learning rate" in text and "3 epochs" not in text
    results["training"].update(epochs=2, steps=638)
    assert "638 optimizer steps (2 epochs)" in build_model_card(results).text
    results["training"].update(epochs=1.0, steps=1)
    assert "1 optimizer step (1 epoch)" in build_model_card(results).text


def adapter_results(base="someone/rt-compact-distilbert"):
    """A LoRA adapter saved by recipes/finetune.py for a compact base model whose head it trained from scratch."""
    results = finetuned_results()
    results.update(model_name="rt-lora", model_type="compact_distilbert", base_model=base)
    results["dataset"]["example"] = "w1 w2 w3"
    results["model"].update(name_or_path="/home/someone/runs/student", saved_as="adapter", trainable_parameters=5000,
                            file_size_bytes=20480,
                            base_model_kwargs={"num_labels": 2, "id2label": {"0": "negative", "1": "positive"},
                                               "label2id": {"negative": 0, "positive": 1},
                                               "ignore_mismatched_sizes": True})
    results["training"] = {"method": "fine-tuning with LoRA (r=4)", "epochs": 1, "steps": 20,
                           "lora": {"r": 4, "alpha": 16, "target_modules": ["q_lin", "v_lin"],
                                    "modules_to_save": ["pre_classifier", "classifier", "classifier"]}}
    results["config"] = {"model_type": "compact_distilbert", "n_layers": 2}
    return results


def test_adapter_card_is_a_peft_card():
    card = ModelCard(str(build_model_card(adapter_results(), repo_id="me/rt-lora")))
    assert card.data.library_name == "peft" and card.data.base_model == "someone/rt-compact-distilbert"
    assert {"lora", "base_model:adapter:someone/rt-compact-distilbert"} <= set(card.data.tags)
    text = card.text
    assert "trust_remote_code" not in text  # the adapter folder holds no model code
    assert "AutoPeftModelForSequenceClassification.from_pretrained(\n    \"me/rt-lora\"" in text
    assert 'id2label={0: "negative", 1: "positive"}' in text and "ignore_mismatched_sizes=True" in text
    assert "import hf_compact" in text  # the base model is a compact type
    assert "LoRA adapter" in text and "| Trainable parameters (adapter and heads) | 5,000 |" in text
    assert "heads trained in full: pre_classifier, classifier" in text
    assert "| Adapter file size | 0.0 MB |" not in text and "| Adapter file size | 20.5 kB |" in text

    # A local base model is named by its folder name only, and is no metadata.
    card = ModelCard(str(build_model_card(adapter_results(base=None))))
    assert card.data.base_model is None and "/home/someone" not in str(card)
    assert not any(tag.startswith("base_model:") for tag in card.data.tags)


def test_adapter_usage_snippet_loads_the_adapter(tmp_path, tokenizer_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import BertTokenizer

    base = tmp_path / "base"
    config = hf_compact.CompactDistilBertConfig(vocab_size=55, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                                max_position_embeddings=64)
    hf_compact.CompactDistilBertForSequenceClassification(config).save_pretrained(base)
    model = hf_compact.CompactDistilBertForSequenceClassification.from_pretrained(
        base, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model.name_or_path = str(base)
    adapter = tmp_path / "adapter"
    lora = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_lin", "v_lin"])  # not PEFT's shared table
    get_peft_model(model, lora).save_pretrained(adapter)
    BertTokenizer.from_pretrained(tokenizer_dir).save_pretrained(adapter)
    results = adapter_results(base=None)
    del results["model"]["base_model_kwargs"]["ignore_mismatched_sizes"]
    text = ModelCard.load(write_model_card(adapter, results, repo_id=str(adapter))).text
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(snippets) == 1
    namespace = {}
    exec(compile(snippets[0], "<adapter card snippet>", "exec"), namespace)
    assert namespace["classifier"]("w1 w2")[0]["label"] in {"negative", "positive"}


def test_no_remote_code_claim_without_the_code_in_the_folder(tmp_path):
    folder = tmp_path / "model"
    config = hf_compact.CompactDistilBertConfig(vocab_size=55, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    hf_compact.CompactDistilBertForSequenceClassification(config).save_pretrained(folder)
    results = distilled_results()
    assert "trust_remote_code=True" in ModelCard.load(write_model_card(folder, results)).text
    (folder / "modeling_compact_distilbert.py").unlink()
    text = ModelCard.load(write_model_card(folder, results)).text
    assert "trust_remote_code" not in text and "import hf_compact" in text


# ---------------------------------------------------------------------------------------------------------------
# Lower-precision variants
# ---------------------------------------------------------------------------------------------------------------

CPU_FLAGS = ["fpu", "sse4_2", "avx", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]


def bf16_variant(**changes):
    return {"precision": "bf16", "engine": "torch", "passed_gate": True, "accuracy": 0.7918,
            "float32_accuracy": 0.7926, "accuracy_drop_points": 0.08, "tolerance_points": 0.5, "agreement": 0.9906,
            "max_score_difference": 0.012, "texts_per_s": 2093.4, "float32_texts_per_s": 1870.2, "single_text_ms": 3.41,
            "file_size_bytes": 22030617, "path": "variants/bf16", "cpu_flags": CPU_FLAGS, "threads": 2, **changes}


def int8_variant(**changes):
    return {"precision": "int8", "engine": "onnxruntime-dynamic", "passed_gate": False, "accuracy": 0.7712,
            "float32_accuracy": 0.7926, "accuracy_drop_points": 2.14, "tolerance_points": 0.5, "agreement": 0.9498,
            "texts_per_s": 2992.3, "float32_texts_per_s": 1870.2, "single_text_ms": 1.87, "file_size_bytes": 11520000,
            "reason": "accuracy fell 2.14 points, more than the tolerance of 0.5", "cpu_flags": CPU_FLAGS,
            "threads": 2, "trials": [{"engine": "onnxruntime-static", "texts_per_s": 2410.0, "accuracy": 0.7601,
                                      "passed_gate": False}], **changes}


def variants_results(*variants):
    results = distilled_results()
    results["variants"] = list(variants) if variants else [bf16_variant(), int8_variant()]
    return results


def variants_section(text):
    assert text.count("## Lower-precision variants") == 1
    return text.split("## Lower-precision variants", 1)[1].split("\n## ", 1)[0]


def test_variants_are_listed_with_their_gate_and_only_saved_ones_get_a_snippet():
    card = build_model_card(variants_results(), repo_id="me/rt-compact-distilbert")
    section = variants_section(card.text)
    assert "| bf16 | torch | 79.18% | -0.08 | 99.06% | 2,093 (1.12x) | 3.4 | 22.0 MB | passed |" in section
    assert ("| int8 | onnxruntime-dynamic | 77.12% | -2.14 | 94.98% | 2,992 (1.60x) | 1.9 | 11.5 MB | "
            "refused: accuracy fell 2.14 points, more than the tolerance of 0.5 |") in section
    assert "float32 accuracy 79.26%" in section and "on 2 threads" in section
    assert "at most 0.5 points below the float32 model's" in section
    assert "on the machine measured: avx512_vnni, avx512_bf16, amx_bf16, amx_tile, avx2." in section
    assert "sse4_2" not in section and "avx512f," not in section  # flags that do not decide the engine
    assert "Only the variants that passed the gate and run faster than float32 here are saved" in section
    assert "The plot above" not in section  # no plot in this card

    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(snippets) == 1  # the refused int8 variant has no files, so no usage
    assert 'snapshot_download("me/rt-compact-distilbert", allow_patterns=["variants/bf16/*"])' in snippets[0]
    assert 'pipeline("text-classification", model=f"{download}/variants/bf16")' in snippets[0]
    assert "import hf_compact" in snippets[0]
    assert "variants/int8" not in section and "load_variant" not in section
    compile(snippets[0], "<variant snippet>", "exec")


def test_a_saved_int8_variant_loads_through_load_variant():
    variant = int8_variant(passed_gate=True, path="variants/int8", reason=None, accuracy_drop_points=0.21,
                           accuracy=0.7905)
    section = variants_section(build_model_card(variants_results(variant), repo_id="/data/runs/rt").text)
    assert "| int8 | onnxruntime-dynamic | 79.05% | -0.21 |" in section and "| passed |" in section
    assert "`pip install onnxruntime`" in section
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert snippet == ('from hf_compact.precision import load_variant\n\n'
                       'classifier = load_variant("/data/runs/rt/variants/int8")\n'
                       'print(classifier(["Your text here."]))\n')


def test_bf16_variant_snippet_runs_on_a_saved_variant_folder(tmp_path, tokenizer_dir):
    import torch

    folder = save_tiny_classifier(tmp_path / "model", tokenizer_dir)
    save_tiny_classifier(folder / "variants" / "bf16", tokenizer_dir, dtype=torch.bfloat16)
    card = build_model_card(variants_results(), repo_id=str(folder))
    (snippet,) = re.findall(r"```python\n(.*?)```", variants_section(card.text), flags=re.DOTALL)
    assert f'model="{folder}/variants/bf16"' in snippet
    namespace = {}
    exec(compile(snippet, "<variant snippet>", "exec"), namespace)
    assert namespace["classifier"].model.dtype == torch.bfloat16
    assert namespace["classifier"]("w1 w2 w3")[0]["label"] in {"negative", "positive"}


def test_no_variants_section_without_variants():
    for results in (distilled_results(), {**distilled_results(), "variants": []}):
        text = build_model_card(results).text
        assert "Lower-precision" not in text and "variants/" not in text


def test_variant_figures_absent_or_derived_are_never_placeholders():
    variant = {"precision": "bf16", "engine": "torch", "passed_gate": False, "accuracy": 0.7899,
               "float32_accuracy": 0.7926, "cpu_flags": ["sse4_2"]}
    section = variants_section(build_model_card(variants_results(variant)).text)
    unmeasured = " not measured |" * 4
    assert f"| bf16 | torch | 78.99% | -0.27 |{unmeasured} refused |" in section
    assert "none of the flags that speed up lower precision (avx512_vnni, avx512_bf16, amx*, avx2)" in section
    assert "Gate:" not in section  # no tolerance recorded
    assert "```python" not in section


def test_each_variant_is_a_point_of_the_plot(tmp_path, monkeypatch):
    import hf_compact.model_card as model_card

    drawn = []
    real_plot = model_card.plot_accuracy_vs_latency
    monkeypatch.setattr(model_card, "plot_accuracy_vs_latency",
                        lambda points, *args, **kwargs: drawn.append(points) or real_plot(points, *args, **kwargs))
    path = write_model_card(tmp_path, variants_results(), comparison=comparison_points())
    assert (tmp_path / "accuracy_vs_latency.png").read_bytes()[:8] == PNG_SIGNATURE

    marks = plot_marks(drawn[0])
    assert [mark["label"] for mark in marks] == [
        "teacher", "student", "TF-IDF + logistic regression",
        "rt-compact-distilbert bf16", "rt-compact-distilbert int8 (refused)",
    ]
    bf16, int8 = marks[3:]
    assert (bf16["hollow"], int8["hollow"]) == (False, True)
    assert bf16["label_offset"][1] < 0 < marks[1]["label_offset"][1]  # below, clear of the student's name above
    assert bf16["y"] == pytest.approx(79.18) and int8["y"] == pytest.approx(77.12)
    # Placed at the float32 model's latency (17.11 ms per batch) divided by the speed-up measured side by side.
    assert bf16["x"] == pytest.approx(17.11 * 1870.2 / 2093.4) and int8["x"] == pytest.approx(17.11 * 1870.2 / 2992.3)
    text = ModelCard.load(path).text
    assert "at the float32 model's latency divided by its speed-up (refused ones hollow)" in variants_section(text)
    assert "| rt-compact-distilbert bf16 |" not in text  # the comparison table lists only the models compared


def test_variant_points_without_the_float32_latency_use_the_batch_size():
    results = variants_results(bf16_variant(), int8_variant(accuracy=None), bf16_variant(texts_per_s=None,
                                                                                          precision="fp16"))
    results["speed"] = {"batch_size": 32}
    assert variant_points(results) == [{"name": "rt-compact-distilbert bf16", "accuracy": 0.7918,
                                        "latency_ms": pytest.approx(32000 / 2093.4), "role": "variant",
                                        "refused": False}]  # no accuracy or no speed: no point
    text = build_model_card(results, plot_file="accuracy_vs_latency.png").text
    assert "at the latency its texts/s give for a batch of 32 (refused ones hollow)" in variants_section(text)


@pytest.mark.parametrize(
    "point, message",
    [
        ({"name": "m int8", "accuracy": 0.77, "latency_ms": 10.0, "role": "variant", "refused": "yes"},
         "true or false"),
        ({"name": "m", "accuracy": 0.77, "latency_ms": 10.0, "role": "student", "refused": True}, "role is 'variant'"),
    ],
)
def test_refused_marks_only_variants(point, message):
    with pytest.raises(ValueError, match=rf"points\[3\]\['refused'\].*{message}"):
        validate_points(comparison_points() + [point])


AIRLINE_TWEETS = {
    "name": "airline tweets", "num_examples": 2670, "accuracy": 0.7816, "teacher_accuracy": 0.8011,
    "seed_accuracies": [0.7921, 0.7816, 0.7704],
    "description": "English tweets to six US airlines (February 2015), crowd-labelled, balanced; evaluation only.",
}


def out_of_domain_section(text):
    assert text.count("## Out-of-domain check") == 1
    return text.split("## Out-of-domain check", 1)[1].split("\n## ", 1)[0]


def test_out_of_domain_check_lists_each_set_with_the_teacher_and_retention():
    results = distilled_results()
    results["out_of_domain"] = [AIRLINE_TWEETS, {"name": "/home/someone/data/product_reviews.jsonl", "accuracy": 0.7,
                                                 "teacher_accuracy": 0.72, "retention": 0.9722}]
    text = build_model_card(results).text
    section = out_of_domain_section(text)
    assert "It was never trained or tuned on these texts" in section
    assert "the teacher was measured on the same texts" in section
    assert "| Set | Texts | Accuracy | Teacher accuracy | Retention |\n|---|---:|---:|---:|---:|\n" in section
    # Retention derived from the two accuracies where it was not recorded (0.7816 / 0.8011), as recorded otherwise.
    assert "\n| airline tweets | 2,670 | 78.16% | 80.11% | 97.6% |\n" in section
    assert "\n| product_reviews.jsonl | not recorded | 70.00% | 72.00% | 97.2% |\n" in section  # no local path
    assert ("- airline tweets (2,670 texts): English tweets to six US airlines (February 2015), crowd-labelled, "
            "balanced; evaluation only. The accuracy is the median over 3 seeds: 79.21%, 78.16%, 77.04%.\n") in section
    assert "- product_reviews.jsonl.\n" in section and "/home/someone" not in text
    assert text.index("## Results") < text.index("## Out-of-domain check") < text.index("## How to use")
    assert ("Beyond the out-of-domain check above (airline tweets, product_reviews.jsonl), its quality on text from "
            "other domains was not measured") in text
    check_card_text(build_model_card(results).text)


def test_out_of_domain_check_without_a_teacher_has_no_teacher_columns():
    results = finetuned_results()
    results["out_of_domain"] = [{"name": "airline tweets", "num_examples": 2670, "accuracy": 0.8011}]
    section = out_of_domain_section(build_model_card(results).text)
    assert "| Set | Texts | Accuracy |\n|---|---:|---:|\n| airline tweets | 2,670 | 80.11% |\n" in section
    assert "teacher" not in section.lower() and "Retention" not in section and "median" not in section


def test_no_out_of_domain_section_without_a_set():
    for results in (distilled_results(), {**distilled_results(), "out_of_domain": []}):
        text = build_model_card(results).text
        assert "Out-of-domain" not in text and "out-of-domain" not in text
        assert "Its quality on text from other domains was not measured and is likely lower." in text


def test_out_of_domain_figures_absent_are_never_placeholders():
    results = distilled_results()
    results["out_of_domain"] = [{"name": "tweets", "accuracy": 0.75, "retention": math.nan,
                                 "teacher_accuracy": None, "num_examples": None},
                                {"name": "reviews", "accuracy": 0.7, "retention": 0.95}]
    section = out_of_domain_section(build_model_card(results).text)
    assert "| tweets | not recorded | 75.00% | not measured | not measured |" in section
    assert "| reviews | not recorded | 70.00% | not measured | 95.0% |" in section


def test_a_variant_slower_than_float32_is_listed_as_not_kept():
    variant = int8_variant(passed_gate=True, path=None, accuracy_drop_points=0.1, accuracy=0.7916,
                           reason="slower than float32 on this machine (900.0 against 1000.0 texts/s)")
    section = variants_section(build_model_card(variants_results(variant), repo_id="me/rt").text)
    assert "| passed; not kept: slower than float32 on this machine (900.0 against 1000.0 texts/s) |" in section
    assert "load_variant" not in section  # nothing saved, so no usage
