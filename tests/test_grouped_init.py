"""fit_grouped_projections: grouped projections fitted to the dense ones they replace, on real activations."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import hf_compact
from hf_compact.model_types import SQUEEZEBERT_GROUP_FIELDS


GROUPS = dict(q_groups=2, k_groups=2, v_groups=2, intermediate_groups=2, output_groups=2)


def _teacher(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(config).eval()


def _batches(count=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        input_ids = torch.randint(1, 64, (8, 12), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[:3, 8:] = 0  # some padding, left out of the fit
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask})
    return batches


def _dense(teacher):
    return hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2,
                                         **{f: 1 for f in SQUEEZEBERT_GROUP_FIELDS})


def _projection_inputs(model, name, batches):
    """The non-padding inputs of one projection of `model` over `batches`."""
    module = dict(model.named_modules())[name]
    seen = []
    mask = {}
    hook = module.register_forward_pre_hook(lambda m, args: seen.append(args[0][mask["keep"]].detach()))
    with torch.enable_grad():
        for batch in batches:
            mask["keep"] = batch["attention_mask"].bool()
            model(**batch)
    hook.remove()
    return torch.cat(seen)


def _as_dense_matrix(conv):
    return hf_compact.conversion._block_diagonal_to_dense(conv.weight.detach(), conv.groups)


@pytest.mark.parametrize("name", ["transformer.encoder.layers.0.attention.query",
                                  "transformer.encoder.layers.1.intermediate.conv1d",
                                  "transformer.encoder.layers.1.output.conv1d"])
def test_fit_is_closer_to_the_dense_projection_than_the_block_diagonal_part(name):
    teacher = _teacher()
    dense = _dense(teacher)
    block = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    fitted = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    batches = _batches()
    refitted = hf_compact.fit_grouped_projections(fitted, dense, batches, ridge=1e-6)
    assert name in {"transformer." + n for n in refitted} and len(refitted) == 10  # 5 grouped projections per layer

    inputs = _projection_inputs(dense, name, batches)
    source = dict(dense.named_modules())[name]
    target = inputs @ source.weight.detach()[..., 0].T + source.bias.detach()

    def error(model):
        conv = dict(model.named_modules())[name]
        return (inputs @ _as_dense_matrix(conv).T + conv.bias.detach() - target).pow(2).mean().item()

    assert error(fitted) < 0.9 * error(block)


def test_fit_keeps_weights_that_are_already_grouped():
    """A dense model whose projections are block-diagonal is reproduced exactly: the fit has nothing to recover."""
    grouped_teacher = hf_compact.convert_to_compact(_teacher(), "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    dense = hf_compact.convert_to_compact(grouped_teacher, "compact_squeezebert", num_hidden_layers=2,
                                          **{f: 1 for f in SQUEEZEBERT_GROUP_FIELDS})
    student = hf_compact.convert_to_compact(grouped_teacher, "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    expected = {k: v.clone() for k, v in student.state_dict().items()}
    with torch.no_grad():  # move the student away, so the fit has to find the weights again
        for conv in (m for m in student.modules() if isinstance(m, torch.nn.Conv1d) and m.groups > 1):
            conv.weight.normal_()
            conv.bias.zero_()
    hf_compact.fit_grouped_projections(student, dense, _batches(), ridge=0.0)
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=2e-4, rtol=1e-3, msg=key)


def test_fit_brings_the_student_closer_to_the_dense_model():
    teacher = _teacher(seed=3)
    dense = _dense(teacher)
    block = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    fitted = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    hf_compact.fit_grouped_projections(fitted, dense, _batches(count=8))
    batch = _batches(count=1, seed=7)[0]
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        reference = dense(**batch, output_hidden_states=True).hidden_states[-1][keep]
        gaps = {name: (model(**batch, output_hidden_states=True).hidden_states[-1][keep] - reference).pow(2).mean()
                for name, model in (("block", block), ("fitted", fitted))}
    assert gaps["fitted"] < gaps["block"]


def test_bad_requests_raise_clear_errors():
    teacher = _teacher()
    dense = _dense(teacher)
    distil = hf_compact.convert_to_compact(teacher, "compact_distilbert", num_hidden_layers=2)
    with pytest.raises(ValueError, match="compact_squeezebert student"):
        hf_compact.fit_grouped_projections(distil, dense, _batches())
    one_layer = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=1, **GROUPS)
    with pytest.raises(ValueError, match="same layers"):
        hf_compact.fit_grouped_projections(one_layer, dense, _batches())
    student = hf_compact.convert_to_compact(teacher, "compact_squeezebert", num_hidden_layers=2, **GROUPS)
    with pytest.raises(ValueError, match="at least one batch"):
        hf_compact.fit_grouped_projections(student, dense, [])
    assert hf_compact.fit_grouped_projections(dense, dense, _batches()) == []  # nothing grouped, nothing to fit
