"""The inference kernels of both compact models give the numbers of their reference (autograd) paths."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_compact import (
    CompactDistilBertConfig,
    CompactDistilBertModel,
    CompactSqueezeBertConfig,
    CompactSqueezeBertModel,
)
from hf_compact.modeling import modeling_compact_distilbert as distilbert_module
from hf_compact.modeling import modeling_compact_squeezebert as squeezebert_module
from hf_compact.modeling.modeling_compact_squeezebert import CompactSqueezeBertGroupedConv


REPO = Path(__file__).resolve().parents[1]
TOLERANCE = dict(atol=1e-5, rtol=1e-5)

# (q, k, v, post_attention, intermediate, output) groups for 6 heads of 8 channels. Equal q/k/v groups holding whole
# heads take the grouped attention, others the separate projections; equal intermediate/output groups take the fused
# grouped feed-forward, unequal ones the separate projections.
GROUPINGS = [
    (1, 1, 1, 1, 1, 1),
    (3, 3, 3, 1, 3, 3),
    (4, 4, 4, 1, 4, 4),  # 1.5 heads per group
    (2, 4, 1, 2, 3, 6),
    (6, 3, 2, 6, 2, 2),
]


def _attends_by_group(groups):
    return groups[0] == groups[1] == groups[2] and 6 % groups[0] == 0


def _squeezebert(groups, attn_implementation="sdpa", **extra):
    q, k, v, post, intermediate, output = groups
    config = CompactSqueezeBertConfig(
        vocab_size=99, hidden_size=48, embedding_size=48, num_hidden_layers=2, num_attention_heads=6,
        intermediate_size=96, max_position_embeddings=64, q_groups=q, k_groups=k, v_groups=v,
        post_attention_groups=post, intermediate_groups=intermediate, output_groups=output,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation=attn_implementation, **extra,
    )
    torch.manual_seed(0)
    return CompactSqueezeBertModel(config).eval()


def _distilbert(attn_implementation="sdpa", **extra):
    config = CompactDistilBertConfig(
        vocab_size=99, dim=48, n_layers=2, n_heads=6, hidden_dim=80, max_position_embeddings=64, dropout=0.0,
        attention_dropout=0.0, attn_implementation=attn_implementation, **extra,
    )
    torch.manual_seed(0)
    return CompactDistilBertModel(config).eval()


def _padded_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 99, (3, 13), generator=generator)
    mask = torch.ones(3, 13, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    return input_ids, mask


def _reference(model, input_ids, mask):
    """The differentiable path: gradients enabled, so no inference kernel runs."""
    with torch.enable_grad():
        return model(input_ids, attention_mask=mask).last_hidden_state.detach()


def _inference(model, input_ids, mask):
    with torch.inference_mode():
        return model(input_ids, attention_mask=mask).last_hidden_state


def _assert_inference_attentions_equal_the_reference(model, seed):
    """The attention probabilities of the inference path, per layer, in (batch, heads, q, k) layout."""
    input_ids, mask = _padded_batch(seed=seed)
    with torch.enable_grad():
        expected = [a.detach() for a in model(input_ids, attention_mask=mask, output_attentions=True).attentions]
    with torch.inference_mode():
        got = model(input_ids, attention_mask=mask, output_attentions=True).attentions
    for ours, reference in zip(got, expected, strict=True):
        assert ours.shape == (3, 6, 13, 13)
        torch.testing.assert_close(ours, reference, **TOLERANCE)


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the inference kernels (wrapping, not replacing, them)."""
    calls = {"projection": 0, "attention": 0, "squeezebert_ffn": 0, "distilbert_ffn": 0}

    def wrap(owner, name, key):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    wrap(CompactSqueezeBertGroupedConv, "inference_forward", "projection")
    wrap(squeezebert_module.CompactSqueezeBertSelfAttention, "_grouped_attention", "attention")
    wrap(squeezebert_module, "_grouped_feed_forward", "squeezebert_ffn")
    wrap(distilbert_module, "_feed_forward_plus_residual", "distilbert_ffn")
    return calls


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2, 3, 4, 6])
def test_grouped_projection_inference_path_equals_conv1d(groups, bias):
    torch.manual_seed(groups)
    layer = CompactSqueezeBertGroupedConv(24, 36, 1, groups=groups, bias=bias)
    reference = torch.nn.Conv1d(24, 36, 1, groups=groups, bias=bias)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(3, 7, 24)
    residual = torch.randn(3, 7, 36)
    expected = reference(x.transpose(1, 2)).transpose(1, 2).detach()
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected, **TOLERANCE)
        torch.testing.assert_close(layer.inference_forward(x), expected, **TOLERANCE)
        torch.testing.assert_close(layer.inference_forward(x, residual=residual), expected + residual, **TOLERANCE)
        torch.testing.assert_close(layer.inference_forward(x[:1, :1]), expected[:1, :1], **TOLERANCE)  # one token


