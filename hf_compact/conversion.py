"""Build a compact student from an existing BERT-family model.

`convert_to_compact` takes a `bert`, `distilbert`, `squeezebert` (or compact) model, in memory or as a folder, and
returns a `compact_distilbert` or `compact_squeezebert` model with the same task head and the teacher's weights:

- Embeddings are copied. A DistilBERT-style student has no token-type embeddings, so the teacher's token-type 0
  vector is folded into the position embeddings: for single-segment inputs the student's embeddings equal the
  teacher's exactly.
- Each student layer is initialised from one teacher layer, chosen by `hf_compact.layer_map.default_layer_map`
  (DistilBERT's recipe: keep a subset of the layers) unless `layers` names them. The chosen indices are stored in
  `student.config.teacher_layer_map`.
- Dense projections map one to one. For a SqueezeBERT-style student, a grouped 1x1 convolution with `g` groups
  takes the block-diagonal part of the dense weight: group `k` keeps the rows and columns of block `k`. With all
  groups set to 1 the student is exactly the teacher; with more groups it starts from the block-diagonal part and
  learns the rest during distillation. `hf_compact.fit_grouped_projections` gives a much closer start: each group
  refitted by least squares to the dense projection's output on real activations (recipes/distill.py does this).
- Heads: classifiers, token classifiers, QA and MLM heads are copied. The sentence-level pooler (BERT and SqueezeBERT:
  dense + tanh) initialises DistilBERT's `pre_classifier` (dense + ReLU) and the other way round; the activation
  differs, so such a head is a starting point for training, not an exact copy.
- The tokenizer travels: the teacher's (from its folder or Hub name, or from the folder an in-memory teacher was
  loaded from), or the one given as `tokenizer=`, is attached to the student as `student.tokenizer`, and
  `student.save_pretrained(folder)` saves it into the folder beside the weights.

Example:

```python
>>> from transformers import BertConfig, BertForSequenceClassification
>>> import hf_compact
>>> teacher = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=4,
...                                                    num_attention_heads=4, intermediate_size=64))
>>> student = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=2)
>>> type(student).__name__, student.config.teacher_layer_map
('CompactDistilBertForSequenceClassification', [1, 3])
```
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from .layer_map import default_layer_map
from .model_types import COMPACT_MODEL_TYPES, SOURCE_MODEL_TYPES, SQUEEZEBERT_GROUP_FIELDS, family, is_grouped
from .registration import AUTO_CLASSES, compact_config_class, compact_model_class, has_vocabulary


logger = logging.get_logger(__name__)

# The types a student may have (the name recipes/distill.py reads; the list itself is hf_compact.model_types').
TARGET_MODEL_TYPES = COMPACT_MODEL_TYPES
SUPPORTED_HEADS = tuple(AUTO_CLASSES)
# Upstream architectures whose weights map onto one of the supported heads.
_HEAD_ALIASES = {"ForPreTraining": "ForMaskedLM"}
# Config fields whose change would alter the shape of a copied weight, by the student's family.
_SHAPE_FIELDS = {
    "distilbert": {"dim": "hidden_size", "hidden_dim": "intermediate_size", "vocab_size": "vocab_size"},
    "squeezebert": {
        "hidden_size": "hidden_size",
        "embedding_size": "hidden_size",
        "intermediate_size": "intermediate_size",
        "vocab_size": "vocab_size",
    },
}


def convert_to_compact(
    source: PreTrainedModel | str | os.PathLike,
    target_type: str = "compact_distilbert",
    *,
    layers: list[int] | None = None,
    num_hidden_layers: int | None = None,
    layer_strategy: str = "uniform",
    head: str | None = None,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    **config_overrides: Any,
) -> PreTrainedModel:
    """Build a compact student initialised from a BERT-family model.

    Args:
        source: a `bert`, `distilbert`, `squeezebert`, `compact_distilbert` or `compact_squeezebert` model, or the
            local folder / Hub name of one (loaded with safetensors only).
        target_type: `"compact_distilbert"` or `"compact_squeezebert"`.
        layers: 0-based teacher layers to copy, one per student layer, in order. Overrides `num_hidden_layers`.
        num_hidden_layers: number of student layers; defaults to half the teacher's (at least 1).
        layer_strategy: how layers are chosen when `layers` is not given (see `default_layer_map`).
        head: the task head to build (`"ForSequenceClassification"`, ...); defaults to the source's own head.
        tokenizer: the tokenizer the student saves with `save_pretrained` (a tokenizer, or a folder / Hub name to
            load one from); defaults to the teacher's, found where `source` (or an in-memory `source`'s
            `name_or_path` folder) was loaded from.
        config_overrides: other student config fields (dropouts, `*_groups` of a SqueezeBERT-style student, ...).
            Fields that would change a copied weight's shape (hidden size, intermediate size, vocabulary) raise.

    Returns:
        The student, in evaluation mode, with `config.teacher_layer_map` set and, when a tokenizer was found or
        given, `student.tokenizer`, which `student.save_pretrained` saves beside the weights.
    """
    if target_type not in TARGET_MODEL_TYPES:
        raise ValueError(f"target_type={target_type!r} is not a compact model type; use one of {TARGET_MODEL_TYPES}.")
    teacher = _load_source(source, head)
    src_type = teacher.config.model_type
    head = head or _head_of(teacher)
    if head not in SUPPORTED_HEADS:
        raise ValueError(f"head={head!r} cannot be converted; supported heads are {SUPPORTED_HEADS}.")

    hp = _source_hparams(teacher.config)
    _check_shape_overrides(target_type, hp, config_overrides)
    if layers is None:
        if num_hidden_layers is None:
            num_hidden_layers = max(1, hp["num_hidden_layers"] // 2)
        layers = default_layer_map(hp["num_hidden_layers"], num_hidden_layers, strategy=layer_strategy)
    layers = _check_layers(layers, hp["num_hidden_layers"])

    config = _student_config(teacher.config, target_type, hp, len(layers), config_overrides)
    config.teacher_layer_map = list(layers)
    student = compact_model_class(target_type, head)(config)

    canonical = _to_canonical(teacher.state_dict(), src_type, teacher.config)
    weights = _from_canonical(canonical, target_type, layers, config, student.base_model_prefix, head)
    expected = student.state_dict()
    for name, tensor in weights.items():
        if name not in expected:
            continue  # e.g. an MLM decoder weight when the student head has none
        if tuple(expected[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"Cannot copy {name}: the teacher gives shape {tuple(tensor.shape)}, the student expects "
                f"{tuple(expected[name].shape)}."
            )
    fresh = [name for name in expected if name not in weights]
    encoder_fresh = [name for name in fresh if ".layer" in name or "embeddings." in name]
    if encoder_fresh:
        raise RuntimeError(f"Conversion left encoder weights uninitialised: {encoder_fresh[:5]}")
    if fresh:
        logger.info("Weights of the student's head that start fresh (the teacher has no counterpart): %s", fresh)
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            if name in weights:
                tensor.copy_(weights[name].to(tensor.dtype))
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    tokenizer = _load_tokenizer(tokenizer) if tokenizer is not None else _teacher_tokenizer(source)
    if tokenizer is None:
        logger.warning(
            "No tokenizer was found with the teacher, so the student carries none. Pass `tokenizer=` to "
            "convert_to_compact, or save the teacher's tokenizer into the student's folder."
        )
    else:
        attach_tokenizer(student, tokenizer)
    return student.eval()


def attach_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Keep `tokenizer` as `model.tokenizer` and make this model's `save_pretrained` save it into the folder after
    the weights. Only this instance changes; its class and checkpoint format do not."""
    model.tokenizer = tokenizer
    # A partial of a module-level function, not a closure: copies and pickles of the model save themselves.
    model.save_pretrained = functools.partial(_save_pretrained_with_tokenizer, model)
    return model


