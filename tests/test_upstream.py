"""save_as_upstream: a compact model saved as transformers' own distilbert / squeezebert folder, same numbers."""

import dataclasses
import json

import pytest
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_compact
from hf_compact.registration import AUTO_CLASSES
from test_modeling import FAMILIES, HEADS, _inputs, _max_difference
from test_tokenizers import SENTENCES


UPSTREAM_TYPES = {"compact_distilbert": "distilbert", "compact_squeezebert": "squeezebert"}


def _compact(family, head, sizes):
    """A compact model whose every weight (biases and LayerNorms included) is random, so each one is checked."""
    _, compact_prefix, _, compact_config, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = getattr(hf_compact, compact_prefix + head)(compact_config(**sizes)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("size_index", [0, 1])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_head_loads_into_transformers_own_class_with_the_same_outputs(family, head, size_index, tmp_path):
    compact = _compact(family, head, FAMILIES[family][4][size_index])
    hf_compact.save_as_upstream(compact, tmp_path)

    upstream_name = FAMILIES[family][0] + head
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == UPSTREAM_TYPES[family] and saved["architectures"] == [upstream_name]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]

    upstream, info = getattr(transformers, upstream_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    if getattr(compact.base_model, "pooler", "not a pooler head") is None:  # upstream's unused pooler: zeros
        assert all(not p.any() for p in upstream.base_model.pooler.parameters())
    auto = AUTO_CLASSES[head].from_pretrained(tmp_path)  # no trust_remote_code: transformers' own class
    assert type(auto).__name__ == upstream_name
    inputs = _inputs(family, head)
    with torch.no_grad():
        ours = compact(**inputs, output_hidden_states=True)
        for model in (upstream.eval(), auto.eval()):
            assert _max_difference(head, model(**inputs, output_hidden_states=True), ours, inputs) <= 1e-5


@pytest.mark.parametrize("target", ["compact_distilbert", "compact_squeezebert"])
def test_a_converted_minilm_student_saves_as_upstream_with_its_tokenizer(minilm_path, target, tmp_path):
    student = hf_compact.convert_to_compact(minilm_path, target, num_hidden_layers=3, head="ForSequenceClassification")
    hf_compact.save_as_upstream(student, tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(model).__name__ == FAMILIES[target][0] + "ForSequenceClassification"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer(SENTENCES)["input_ids"] == AutoTokenizer.from_pretrained(minilm_path)(SENTENCES)["input_ids"]
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    if target == "compact_distilbert":
        encoded.pop("token_type_ids")
    with torch.no_grad():
        torch.testing.assert_close(model(**encoded).logits, student(**encoded).logits, atol=1e-5, rtol=0)


def test_a_saved_compact_model_exports_with_a_given_tokenizer_and_no_remote_code(tokenizer_dir, tmp_path):
    compact = _compact("compact_distilbert", "ForSequenceClassification", FAMILIES["compact_distilbert"][4][0])
    compact.save_pretrained(tmp_path / "compact")  # records an auto_map naming the compact model code
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    folder = tmp_path / "upstream"
    hf_compact.save_as_upstream(compact, folder, tokenizer=tokenizer)
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.glob("*.py"))
    assert AutoTokenizer.from_pretrained(folder)("w1 w2 w3")["input_ids"] == tokenizer("w1 w2 w3")["input_ids"]


def test_what_upstream_cannot_represent_is_refused_before_writing(tmp_path):
    from peft import LoraConfig, get_peft_model

    hf_compact.register_peft()
    with pytest.raises(ValueError, match="compact_distilbert or compact_squeezebert"):
        hf_compact.save_as_upstream(transformers.BertModel(transformers.BertConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)),
            tmp_path / "bert")
    compact = _compact("compact_distilbert", "ForSequenceClassification", FAMILIES["compact_distilbert"][4][0])
    adapted = get_peft_model(compact, LoraConfig(r=4, task_type="SEQ_CLS"))
    with pytest.raises(ValueError, match="merge_and_unload"):
        hf_compact.save_as_upstream(adapted, tmp_path / "peft")
    with pytest.raises(ValueError, match=r"(?s)weights upstream lacks.*merge_and_unload"):
        hf_compact.save_as_upstream(adapted.base_model.model, tmp_path / "lora")
    assert not any(tmp_path.iterdir())
    hf_compact.save_as_upstream(adapted.merge_and_unload(), tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").exists()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_compact_config_field_exists_upstream(family):
    """Nothing to refuse in the configuration: every field but the informational teacher_layer_map is upstream's.
    A new compact-only option must make save_as_upstream refuse the models that use it."""
    _, _, upstream_config, compact_config, _ = FAMILIES[family]
    compact_fields = {field.name for field in dataclasses.fields(compact_config)}
    upstream_fields = {field.name for field in dataclasses.fields(upstream_config)}
    assert compact_fields - upstream_fields == {"teacher_layer_map"}
