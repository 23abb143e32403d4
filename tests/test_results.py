"""The typed results record: every results.json written so far loads, round-trips and builds its card; type errors
name the field and the file; the recipes' card inputs come from the argument dataclasses."""

import json
import math
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_compact.arguments import CardArguments, DataArguments
from hf_compact.model_card import PLOT_FILENAME, build_model_card
from hf_compact.results import (
    DatasetRecord,
    EngineTrial,
    ModelRecord,
    OutOfDomainRecord,
    RunResults,
    SeedRecord,
    SpeedRecord,
    TrainingRecord,
    VariantRecord,
    card_inputs,
)


COMMITTED = sorted((Path(__file__).resolve().parent.parent / "model_cards").glob("*/results.json"))


def minimal(**fields):
    return {
        "model_name": "rt-student",
        "model_type": "compact_distilbert",
        "task": "text-classification",
        "dataset": {"name": "reviews.csv", "split": "test", "num_examples": 200},
        "student": {"parameters": 11_000_000, "metrics": {"accuracy": 0.81}},
        **fields,
    }


VARIANTS = [
    {"precision": "bf16", "engine": "torch", "passed_gate": True, "accuracy": 0.8, "float32_accuracy": 0.81,
     "accuracy_drop_points": 1.0, "tolerance_points": 1.5, "agreement": 0.97, "max_score_difference": 0.02,
     "texts_per_s": 550.0, "float32_texts_per_s": 500.0, "single_text_ms": 4.2, "file_size_bytes": 22_000_000,
     "path": "variants/bf16", "cpu_flags": ["avx2", "avx512_bf16"], "threads": 2},
    {"precision": "int8", "engine": "onnxruntime-dynamic", "passed_gate": False, "accuracy": 0.77,
     "float32_accuracy": 0.81, "texts_per_s": 900.0, "float32_texts_per_s": 500.0,
     "reason": "accuracy fell 4.00 points, more than the tolerance of 1.5", "measured_on": "a newer reader's field",
     "trials": [{"engine": "onnxruntime-static", "texts_per_s": 800.0, "accuracy": 0.75, "passed_gate": False},
                {"engine": "onnxruntime-dynamic", "texts_per_s": 900.0, "accuracy": 0.77, "passed_gate": False}]},
]


OUT_OF_DOMAIN = [
    {"name": "airline tweets", "description": "English tweets to six US airlines, never trained on",
     "num_examples": 2670, "accuracy": 0.78, "teacher_accuracy": 0.8, "retention": 0.975,
     "seed_accuracies": [0.79, 0.78, 0.77], "labelled_by": "a newer reader's field"},
    {"name": "product reviews", "accuracy": 0.7},
]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: path.parent.name)
def test_committed_results_round_trip_and_build_their_card(path):
    data = json.loads(path.read_text())
    results = RunResults.load(path)
    assert results.to_dict() == data
    assert RunResults.from_dict(results.to_dict()) == results
    assert "## Results" in build_model_card(results).text


def test_committed_results_are_read_into_typed_records():
    results = RunResults.load(COMMITTED[0].parent)  # the folder holding results.json
    assert isinstance(results.training.seeds[0], SeedRecord) and results.training.seeds[0].seed == 1
    assert results.speed.sequence_length == "real" and isinstance(results.speed.batch_size, int)
    assert results.measured is results.student and results.is_distilled and not results.is_adapter


