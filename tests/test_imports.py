"""`import hf_compact` registers the model types with transformers' Auto classes and nothing more: no PEFT, no
change to transformers' pipelines, the heavy submodules loaded on first use. PEFT's defaults and the length-sorted
pipeline are explicit calls that do what they say, once however often they are called.

The checks run in one fresh interpreter, since this test session has long imported everything."""

import json
import subprocess
import sys
import textwrap

import pytest

import hf_compact


SCRIPT = textwrap.dedent(
    """
    import json, sys

    from transformers.pipelines import PIPELINE_REGISTRY

    entry = PIPELINE_REGISTRY.supported_tasks["text-classification"]
    pipeline_before = entry["impl"]

    import hf_compact

    report = {
        "peft_imported": "peft" in sys.modules,
        "loaded_submodules": sorted(name for name in sys.modules if name.startswith("hf_compact.")),
        "pipeline_untouched": entry["impl"] is pipeline_before,
    }

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    config = AutoConfig.for_model("compact_distilbert", vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    report["auto_model"] = type(AutoModelForSequenceClassification.from_config(config)).__name__
    report["auto_tokenizer"] = TOKENIZER_MAPPING[type(config)].__name__

    report["lazy_function_module"] = hf_compact.convert_to_compact.__module__
    report["lazy_submodule"] = hf_compact.grouped_init.__name__
    try:
        hf_compact.no_such_name
    except AttributeError as error:
        report["unknown_name"] = str(error)

    import hf_compact.inference
    report["pipeline_untouched_by_importing_inference"] = entry["impl"] is pipeline_before
    hf_compact.inference.enable_length_sorted_pipeline()
    hf_compact.inference.enable_length_sorted_pipeline()
    report["pipeline_enabled"] = entry["impl"] is not pipeline_before
    hf_compact.inference.disable_length_sorted_pipeline()
    report["pipeline_restored"] = entry["impl"] is pipeline_before

    from peft import LoraConfig, LoHaConfig, get_peft_model
    from peft.utils import constants

    def adapter_targets(peft_config):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForSequenceClassification.from_config(config), peft_config)
        return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                       if hasattr(module, "lora_A") or hasattr(module, "hada_w1_a")})

    lora_table = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    report["peft_untouched"] = "compact_distilbert" not in lora_table
    try:
        adapter_targets(LoraConfig(r=4, task_type="SEQ_CLS"))
    except ValueError as error:
        report["lora_before"] = str(error)
    tables = hf_compact.register_peft()
    snapshot = {name: dict(getattr(constants, name)) for name in tables}
    report["tables"] = tables
    report["tables_again"] = hf_compact.register_peft()
    report["idempotent"] = all(getattr(constants, name) == before for name, before in snapshot.items())
    report["entries"] = {name: {t: getattr(constants, name).get(t) for t in ("compact_distilbert", "compact_squeezebert")}
                         for name in tables}
    report["lora_after"] = adapter_targets(LoraConfig(r=4, task_type="SEQ_CLS"))
    report["loha_after"] = adapter_targets(LoHaConfig(r=4, task_type="SEQ_CLS"))
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def fresh_import():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_leaves_peft_and_the_pipelines_alone(fresh_import):
    assert fresh_import["peft_imported"] is False
    assert fresh_import["pipeline_untouched"] is True
    assert fresh_import["peft_untouched"] is True


def test_import_loads_only_what_registration_needs(fresh_import):
    loaded = set(fresh_import["loaded_submodules"])
    assert {"hf_compact.registration", "hf_compact.model_types"} <= loaded
    assert not loaded & {"hf_compact.conversion", "hf_compact.grouped_init", "hf_compact.upstream",
                         "hf_compact.inference", "hf_compact.model_card", "hf_compact.hub"}


def test_import_registers_the_auto_classes_and_tokenizer(fresh_import):
    assert fresh_import["auto_model"] == "CompactDistilBertForSequenceClassification"
    assert fresh_import["auto_tokenizer"] == "CompactWordPieceTokenizer"


def test_heavy_names_load_on_first_use(fresh_import):
    assert fresh_import["lazy_function_module"] == "hf_compact.conversion"
    assert fresh_import["lazy_submodule"] == "hf_compact.grouped_init"
    assert "no_such_name" in fresh_import["unknown_name"]


def test_length_sorted_pipeline_only_when_asked(fresh_import):
    assert fresh_import["pipeline_untouched_by_importing_inference"] is True
    assert fresh_import["pipeline_enabled"] is True
    assert fresh_import["pipeline_restored"] is True


def test_register_peft_gives_lora_its_default_targets(fresh_import):
    assert "target_modules" in fresh_import["lora_before"]  # PEFT's own error: it knows no default for the type
    assert fresh_import["lora_after"] == ["q_lin", "v_lin"]
    assert fresh_import["loha_after"] == ["q_lin", "v_lin"]


def test_register_peft_writes_its_listed_tables_once(fresh_import):
    tables = fresh_import["tables"]
    assert "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING" in tables
    assert len(tables) == len(set(tables)) > 1
    assert fresh_import["tables_again"] == tables and fresh_import["idempotent"] is True
    for entries in fresh_import["entries"].values():
        assert entries == {"compact_distilbert": ["q_lin", "v_lin"], "compact_squeezebert": ["query", "value"]}


def test_the_public_names_are_all_reachable():
    for name in hf_compact.__all__:
        assert getattr(hf_compact, name) is not None
    assert set(hf_compact.__all__) <= set(dir(hf_compact))
    assert hf_compact.save_as_upstream is hf_compact.upstream.save_as_upstream