def _save_pretrained_with_tokenizer(model: PreTrainedModel, save_directory: str | os.PathLike, *args, **kwargs):
    result = type(model).save_pretrained(model, save_directory, *args, **kwargs)
    if kwargs.get("is_main_process", True):
        model.tokenizer.save_pretrained(save_directory)
    return result


def _load_tokenizer(tokenizer: PreTrainedTokenizerBase | str | os.PathLike) -> PreTrainedTokenizerBase:
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    return AutoTokenizer.from_pretrained(tokenizer)


def _teacher_tokenizer(source: PreTrainedModel | str | os.PathLike) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved where the teacher came from, or None when there is none with a vocabulary."""
    location = source.name_or_path if isinstance(source, PreTrainedModel) else source
    if isinstance(source, PreTrainedModel) and not (location and os.path.isdir(location)):
        return None  # built in memory, or loaded from the Hub: nothing local to look in
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as error:
        logger.info("No tokenizer loads from %s: %s", location, error)
        return None
    return tokenizer if has_vocabulary(tokenizer) else None


def _load_source(source: PreTrainedModel | str | os.PathLike, head: str | None) -> PreTrainedModel:
    if isinstance(source, PreTrainedModel):
        model_type = source.config.model_type
        if model_type not in SOURCE_MODEL_TYPES:
            raise ValueError(_family_error(model_type))
        return source
    config = AutoConfig.from_pretrained(source)
    if config.model_type not in SOURCE_MODEL_TYPES:
        raise ValueError(_family_error(config.model_type))
    import transformers

    architecture = head or _head_from_architectures(config)
    auto_name = "AutoModel" if architecture == "Model" else "AutoModel" + architecture
    auto_class = getattr(transformers, auto_name, transformers.AutoModel)
    return auto_class.from_pretrained(source, use_safetensors=True)


def _family_error(model_type: str) -> str:
    return (
        f"Cannot convert a {model_type!r} checkpoint: hf_compact converts BERT-family models of type "
        f"{SOURCE_MODEL_TYPES}. Distil from it instead (recipes/distill.py) with a student built from a config."
    )


def _head_from_architectures(config) -> str:
    for architecture in getattr(config, "architectures", None) or []:
        for suffix in (*SUPPORTED_HEADS, *_HEAD_ALIASES):
            if architecture.endswith(suffix):
                return _HEAD_ALIASES.get(suffix, suffix)
    return "Model"


def _head_of(model: PreTrainedModel) -> str:
    name = type(model).__name__
    for suffix in sorted((*SUPPORTED_HEADS, *_HEAD_ALIASES), key=len, reverse=True):
        if name.endswith(suffix):
            return _HEAD_ALIASES.get(suffix, suffix)
    raise ValueError(f"Cannot tell the task head of {name}; pass head= one of {SUPPORTED_HEADS}.")


def _source_hparams(config) -> dict[str, Any]:
    """The sizes every BERT-family config has, under one set of names."""
    if family(config.model_type) == "distilbert":
        return {
            "hidden_size": config.dim,
            "num_hidden_layers": config.n_layers,
            "num_attention_heads": config.n_heads,
            "intermediate_size": config.hidden_dim,
            "hidden_act": config.activation,
            "hidden_dropout_prob": config.dropout,
            "attention_probs_dropout_prob": config.attention_dropout,
            "layer_norm_eps": 1e-12,
            "type_vocab_size": None,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
        }
    return {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "layer_norm_eps": config.layer_norm_eps,
        "type_vocab_size": config.type_vocab_size,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
    }


def _check_shape_overrides(target_type: str, hp: dict[str, Any], overrides: dict[str, Any]) -> None:
    for field, source_name in _SHAPE_FIELDS[family(target_type)].items():
        if field in overrides and overrides[field] != hp[source_name]:
            raise ValueError(
                f"{field}={overrides[field]} differs from the teacher's {source_name}={hp[source_name]}: weights "
                f"cannot be copied across sizes (a mismatched vocabulary would also mismatch the tokenizer). Keep "
                f"the teacher's {source_name}, or build the student from a config and distil it from scratch."
            )
    positions = overrides.get("max_position_embeddings")
    if positions is not None and positions > hp["max_position_embeddings"]:
        raise ValueError(
            f"max_position_embeddings={positions} exceeds the teacher's {hp['max_position_embeddings']}: the extra "
            f"positions would have no trained weights. Use at most {hp['max_position_embeddings']}."
        )


def _check_layers(layers: list[int], num_teacher_layers: int) -> list[int]:
    layers = [int(i) for i in layers]
    if not layers:
        raise ValueError("layers=[] selects no teacher layer; give at least one 0-based layer index.")
    bad = [i for i in layers if not 0 <= i < num_teacher_layers]
    if bad:
        raise ValueError(
            f"layers={layers} has indices {bad} outside the teacher's {num_teacher_layers} layers "
            f"(valid: 0..{num_teacher_layers - 1})."
        )
    return layers


def _student_config(teacher_config, target_type: str, hp: dict[str, Any], num_layers: int, overrides: dict):
    common = {
        "vocab_size": hp["vocab_size"],
        "max_position_embeddings": hp["max_position_embeddings"],
        "initializer_range": getattr(teacher_config, "initializer_range", 0.02),
        "pad_token_id": teacher_config.pad_token_id,
        "id2label": teacher_config.id2label,
        "label2id": teacher_config.label2id,
        "problem_type": teacher_config.problem_type,
        "tie_word_embeddings": getattr(teacher_config, "tie_word_embeddings", True),
    }
    if not is_grouped(target_type):
        if hp["layer_norm_eps"] != 1e-12:
            raise ValueError(
                f"The teacher's layer_norm_eps={hp['layer_norm_eps']} differs from the 1e-12 a DistilBERT-style "
                "model uses; convert to compact_squeezebert (which keeps layer_norm_eps) instead."
            )
        fields = {
            **common,
            "dim": hp["hidden_size"],
            "n_layers": num_layers,
            "n_heads": hp["num_attention_heads"],
            "hidden_dim": hp["intermediate_size"],
            "activation": hp["hidden_act"],
            "dropout": hp["hidden_dropout_prob"],
            "attention_dropout": hp["attention_probs_dropout_prob"],
        }
        if family(teacher_config.model_type) == "distilbert":
            for name in ("qa_dropout", "seq_classif_dropout", "sinusoidal_pos_embds"):
                fields[name] = getattr(teacher_config, name)
    else:
        fields = {
            **common,
            "hidden_size": hp["hidden_size"],
            "embedding_size": hp["hidden_size"],
            "num_hidden_layers": num_layers,
            "num_attention_heads": hp["num_attention_heads"],
            "intermediate_size": hp["intermediate_size"],
            "hidden_act": hp["hidden_act"],
            "hidden_dropout_prob": hp["hidden_dropout_prob"],
            "attention_probs_dropout_prob": hp["attention_probs_dropout_prob"],
            "layer_norm_eps": hp["layer_norm_eps"],
            "type_vocab_size": hp["type_vocab_size"] or 2,
        }
        if is_grouped(teacher_config.model_type):
            for name in SQUEEZEBERT_GROUP_FIELDS:
                fields[name] = getattr(teacher_config, name)
    fields.update(overrides)
    return compact_config_class(target_type)(**fields)


# --- weights -------------------------------------------------------------------------------------------------------
# The canonical form: {"embeddings": {...}, "layers": [{"q": (W, b), ...}], "heads": {...}}, with every projection
# as a dense (out, in) matrix and its bias.

_BERT_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_ln": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "out_ln": "output.LayerNorm",
}
_DISTILBERT_LAYER = {
    "q": "attention.q_lin",
    "k": "attention.k_lin",
    "v": "attention.v_lin",
    "attn_out": "attention.out_lin",
    "attn_ln": "sa_layer_norm",
    "ffn_in": "ffn.lin1",
    "ffn_out": "ffn.lin2",
    "out_ln": "output_layer_norm",
}
_SQUEEZEBERT_LAYER = {
    "q": "attention.query",
    "k": "attention.key",
    "v": "attention.value",
    "attn_out": "post_attention.conv1d",
    "attn_ln": "post_attention.layernorm",
    "ffn_in": "intermediate.conv1d",
    "ffn_out": "output.conv1d",
    "out_ln": "output.layernorm",
}
_SQUEEZEBERT_LAYER_GROUPS = {
    "q": "q_groups",
    "k": "k_groups",
    "v": "v_groups",
    "attn_out": "post_attention_groups",
    "ffn_in": "intermediate_groups",
    "ffn_out": "output_groups",
}
# By family: a compact type has its upstream type's layout.
_LAYOUT = {
    "bert": ("bert", "embeddings", "encoder.layer", _BERT_LAYER),
    "distilbert": ("distilbert", "embeddings", "transformer.layer", _DISTILBERT_LAYER),
    "squeezebert": ("transformer", "embeddings", "encoder.layers", _SQUEEZEBERT_LAYER),
}


def _block_diagonal_to_dense(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped 1x1 convolution weight (out, in/groups, 1) as the equivalent dense (out, in) matrix."""
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    out_per_group = out_channels // groups
    dense = weight.new_zeros(out_channels, in_per_group * groups)
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        cols = slice(g * in_per_group, (g + 1) * in_per_group)
        dense[rows, cols] = weight[rows, :, 0]
    return dense