def test_unknown_keys_are_kept_at_every_level(tmp_path):
    data = minimal(future_field={"a": 1}, speed={"student_ms": 10.0, "cpu_flags": ["avx2"]})
    data["student"]["kernels"] = "measured"
    results = RunResults.from_dict(data)
    assert results.extra == {"future_field": {"a": 1}} and results.speed.extra == {"cpu_flags": ["avx2"]}
    path = results.save(tmp_path / "results.json")
    assert json.loads(Path(path).read_text()) == data
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["student"].update(parameters="many"), r"'student\.parameters'.*is 'many'; it must be a whole number"),
        (lambda d: d["student"].update(parameters=1.5), r"'student\.parameters'.*a whole number"),
        (lambda d: d.update(training={"seeds": [{"seed": 1, "accuracy": 0.8}, {"seed": 2, "accuracy": "high"}]}),
         r"'training\.seeds\[1\]\.accuracy'.*a number"),
        (lambda d: d.update(speed={"sequence_length": [128]}), r"'speed\.sequence_length'.*a whole number or a string"),
        (lambda d: d.update(dataset="reviews"), r"'dataset'.*a JSON object"),
        (lambda d: d.update(training={"teacher_cache": "yes"}), r"'training\.teacher_cache'.*true or false"),
        (lambda d: d.update(variants=[VARIANTS[0], {**VARIANTS[1], "passed_gate": "false"}]),
         r"'variants\[1\]\.passed_gate'.*is 'false'; it must be true or false"),
        (lambda d: d.update(variants=[{**VARIANTS[0], "texts_per_s": "fast"}]),
         r"'variants\[0\]\.texts_per_s'.*is 'fast'; it must be a number"),
        (lambda d: d.update(variants=[{**VARIANTS[1], "trials": [{"engine": "torch", "accuracy": "0.7"}]}]),
         r"'variants\[0\]\.trials\[0\]\.accuracy'.*a number"),
        (lambda d: d.update(variants=[{k: v for k, v in VARIANTS[0].items() if k != "passed_gate"}]),
         r"Required field 'variants\[0\]\.passed_gate' is missing"),
        (lambda d: d.update(variants=VARIANTS[0]), r"'variants'.*a list"),
        (lambda d: d.update(out_of_domain=OUT_OF_DOMAIN[1]), r"'out_of_domain'.*a list"),
        (lambda d: d.update(out_of_domain=[OUT_OF_DOMAIN[0], {**OUT_OF_DOMAIN[1], "accuracy": "0.7"}]),
         r"'out_of_domain\[1\]\.accuracy'.*is '0\.7'; it must be a number"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[1], "num_examples": 2670.5}]),
         r"'out_of_domain\[0\]\.num_examples'.*a whole number"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[0], "seed_accuracies": [0.79, "0.78", 0.77]}]),
         r"'out_of_domain\[0\]\.seed_accuracies\[1\]'.*a number"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[0], "seed_accuracies": 0.78}]),
         r"'out_of_domain\[0\]\.seed_accuracies'.*a list"),
        (lambda d: d.update(out_of_domain=[{"accuracy": 0.7}]),
         r"Required field 'out_of_domain\[0\]\.name' is missing.*short name"),
        (lambda d: d.update(out_of_domain=[{"name": "tweets", "accuracy": None}]),
         r"Required field 'out_of_domain\[0\]\.accuracy' is missing"),
        (lambda d: d.update(out_of_domain=[{"name": "tweets", "accuracy": 78.2}]),
         r"'out_of_domain\[0\]\.accuracy'.*is 78\.2; it must be a fraction between 0 and 1"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[0], "teacher_accuracy": 80.0, "retention": None}]),
         r"'out_of_domain\[0\]\.teacher_accuracy'.*a fraction between 0 and 1"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[0], "seed_accuracies": [0.79, 0.78, 1.5]}]),
         r"'out_of_domain\[0\]\.seed_accuracies\[2\]'.*a fraction between 0 and 1"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[0], "accuracy": 0.79, "retention": 0.9875}]),
         r"'out_of_domain\[0\]\.accuracy'.*is 0\.79; it must be the median of its seed_accuracies \(0\.78\)"),
        (lambda d: d.update(out_of_domain=[{**OUT_OF_DOMAIN[0], "retention": 0.78}]),
         r"'out_of_domain\[0\]\.retention'.*is 0\.78; it must be accuracy / teacher_accuracy"),
    ],
)
def test_a_wrong_type_names_the_field_and_the_file(tmp_path, change, message):
    data = minimal()
    change(data)
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as error:
        RunResults.load(tmp_path / "results.json")
    assert str(tmp_path / "results.json") in str(error.value)


def saved_and_loaded(data, folder):
    """`data` read, saved as results.json (unchanged) and loaded again, checked to round-trip."""
    path = RunResults.from_dict(data).save(folder / "results.json")
    assert json.loads(Path(path).read_text()) == data
    results = RunResults.load(path)
    assert results.to_dict() == data and RunResults.from_dict(results.to_dict()) == results
    return results


def test_variants_round_trip_through_results_json(tmp_path):
    results = saved_and_loaded(minimal(variants=VARIANTS), tmp_path)
    bf16, int8 = results.variants
    assert isinstance(bf16, VariantRecord) and bf16.passed_gate is True and bf16.path == "variants/bf16"
    assert int8.passed_gate is False and int8.path is None and int8.extra == {"measured_on": "a newer reader's field"}
    assert int8.trials == [
        EngineTrial(engine="onnxruntime-static", texts_per_s=800.0, accuracy=0.75, passed_gate=False),
        EngineTrial(engine="onnxruntime-dynamic", texts_per_s=900.0, accuracy=0.77, passed_gate=False),
    ]


def test_out_of_domain_sets_round_trip_through_results_json(tmp_path):
    tweets, reviews = saved_and_loaded(minimal(out_of_domain=OUT_OF_DOMAIN), tmp_path).out_of_domain
    assert tweets == OutOfDomainRecord(
        name="airline tweets", description="English tweets to six US airlines, never trained on", num_examples=2670,
        accuracy=0.78, teacher_accuracy=0.8, retention=0.975, seed_accuracies=[0.79, 0.78, 0.77],
        extra={"labelled_by": "a newer reader's field"},
    )
    assert reviews == OutOfDomainRecord(name="product reviews", accuracy=0.7)
    assert "out_of_domain" not in RunResults.from_dict(minimal()).to_dict()  # absent, not an empty list


