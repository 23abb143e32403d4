"""The compact types everywhere transformers models go: Auto classes, pipeline, trust_remote_code, PEFT."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertTokenizer,
    pipeline,
)

import hf_compact
from hf_compact.model_types import COMPACT_TYPES


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]

CONFIGS = {
    "compact_distilbert": dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64),
    "compact_squeezebert": dict(
        vocab_size=99,
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        q_groups=2,
        k_groups=2,
        v_groups=2,
        post_attention_groups=1,
        intermediate_groups=4,
        output_groups=4,
    ),
}
AUTO_CLASSES = {
    "Model": AutoModel,
    "ForMaskedLM": AutoModelForMaskedLM,
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForTokenClassification": AutoModelForTokenClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForMultipleChoice": AutoModelForMultipleChoice,
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    # BertTokenizer(vocab_file=...) maps every word to [UNK] in transformers 5; from_pretrained reads the file.
    return BertTokenizer.from_pretrained(folder)


def _inputs(model_type, head):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 99, (2, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    if head == "ForMultipleChoice":
        return {"input_ids": input_ids.unsqueeze(0), "attention_mask": attention_mask.unsqueeze(0)}
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _first_output(output):
    return output.logits if hasattr(output, "logits") and output.logits is not None else output[0]


@pytest.mark.parametrize("head", list(AUTO_CLASSES))
@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_auto_classes_build_save_and_reload_every_head(model_type, head, tmp_path):
    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    auto_class = AUTO_CLASSES[head]
    torch.manual_seed(0)
    model = auto_class.from_config(config).eval()
    prefix = "CompactDistilBert" if model_type == "compact_distilbert" else "CompactSqueezeBert"
    assert type(model).__name__ == prefix + head
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "pytorch_model.bin").exists()
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    inputs = _inputs(model_type, head)
    with torch.no_grad():
        torch.testing.assert_close(_first_output(reloaded(**inputs)), _first_output(model(**inputs)))


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_saved_folder_carries_remote_code_and_a_complete_auto_map(model_type, tmp_path):
    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(saved["auto_map"]) == {"AutoConfig", *(f"AutoModel{h}" if h != "Model" else "AutoModel" for h in AUTO_CLASSES)}
    assert (tmp_path / f"configuration_{model_type}.py").exists()
    assert (tmp_path / f"modeling_{model_type}.py").exists()


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_pipeline_sentiment_analysis_on_a_saved_folder(model_type, tokenizer, tmp_path):
    config = AutoConfig.for_model(
        model_type, **CONFIGS[model_type], id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classifier = pipeline("sentiment-analysis", model=str(tmp_path), device="cpu")
    texts = ["w1 w2 w3", "w7 w8"]
    predictions = classifier(texts)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    if model_type == "compact_distilbert":
        encoded.pop("token_type_ids")
    with torch.no_grad():
        probabilities = model(**encoded).logits.softmax(-1)
    for prediction, row in zip(predictions, probabilities):
        assert prediction["label"] == config.id2label[int(row.argmax())]
        assert prediction["score"] == pytest.approx(float(row.max()), abs=1e-5)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockHfCompact(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_compact" or name.startswith("hf_compact."):
                raise ImportError("hf_compact is not installed here")
            return None

    sys.meta_path.insert(0, BlockHfCompact())
    import torch
    import transformers

    jobs_file, outputs_file = sys.argv[1:]
    try:
        import hf_compact  # noqa: F401
        raise SystemExit("hf_compact should not be importable in this check")
    except ImportError:
        pass
    outputs = {}
    for job in json.load(open(jobs_file)):
        head = job["head"]
        auto_class = getattr(transformers, "AutoModel" if head == "Model" else "AutoModel" + head)
        model = auto_class.from_pretrained(job["folder"], trust_remote_code=True).eval()
        assert "hf_compact" not in type(model).__module__, type(model).__module__
        inputs = {k: torch.tensor(v) for k, v in job["inputs"].items()}
        with torch.no_grad():
            output = model(**inputs)
        first = output.logits if getattr(output, "logits", None) is not None else output[0]
        outputs[job["name"]] = {"output": first.tolist(), "class": type(model).__name__}
    json.dump(outputs, open(outputs_file, "w"))
    """
)
REMOTE_HEADS = ["Model", "ForSequenceClassification", "ForMaskedLM", "ForMultipleChoice"]


@pytest.fixture(scope="module")
def remote_code_outputs(tmp_path_factory):
    """Each (model type, head) saved, then loaded with trust_remote_code in one interpreter without hf_compact."""
    root = tmp_path_factory.mktemp("remote")
    jobs, expected = [], {}
    for model_type in CONFIGS:
        config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
        for head in REMOTE_HEADS:
            name = f"{model_type}-{head}"
            torch.manual_seed(0)
            model = AUTO_CLASSES[head].from_config(config).eval()
            model.save_pretrained(root / name)
            inputs = _inputs(model_type, head)
            with torch.no_grad():
                expected[name] = (type(model).__name__, _first_output(model(**inputs)))
            jobs.append({"name": name, "head": head, "folder": str(root / name),
                         "inputs": {k: v.tolist() for k, v in inputs.items()}})
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(root / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(root / "jobs.json"), str(root / "out.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads((root / "out.json").read_text())
    return {name: (remote[name], expected[name]) for name in expected}


@pytest.mark.parametrize("head", REMOTE_HEADS)
@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_trust_remote_code_without_hf_compact_gives_identical_outputs(model_type, head, remote_code_outputs):
    remote, (class_name, expected) = remote_code_outputs[f"{model_type}-{head}"]
    assert remote["class"] == class_name
    torch.testing.assert_close(torch.tensor(remote["output"]), expected, atol=1e-6, rtol=0)


def test_a_folder_saved_as_one_head_loads_as_another_with_remote_code(tmp_path):
    config = AutoConfig.for_model("compact_distilbert", **CONFIGS["compact_distilbert"])
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    model = AutoModelForTokenClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(model).__name__ == "CompactDistilBertForTokenClassification"


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_lora_with_default_targets_trains_saves_and_reloads(model_type, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    hf_compact.register_peft()
    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(config)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, task_type="SEQ_CLS"))
    targets = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert targets == set(COMPACT_TYPES[model_type].lora_target_modules)
    inputs = _inputs(model_type, "ForSequenceClassification")
    labels = torch.tensor([0, 1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    torch.manual_seed(0)
    fresh_base = AutoModelForSequenceClassification.from_config(config)
    reloaded = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)


def test_lora_rank_not_divisible_by_groups_is_a_clear_error():
    from peft import LoraConfig, get_peft_model

    hf_compact.register_peft()
    config = AutoConfig.for_model("compact_squeezebert", **CONFIGS["compact_squeezebert"])
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(ValueError, match="rank is divisible by groups"):
        get_peft_model(model, LoraConfig(r=3, task_type="SEQ_CLS"))


def test_auto_tokenizer_falls_back_to_wordpiece(tokenizer, tmp_path):
    config = AutoConfig.for_model("compact_squeezebert", **CONFIGS["compact_squeezebert"])
    config.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("w1 w2")["input_ids"] == tokenizer("w1 w2")["input_ids"]