@pytest.mark.parametrize("groups", [1, 2, 4, 6])
def test_grouped_projection_gradients_equal_conv1d(groups):
    torch.manual_seed(groups)
    layer = CompactSqueezeBertGroupedConv(24, 36, 1, groups=groups)
    reference = torch.nn.Conv1d(24, 36, 1, groups=groups)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 24, requires_grad=True)
    x_reference = x.detach().clone().requires_grad_()
    upstream_grad = torch.randn(2, 5, 36)
    output = layer(x)
    assert output.requires_grad  # the differentiable path ran
    output.backward(upstream_grad)
    reference(x_reference.transpose(1, 2)).transpose(1, 2).backward(upstream_grad)
    torch.testing.assert_close(x.grad, x_reference.grad, **TOLERANCE)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad, **TOLERANCE)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad, **TOLERANCE)


def test_grouped_projection_takes_the_inference_path_only_without_autograd(counted):
    layer = CompactSqueezeBertGroupedConv(8, 8, 1, groups=2)
    x = torch.randn(1, 3, 8)
    layer(x)  # weights require grad: the graph is needed
    assert counted["projection"] == 0
    with torch.no_grad():
        layer(x)
    assert counted["projection"] == 1
    layer.requires_grad_(False)
    layer(x)  # nothing requires grad: no graph to record
    assert counted["projection"] == 2
    layer(x.requires_grad_())
    assert counted["projection"] == 2


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("groups", GROUPINGS)
def test_squeezebert_inference_equals_training_path(groups, attn_implementation, counted):
    model = _squeezebert(groups, attn_implementation)
    input_ids, mask = _padded_batch()
    expected = _reference(model, input_ids, mask)
    assert counted == {"projection": 0, "attention": 0, "squeezebert_ffn": 0, "distilbert_ffn": 0}
    real = mask.bool()
    torch.testing.assert_close(_inference(model, input_ids, mask)[real], expected[real], **TOLERANCE)
    # Once per layer each, where the groups allow.
    assert counted["attention"] == (2 if _attends_by_group(groups) else 0)
    assert counted["squeezebert_ffn"] == (2 if groups[4] == groups[5] else 0)
    projections_per_layer = 1 + (0 if _attends_by_group(groups) else 3) + (0 if groups[4] == groups[5] else 2)
    assert counted["projection"] == 2 * projections_per_layer
    # Training mode (dropout 0) with gradients: the same numbers again, through autograd.
    model.train()
    torch.testing.assert_close(_reference(model, input_ids, mask)[real], expected[real], **TOLERANCE)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("groups", GROUPINGS)
def test_squeezebert_inference_path_matches_transformers(groups, attn_implementation):
    import transformers

    compact = _squeezebert(groups, attn_implementation)
    upstream = transformers.SqueezeBertModel(transformers.SqueezeBertConfig(**compact.config.to_diff_dict())).eval()
    upstream.load_state_dict(compact.state_dict())
    input_ids, mask = _padded_batch(seed=5)
    with torch.inference_mode():
        theirs = upstream(input_ids, attention_mask=mask).last_hidden_state
    ours = _inference(compact, input_ids, mask)
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], **TOLERANCE)


@pytest.mark.parametrize("groups", GROUPINGS[1:4])
def test_squeezebert_batch_of_one_equals_its_row_in_a_padded_batch(groups):
    model = _squeezebert(groups)
    input_ids, mask = _padded_batch(seed=1)
    batched = _inference(model, input_ids, mask)
    for row in range(3):
        length = int(mask[row].sum())
        alone = _inference(model, input_ids[row : row + 1, :length], mask[row : row + 1, :length])
        torch.testing.assert_close(alone[0], batched[row, :length], **TOLERANCE)