def test_out_of_domain_figures_agree_to_the_precision_the_card_shows():
    # Medians and ratios computed from float32 accuracies differ from the float64 ones in the last digits only.
    record = {**OUT_OF_DOMAIN[0], "accuracy": 0.78 + 1e-6, "retention": 0.975 + 1e-5}
    assert RunResults.from_dict(minimal(out_of_domain=[record])).out_of_domain[0].accuracy == 0.78 + 1e-6
    even = {"name": "tweets", "accuracy": 0.775, "seed_accuracies": [0.77, 0.78]}  # the median of an even count
    assert RunResults.from_dict(minimal(out_of_domain=[even])).out_of_domain[0].seed_accuracies == [0.77, 0.78]


def test_variant_speedup_and_accuracy_change_come_from_its_measurements():
    bf16, int8 = RunResults.from_dict(minimal(variants=VARIANTS)).variants
    assert bf16.speedup == pytest.approx(1.1) and int8.speedup == pytest.approx(1.8)
    assert bf16.accuracy_change_points == -1.0  # the recorded drop, as a change
    assert int8.accuracy_change_points == pytest.approx(-4.0)  # from the two accuracies
    assert VariantRecord(precision="int8", engine="torch", passed_gate=False).accuracy_change_points is None
    assert VariantRecord(precision="int8", engine="torch", passed_gate=False, texts_per_s=10.0).speedup is None


def test_unmeasured_values_are_absent():
    data = minimal(speed={"student_ms": math.nan, "hardware": None})
    data["student"]["metrics"]["f1"] = math.nan
    results = RunResults.from_dict(data)
    assert results.student.metrics == {"accuracy": 0.81}
    assert results.speed.student_ms is None and "hardware" not in results.speed.to_dict()


def test_records_built_in_python_give_the_same_card_as_their_json():
    results = RunResults(
        model_name="rt-student", model_type="compact_distilbert", task="text-classification",
        dataset=DatasetRecord(name="reviews.csv", split="test", num_examples=200),
        student=ModelRecord(parameters=11_000_000, metrics={"accuracy": 0.81}),
        training=TrainingRecord(method="distillation", seeds=[SeedRecord(seed=1, metrics={"accuracy": 0.81})]),
        speed=SpeedRecord(student_ms=12.5, batch_size=32),
    )
    assert results.to_dict()["training"]["seeds"] == [{"seed": 1, "accuracy": 0.81}]
    assert str(build_model_card(results)) == str(build_model_card(results.to_dict()))


def test_card_inputs_come_from_the_argument_dataclasses(tmp_path):
    data = {"test": [{"text": "  A   first review  ", "label": 1}, {"text": "second", "label": 0}]}
    files = DataArguments(train_file=str(tmp_path / "reviews.csv"))
    card = CardArguments(license=" mit ", language="en, fr", dataset_description="short movie reviews")
    inputs = card_inputs(files, card, data, "test")
    assert inputs["license"] == "mit" and inputs["language"] == ["en", "fr"]
    assert inputs["dataset"] == DatasetRecord(name="reviews.csv", split="test", num_examples=2,
                                              source=str(tmp_path / "reviews.csv"), description="short movie reviews",
                                              example="A first review")

    hub = DataArguments(dataset_name="someone/reviews", dataset_config_name="plain")
    inputs = card_inputs(hub, CardArguments(language="en"), data, "test")
    assert (inputs["license"], inputs["language"]) == (None, "en")
    assert (inputs["dataset"].hub_id, inputs["dataset"].config, inputs["dataset"].name) == (
        "someone/reviews", "plain", "someone/reviews")
    assert card_inputs(hub, CardArguments()) == {"license": None, "language": None}
    results = RunResults(model_name="m", model_type="bert", task="text-classification",
                         model=ModelRecord(parameters=10, metrics={"accuracy": 0.5}),
                         **card_inputs(files, card, data, "test"))
    assert "license" in results.to_dict() and "short movie reviews" in build_model_card(results).text


def without_model_details(text):
    """The card without what the students' config.json (not in their results.json) fills: the Model details table
    and the longest input."""
    text = re.sub(r"; longer inputs must be truncated to \d+ tokens", "", text)
    return re.sub(r"## Model details\n.*?\n## ", "## ", text, flags=re.DOTALL)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: path.parent.name)
def test_committed_cards_are_what_their_results_json_gives(path):
    """The demo's committed cards are regenerated whenever the template changes: the card built now from each
    results.json (with the comparison table the card lists) is the committed one."""
    committed = ModelCard.load(path.parent / "README.md")
    points = [
        {"name": name, "role": role, "accuracy": float(accuracy.rstrip("%")) / 100, "latency_ms": float(latency)}
        for name, role, accuracy, latency in re.findall(
            r"^\| (.+?) \| (teacher|student|baseline) \| ([\d.]+%) \| ([\d.]+) \|$", committed.text, flags=re.MULTILINE)
    ]
    assert len(points) == 5
    card = build_model_card(path, comparison=points, plot_file=PLOT_FILENAME)
    assert card.data.to_dict() == committed.data.to_dict()
    assert without_model_details(card.text) == without_model_details(committed.text)