def _dense_to_block_diagonal(dense: torch.Tensor, groups: int) -> torch.Tensor:
    """The block-diagonal part of a dense (out, in) matrix as a grouped 1x1 convolution weight (out, in/groups, 1)."""
    out_channels, in_channels = dense.shape
    out_per_group, in_per_group = out_channels // groups, in_channels // groups
    blocks = [
        dense[g * out_per_group : (g + 1) * out_per_group, g * in_per_group : (g + 1) * in_per_group]
        for g in range(groups)
    ]
    return torch.cat(blocks, dim=0).unsqueeze(-1).contiguous()


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split a state dict into the base model's weights (prefix removed) and the head's weights."""
    base, heads = {}, {}
    has_prefix = any(k.startswith(prefix + ".") for k in state_dict)
    for key, value in state_dict.items():
        if has_prefix and key.startswith(prefix + "."):
            base[key[len(prefix) + 1 :]] = value
        elif not has_prefix and (key.startswith("embeddings.") or key.startswith(("encoder.", "transformer."))):
            base[key] = value
        elif not has_prefix and key.startswith("pooler."):
            base[key] = value
        else:
            heads[key] = value
    return base, heads


def _to_canonical(state_dict: dict[str, torch.Tensor], model_type: str, config) -> dict[str, Any]:
    prefix, emb, layer_root, layer_names = _LAYOUT[family(model_type) or model_type]
    base, heads = _strip_prefix(state_dict, prefix)
    grouped = is_grouped(model_type)
    canonical: dict[str, Any] = {
        "word": base[f"{emb}.word_embeddings.weight"],
        "position": base[f"{emb}.position_embeddings.weight"],
        "token_type": base.get(f"{emb}.token_type_embeddings.weight"),
        "emb_ln": (base[f"{emb}.LayerNorm.weight"], base[f"{emb}.LayerNorm.bias"]),
        "layers": [],
        "heads": {},
    }
    for i in range(_source_hparams(config)["num_hidden_layers"]):
        layer = {}
        for part, name in layer_names.items():
            weight = base[f"{layer_root}.{i}.{name}.weight"]
            bias = base[f"{layer_root}.{i}.{name}.bias"]
            if grouped and part in _SQUEEZEBERT_LAYER_GROUPS:
                weight = _block_diagonal_to_dense(weight, getattr(config, _SQUEEZEBERT_LAYER_GROUPS[part]))
            layer[part] = (weight, bias)
        canonical["layers"].append(layer)

    out = canonical["heads"]
    if "pooler.dense.weight" in base:
        out["pooler"] = (base["pooler.dense.weight"], base["pooler.dense.bias"])
    if "pre_classifier.weight" in heads:
        out["pooler"] = (heads["pre_classifier.weight"], heads["pre_classifier.bias"])
    for name in ("classifier", "qa_outputs"):
        if f"{name}.weight" in heads:
            out[name] = (heads[f"{name}.weight"], heads[f"{name}.bias"])
    if "cls.predictions.transform.dense.weight" in heads:  # BERT / SqueezeBERT MLM head
        out["mlm_transform"] = (heads["cls.predictions.transform.dense.weight"], heads["cls.predictions.transform.dense.bias"])
        out["mlm_ln"] = (heads["cls.predictions.transform.LayerNorm.weight"], heads["cls.predictions.transform.LayerNorm.bias"])
        out["mlm_bias"] = heads.get("cls.predictions.decoder.bias", heads.get("cls.predictions.bias"))
        out["mlm_decoder"] = heads.get("cls.predictions.decoder.weight", canonical["word"])
    if "vocab_transform.weight" in heads:  # DistilBERT MLM head
        out["mlm_transform"] = (heads["vocab_transform.weight"], heads["vocab_transform.bias"])
        out["mlm_ln"] = (heads["vocab_layer_norm.weight"], heads["vocab_layer_norm.bias"])
        out["mlm_bias"] = heads["vocab_projector.bias"]
        out["mlm_decoder"] = heads.get("vocab_projector.weight", canonical["word"])
    return canonical


def _from_canonical(
    canonical: dict[str, Any], target_type: str, layers: list[int], config, base_prefix: str, head: str
) -> dict[str, torch.Tensor]:
    _, emb, layer_root, layer_names = _LAYOUT[family(target_type)]
    grouped = is_grouped(target_type)
    base_prefix = "" if head == "Model" else base_prefix + "."
    out: dict[str, torch.Tensor] = {}
    positions = config.max_position_embeddings
    position = canonical["position"][:positions].clone()
    token_type = canonical["token_type"]
    out[f"{emb}.word_embeddings.weight"] = canonical["word"]
    if not grouped:
        if token_type is not None:
            position = position + token_type[0]  # single-segment inputs always add token type 0
    else:
        if token_type is None:
            token_type = canonical["word"].new_zeros(config.type_vocab_size, canonical["word"].shape[1])
        out[f"{emb}.token_type_embeddings.weight"] = token_type[: config.type_vocab_size]
    out[f"{emb}.position_embeddings.weight"] = position
    out[f"{emb}.LayerNorm.weight"], out[f"{emb}.LayerNorm.bias"] = canonical["emb_ln"]

    for student_index, teacher_index in enumerate(layers):
        layer = canonical["layers"][teacher_index]
        for part, name in layer_names.items():
            weight, bias = layer[part]
            if grouped and part in _SQUEEZEBERT_LAYER_GROUPS:
                weight = _dense_to_block_diagonal(weight, getattr(config, _SQUEEZEBERT_LAYER_GROUPS[part]))
            out[f"{layer_root}.{student_index}.{name}.weight"] = weight
            out[f"{layer_root}.{student_index}.{name}.bias"] = bias
    out = {base_prefix + k: v for k, v in out.items()}

    heads = canonical["heads"]
    if "pooler" in heads:
        if not grouped:
            out["pre_classifier.weight"], out["pre_classifier.bias"] = heads["pooler"]
        else:
            out[base_prefix + "pooler.dense.weight"], out[base_prefix + "pooler.dense.bias"] = heads["pooler"]
    for name in ("classifier", "qa_outputs"):
        if name in heads:
            out[f"{name}.weight"], out[f"{name}.bias"] = heads[name]
    if "mlm_transform" in heads:
        if not grouped:
            out["vocab_transform.weight"], out["vocab_transform.bias"] = heads["mlm_transform"]
            out["vocab_layer_norm.weight"], out["vocab_layer_norm.bias"] = heads["mlm_ln"]
            out["vocab_projector.weight"], out["vocab_projector.bias"] = heads["mlm_decoder"], heads["mlm_bias"]
        else:
            out["cls.predictions.transform.dense.weight"], out["cls.predictions.transform.dense.bias"] = heads["mlm_transform"]
            out["cls.predictions.transform.LayerNorm.weight"], out["cls.predictions.transform.LayerNorm.bias"] = heads["mlm_ln"]
            out["cls.predictions.bias"] = heads["mlm_bias"]
            out["cls.predictions.decoder.weight"] = heads["mlm_decoder"]
            out["cls.predictions.decoder.bias"] = heads["mlm_bias"]
    return out


__all__ = ["convert_to_compact", "SOURCE_MODEL_TYPES", "TARGET_MODEL_TYPES", "SQUEEZEBERT_GROUP_FIELDS"]