@pytest.mark.parametrize("groups", GROUPINGS)
def test_squeezebert_eager_and_sdpa_agree_on_the_inference_path(groups):
    input_ids, mask = _padded_batch(seed=2)
    eager = _inference(_squeezebert(groups, "eager"), input_ids, mask)
    sdpa = _inference(_squeezebert(groups, "sdpa"), input_ids, mask)
    torch.testing.assert_close(sdpa[mask.bool()], eager[mask.bool()], **TOLERANCE)


@pytest.mark.parametrize("groups", GROUPINGS)
def test_squeezebert_attention_probabilities_keep_their_layout(groups):
    _assert_inference_attentions_equal_the_reference(_squeezebert(groups, "eager"), seed=4)


@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize("rows_per_step", [1, 5, 64])
def test_grouped_feed_forward_in_row_steps_equals_the_projections(rows_per_step, activation):
    model = _squeezebert((3, 3, 3, 1, 3, 3), hidden_act=activation)
    block = model.encoder.layers[0]
    x = torch.randn(3, 11, 48)  # 33 rows: several steps and a remainder
    with torch.enable_grad():
        expected = block.output(block.intermediate(x), x).detach()
    with torch.inference_mode():
        fused = squeezebert_module._grouped_feed_forward(x, block.intermediate, block.output, rows_per_step)
    torch.testing.assert_close(fused, expected, **TOLERANCE)


def test_hooks_and_adapters_are_not_bypassed(counted):
    model = _squeezebert((3, 3, 3, 1, 3, 3))
    block = model.encoder.layers[0]
    seen = []
    block.output.conv1d.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    input_ids, mask = _padded_batch()
    expected = _reference(model, input_ids, mask)
    got = _inference(model, input_ids, mask)
    assert seen  # the hooked projection was called as a module
    assert counted["squeezebert_ffn"] == 1  # only the unhooked layer fused its feed-forward
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], **TOLERANCE)


def test_squeezebert_with_lora_adapters_gives_the_reference_numbers_at_inference():
    from peft import LoraConfig, get_peft_model

    adapters = LoraConfig(r=3, target_modules=["query", "value", "conv1d"])
    model = get_peft_model(_squeezebert((3, 3, 3, 1, 3, 3)), adapters)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)  # a trained adapter, not the zero initialisation
    model.eval()
    input_ids, mask = _padded_batch()
    expected = _reference(model, input_ids, mask)
    got = _inference(model, input_ids, mask)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], **TOLERANCE)
    with torch.inference_mode():
        without_adapter = model.get_base_model()
        with model.disable_adapter():
            plain = without_adapter(input_ids, attention_mask=mask).last_hidden_state
    assert (plain - got)[mask.bool()].abs().max() > 1e-3  # the adapters did change the numbers


@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_distilbert_inference_equals_training_path(attn_implementation, activation, counted):
    model = _distilbert(attn_implementation, activation=activation)
    input_ids, mask = _padded_batch()
    expected = _reference(model, input_ids, mask)
    assert counted["distilbert_ffn"] == 0
    real = mask.bool()
    torch.testing.assert_close(_inference(model, input_ids, mask)[real], expected[real], **TOLERANCE)
    assert counted["distilbert_ffn"] == 2
    model.train()
    torch.testing.assert_close(_reference(model, input_ids, mask)[real], expected[real], **TOLERANCE)


def test_distilbert_with_lora_adapters_gives_the_reference_numbers_at_inference(counted):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_distilbert(), LoraConfig(r=4, target_modules=["q_lin", "v_lin", "lin1"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    model.eval()
    input_ids, mask = _padded_batch()
    expected = _reference(model, input_ids, mask)
    torch.testing.assert_close(_inference(model, input_ids, mask)[mask.bool()], expected[mask.bool()], **TOLERANCE)
    assert counted["distilbert_ffn"] == 0  # the adapted lin1 is called as a module


def test_distilbert_batch_of_one_and_attention_back_ends_agree():
    input_ids, mask = _padded_batch(seed=3)
    sdpa_model, eager_model = _distilbert("sdpa"), _distilbert("eager")
    batched = _inference(sdpa_model, input_ids, mask)
    torch.testing.assert_close(_inference(eager_model, input_ids, mask)[mask.bool()], batched[mask.bool()],
                               **TOLERANCE)
    length = int(mask[1].sum())
    alone = _inference(sdpa_model, input_ids[1:2, :length], mask[1:2, :length])
    torch.testing.assert_close(alone[0], batched[1, :length], **TOLERANCE)


def test_distilbert_chunked_feed_forward_keeps_the_reference_path(counted):
    model = _distilbert(chunk_size_feed_forward=13)
    input_ids, mask = _padded_batch()
    expected = _reference(model, input_ids, mask)
    torch.testing.assert_close(_inference(model, input_ids, mask)[mask.bool()], expected[mask.bool()], **TOLERANCE)
    assert counted["distilbert_ffn"] == 0


def test_speed_benchmark_quick_run_writes_its_json(tmp_path):
    output = tmp_path / "speed.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--device", "cpu", "--threads", "1",
         "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(output.read_text())
    assert result["device"] == "cpu" and result["threads"] == 1 and result["peak_gflop_per_s"] > 0
    assert {"torch", "transformers", "python", "device_name"} <= set(result)
    assert all(difference <= 1e-4 for difference in result["max_abs_difference"].values())
    rows = {(row["model"], row["batch_size"]): row for row in result["rows"]}
    assert set(rows) == {(model, batch) for model in
                         ("bert", "distilbert", "compact_distilbert", "squeezebert", "compact_squeezebert")
                         for batch in (1, 2)}
    for (model, batch), row in rows.items():
        assert row["median_ms"] > 0 and row["gflop_per_s"] > 0
        assert row["speedup_vs_bert"] == pytest.approx(rows["bert", batch]["median_ms"] / row["median_ms"])
    compact = rows["compact_squeezebert", 2]
    assert compact["replaces"] == "squeezebert"
    assert compact["speedup_vs_replaced"] == pytest.approx(rows["squeezebert", 2]["median_ms"] / compact["median_ms"])
    assert "compact_squeezebert" in completed.stdout  # the printed table


@pytest.fixture(params=[1, 2], ids=["one-thread", "two-threads"])
def threads(request):
    """Runs the test with torch on 1, then 2 threads (column blocks need several), restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _assert_equals_reference_and_upstream(got, expected, upstream, input_ids, mask):
    """`got` (the inference path) equals the reference path's `expected` and the transformers model's output on every
    real token."""
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], **TOLERANCE)
    with torch.inference_mode():
        theirs = upstream(input_ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[real], theirs[real], **TOLERANCE)


@pytest.mark.parametrize("module", [distilbert_module, squeezebert_module], ids=["distilbert", "squeezebert"])
def test_column_blocks_hold_whole_units_and_need_threads_and_few_tokens(module, monkeypatch):
    for threads, tokens, units, expected in [
        (2, 128, 12, 4),  # twice the threads
        (2, 39, 6, 6),  # 4 does not divide 6 heads: the next divisor
        (2, 20, 7, 7),
        (8, 20, 12, 12),  # no divisor reaches 16: every head its own block
        (2, 20, 1, 1),
        (1, 20, 12, 1),  # one thread: the plain matrix multiply
        (2, module.COLUMN_BLOCK_MAX_TOKENS + 1, 12, 1),  # many tokens: the plain matrix multiply
    ]:
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        assert module._column_blocks(tokens, units) == expected, (threads, tokens, units)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_distilbert_column_blocks_give_the_reference_and_transformers_numbers(
    attn_implementation, padded, threads, monkeypatch
):
    import transformers

    calls = []
    original = distilbert_module.CompactDistilBertSelfAttention._attention_in_head_blocks
    monkeypatch.setattr(distilbert_module.CompactDistilBertSelfAttention, "_attention_in_head_blocks",
                        lambda *args, **kwargs: calls.append(args[3]) or original(*args, **kwargs))
    model = _distilbert(attn_implementation)
    upstream = transformers.DistilBertModel(transformers.DistilBertConfig(**model.config.to_diff_dict())).eval()
    upstream.load_state_dict(model.state_dict())
    input_ids, mask = _padded_batch(seed=6)
    if not padded:
        mask = torch.ones_like(mask)
    expected = _reference(model, input_ids, mask)
    assert calls == []  # the autograd path never takes the blocks
    got = _inference(model, input_ids, mask)
    assert calls == ([6, 6] if threads == 2 else [])  # 39 tokens, 6 heads of one block each, once per layer
    _assert_equals_reference_and_upstream(got, expected, upstream, input_ids, mask)


def test_distilbert_column_blocks_keep_the_attention_probabilities_layout(threads):
    _assert_inference_attentions_equal_the_reference(_distilbert("eager"), seed=7)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_distilbert_many_tokens_take_the_plain_matrix_multiplies(threads, monkeypatch):
    model = _distilbert()
    blocked = []
    monkeypatch.setattr(distilbert_module, "_column_block_products",
                        lambda *args: blocked.append(args[-1]) or pytest.fail("column blocks on many tokens"))
    generator = torch.Generator().manual_seed(8)
    input_ids = torch.randint(1, 99, (3, 64), generator=generator)  # 192 tokens
    mask = torch.ones_like(input_ids)
    torch.testing.assert_close(_inference(model, input_ids, mask), _reference(model, input_ids, mask), **TOLERANCE)
    assert blocked == []


def test_grouped_projection_splits_only_into_its_groups():
    layer = CompactSqueezeBertGroupedConv(24, 36, 1, groups=3)
    inputs, weight = layer.split(torch.randn(5, 24), 3)
    assert inputs.shape == (3, 5, 8) and weight.shape == (3, 8, 12)
    with pytest.raises(ValueError, match="3 groups splits into its groups, not 4 parts"):
        layer.split(torch.randn(5, 24), 4)


@pytest.mark.parametrize("groups", [(1, 1, 1, 1, 1, 1), (3, 3, 3, 1, 3, 3)], ids=["one-group", "grouped"])
def test_squeezebert_column_blocks_give_the_reference_and_transformers_numbers(groups, threads, monkeypatch):
    import transformers

    parts = []
    original = CompactSqueezeBertGroupedConv.split
    monkeypatch.setattr(CompactSqueezeBertGroupedConv, "split",
                        lambda self, inputs, count: parts.append((self.groups, count)) or original(self, inputs, count))
    model = _squeezebert(groups)
    upstream = transformers.SqueezeBertModel(transformers.SqueezeBertConfig(**model.config.to_diff_dict())).eval()
    upstream.load_state_dict(model.state_dict())
    input_ids, mask = _padded_batch(seed=9)
    expected = _reference(model, input_ids, mask)
    got = _inference(model, input_ids, mask)
    one_group_blocks = {count for group_count, count in parts if group_count == 1}
    # 39 tokens on two threads: every one-group projection in 4 column blocks (6 heads: q/k/v in 6)
    if threads == 2:
        assert one_group_blocks == ({4, 6} if groups[0] == 1 else {4})
    else:
        assert one_group_blocks <= {1}
    _assert_equals_reference_and_upstream(got, expected, upstream, input_ids, mask)


def test_column_blocks_benchmark_quick_run_measures_both_settings(tmp_path):
    output = tmp_path / "column_blocks.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "column_blocks.py"), "--quick", "--threads", "2",
         "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(output.read_text())
    assert result["threads"] == 2 and {"torch", "transformers", "hardware"} <= set(result)
    rows = {(row["model"], row["tokens"]): row for row in result["rows"]}
    assert set(rows) == {(model, tokens) for model in
                         ("compact_distilbert", "compact_squeezebert", "compact_squeezebert_one_group")
                         for tokens in (8, 16)}
    for row in rows.values():
        assert row["on_ms"] > 0 and row["off_ms"] > 0
        assert row["speedup"] == pytest.approx(row["off_ms"] / row["on_ms"])
        assert row["max_abs_difference"] <= 1e-5  # the blocks compute the same numbers


def test_speed_benchmark_profile_reports_where_the_time_goes(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--device", "cpu", "--threads", "1",
         "--profile", "compact_squeezebert", "--batch-sizes", "1", "--repeats", "1",
         "--output", str(tmp_path / "speed.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "compact_squeezebert, batch 1 x 16" in completed.stdout
    assert "matrix products (projections):" in completed.stdout and "fused attention:" in completed.stdout
    assert not (tmp_path / "speed.json").exists()  # a profile writes no JSON
