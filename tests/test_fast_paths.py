"""The CPU inference kernels of `hf_compact.kernels`: each gives the numbers of the reference (the modeling files)
and of transformers' classes; they run only where they may; they are chosen by measurement, cached per machine, and
removed again; and the modeling files carry none of them."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from hf_compact import (
    CompactDistilBertConfig,
    CompactDistilBertModel,
    CompactSqueezeBertConfig,
    CompactSqueezeBertModel,
    kernels,
)
from hf_compact.kernels import REFERENCE, KernelSelector, optimize, optimized, restore


REPO = Path(__file__).resolve().parents[1]
TOLERANCE = dict(atol=1e-5, rtol=1e-5)
KERNEL_NAMES = sorted({kernel.name for candidates in kernels.KERNELS.values() for kernel in candidates})
SQUEEZEBERT_KERNELS = {kernel.name: class_name for class_name, candidates in kernels.KERNELS.items()
                       if class_name.startswith("CompactSqueezeBert") for kernel in candidates}

# (q, k, v, post_attention, intermediate, output) groups for 6 heads of 8 channels. Equal q/k/v groups holding whole
# heads fit the grouped attention; equal intermediate/output groups take the grouped feed-forward.
GROUPINGS = [
    (1, 1, 1, 1, 1, 1),
    (3, 3, 3, 1, 3, 3),
    (4, 4, 4, 1, 4, 4),  # 1.5 heads per group
    (2, 4, 1, 2, 3, 6),
    (6, 3, 2, 6, 2, 2),
]


@pytest.fixture(autouse=True)
def kernel_cache(tmp_path, monkeypatch):
    """Every test stores kernel choices in its own file, never the user's cache."""
    path = tmp_path / "kernels.json"
    monkeypatch.setenv(kernels.CACHE_ENV, str(path))
    monkeypatch.setattr(kernels, "_default_selector", None)
    return path


class Forced(KernelSelector):
    """Measures nothing: the named kernel (where it fits) always times as the fastest."""

    def __init__(self, name):
        super().__init__(cache_path=None)
        self.name = name

    def measure(self, candidates):
        return {candidate: 0.5 if candidate == self.name else 1.0 for candidate in candidates}


class FakeClock:
    """A clock that, read after a candidate ran (`running` set to its name), has advanced by that candidate's preset
    duration."""

    def __init__(self, durations):
        self.durations, self.now, self.running = durations, 0.0, None

    def __call__(self):
        if self.running is not None:
            duration = self.durations[self.running]
            self.now += duration.pop(0) if isinstance(duration, list) else duration
            self.running = None
        return self.now


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


def _padded_batch(seed=0, length=13):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 99, (3, length), generator=generator)
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    return input_ids, mask


def _upstream(model):
    if isinstance(model, CompactSqueezeBertModel):
        upstream = transformers.SqueezeBertModel(transformers.SqueezeBertConfig(**model.config.to_diff_dict()))
    else:
        upstream = transformers.DistilBertModel(transformers.DistilBertConfig(**model.config.to_diff_dict()))
    upstream.load_state_dict(model.state_dict())
    return upstream.eval()


def _run(model, input_ids, mask, **kwargs):
    with torch.inference_mode():
        return model(input_ids, attention_mask=mask, **kwargs)


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of each kernel's forward (wrapping, not replacing, it)."""
    calls = dict.fromkeys(KERNEL_NAMES, 0)
    for class_name, candidates in list(kernels.KERNELS.items()):
        wrapped = []
        for kernel in candidates:
            def forward(*args, kernel=kernel, **kwargs):
                calls[kernel.name] += 1
                return kernel.forward(*args, **kwargs)

            wrapped.append(kernels.Kernel(kernel.name, kernel.fits, forward))
        monkeypatch.setitem(kernels.KERNELS, class_name, tuple(wrapped))
    return calls


def _assert_same_as_reference_and_upstream(model, selector, attentions=False, seed=0):
    input_ids, mask = _padded_batch(seed)
    real = mask.bool()
    expected = _run(model, input_ids, mask, output_attentions=attentions)
    theirs = _run(_upstream(model), input_ids, mask).last_hidden_state
    with optimized(model, selector):
        got = _run(model, input_ids, mask, output_attentions=attentions)
    torch.testing.assert_close(got.last_hidden_state[real], expected.last_hidden_state[real], **TOLERANCE)
    torch.testing.assert_close(got.last_hidden_state[real], theirs[real], **TOLERANCE)
    if attentions:
        assert len(got.attentions) == len(expected.attentions) == 2
        for ours, reference in zip(got.attentions, expected.attentions, strict=True):
            assert ours.shape == (3, 6, 13, 13)
            torch.testing.assert_close(ours, reference, **TOLERANCE)


@pytest.fixture(params=[1, 2], ids=["one-thread", "two-threads"])
def threads(request):
    """Runs the test with torch on 1, then 2 threads (column blocks need several), restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(SQUEEZEBERT_KERNELS))
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("groups", GROUPINGS)
def test_squeezebert_kernels_give_the_reference_and_transformers_numbers(groups, attn_implementation, name, threads,
                                                                        counted):
    model = _squeezebert(groups, attn_implementation)
    _assert_same_as_reference_and_upstream(model, Forced(name), attentions=attn_implementation == "eager")
    layer = model.encoder.layers[0]
    module = layer.attention if SQUEEZEBERT_KERNELS[name].endswith("SelfAttention") else layer
    kernel = next(k for k in kernels.KERNELS[SQUEEZEBERT_KERNELS[name]] if k.name == name)
    assert (counted[name] > 0) == kernel.fits(module)  # the kernel ran wherever it fits


DISTILBERT_KERNELS = ["attention_column_blocks", "attention_matmul_softmax", "fused_feed_forward",
                      "fused_feed_forward_column_blocks", "onednn_attention", "onednn_attention_matmul_softmax",
                      "onednn_feed_forward"]


@pytest.mark.parametrize("name", DISTILBERT_KERNELS)
@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_distilbert_kernels_give_the_reference_and_transformers_numbers(attn_implementation, activation, name,
                                                                       threads, counted):
    model = _distilbert(attn_implementation, activation=activation)
    _assert_same_as_reference_and_upstream(model, Forced(name), attentions=attn_implementation == "eager", seed=6)
    expected_to_run = threads > 1 if "column_blocks" in name else (kernels.onednn_available() or "onednn" not in name)
    assert (counted[name] > 0) == expected_to_run


def test_distilbert_kernel_list_is_complete():
    classes = ("CompactDistilBertSelfAttention", "CompactDistilBertBlock")
    listed = {kernel.name for name in classes for kernel in kernels.KERNELS[name]}
    assert listed == set(DISTILBERT_KERNELS)


@pytest.mark.skipif(not kernels.onednn_available(), reason="this torch build has no oneDNN inner product")
@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_new", None])
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_projection_equals_the_projection(groups, activation, dtype):
    torch.manual_seed(0)
    model = _squeezebert((groups, groups, groups, 1, groups, groups), hidden_act=activation or "gelu").to(dtype)
    projection = model.encoder.layers[0].intermediate.conv1d
    act = model.encoder.layers[0].intermediate.act if activation else None
    x = torch.randn(2, 7, 48, dtype=dtype)[:, :5].reshape(10, 48)  # rows of a larger tensor
    residual = torch.randn(10, 96, dtype=dtype)
    with torch.inference_mode():
        reference = projection(x)
        expected = act(reference) if act is not None else reference
        got = kernels.onednn_projection(x, projection, activation=act)
        got_residual = kernels.onednn_projection(x, projection, residual=residual)
    tolerance = TOLERANCE if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got, expected, **tolerance)
    torch.testing.assert_close(got_residual, reference + residual, **tolerance)
    packed = kernels.onednn_weights(projection, (projection,))
    assert len(packed) == groups and all(weight.is_mkldnn for weight, _ in packed)  # laid out once, in oneDNN's way


@pytest.mark.skipif(not kernels.onednn_available(), reason="this torch build has no oneDNN inner product")
@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize("groups", [1, 3])
def test_onednn_feed_forward_equals_the_projections(groups, activation):
    block = _squeezebert((3, 3, 3, 1, groups, groups), hidden_act=activation).encoder.layers[0]
    x = torch.randn(2, 9, 48)[:, 2:].reshape(14, 48)
    with torch.inference_mode():
        expected = block.output.conv1d(block.intermediate(x)) + x
        got = kernels.onednn_feed_forward(x, block.intermediate.conv1d, block.intermediate.act, block.output.conv1d)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    with pytest.raises(ValueError, match="equal ones are needed"):
        other_groups = block.attention.query if groups == 1 else block.post_attention.conv1d
        kernels.onednn_feed_forward(x, block.intermediate.conv1d, block.intermediate.act, other_groups)


@pytest.mark.skipif(not kernels.onednn_available(), reason="this torch build has no oneDNN inner product")
@pytest.mark.parametrize(("family", "name"), [("squeezebert", "onednn_layer"), ("distilbert", "onednn_attention"),
                                             ("distilbert", "onednn_feed_forward")])
def test_onednn_weight_copies_follow_the_parameters(family, name, counted):
    """The oneDNN kernels keep the weights packed in oneDNN's layout (q, k and v stacked); a copy of old weights would
    give old numbers."""
    build = (lambda: _squeezebert((3, 3, 3, 1, 3, 3))) if family == "squeezebert" else _distilbert
    model = optimize(build(), Forced(name))
    input_ids, mask = _padded_batch()

    def assert_reference_numbers():
        reference = type(model)(model.config).eval()  # not optimized
        reference.load_state_dict(model.state_dict())
        expected = _run(reference, input_ids, mask).last_hidden_state
        torch.testing.assert_close(_run(model, input_ids, mask).last_hidden_state, expected, **TOLERANCE)

    assert_reference_numbers()
    torch.manual_seed(1)
    model.load_state_dict(type(model)(model.config).state_dict())  # new values, same tensors
    assert_reference_numbers()
    with torch.no_grad():  # an optimizer step
        for parameter in model.parameters():
            parameter.mul_(1.5)
    assert_reference_numbers()
    attention = model.encoder.layers[0].attention if family == "squeezebert" else model.transformer.layer[0].attention
    projection = attention.value if family == "squeezebert" else attention.v_lin
    projection.bias = torch.nn.Parameter(torch.randn_like(projection.bias))  # a new tensor
    assert_reference_numbers()
    assert counted[name] > 0


@pytest.mark.skipif(not kernels.onednn_available(), reason="this torch build has no oneDNN inner product")
@pytest.mark.parametrize("name", ["onednn_layer", "onednn_attention", "onednn_feed_forward"])
def test_onednn_kernels_of_a_bfloat16_model_stay_near_its_reference(name, counted):
    model = (_squeezebert((3, 3, 3, 1, 3, 3)) if name == "onednn_layer" else _distilbert()).to(torch.bfloat16)
    if not kernels.onednn_fits(model):
        pytest.skip("no oneDNN bfloat16 path on this CPU")
    input_ids, mask = _padded_batch()
    real = mask.bool()
    expected = _run(model, input_ids, mask).last_hidden_state.float()
    with optimized(model, Forced(name)):
        got = _run(model, input_ids, mask).last_hidden_state.float()
    assert counted[name] > 0
    torch.testing.assert_close(got[real], expected[real], atol=0.1, rtol=0.05)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
@pytest.mark.parametrize("family", ["squeezebert", "distilbert"])
def test_a_dtype_onednn_cannot_compute_runs_the_other_computations(family, dtype, counted):
    model = (_squeezebert((3, 3, 3, 1, 3, 3)) if family == "squeezebert" else _distilbert()).to(dtype)
    input_ids, mask = _padded_batch()
    expected = _run(model, input_ids, mask).last_hidden_state
    with optimized(model, KernelSelector(cache_path=None, repeats=1)):
        got = _run(model, input_ids, mask).last_hidden_state
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)
    assert not any(calls for name, calls in counted.items() if name.startswith("onednn"))


def test_a_dynamically_quantised_model_runs_its_own_forward(counted):
    """Its attention holds no float parameters, only quantised projections: no kernel fits, nothing breaks."""
    model = torch.ao.quantization.quantize_dynamic(_distilbert(), {torch.nn.Linear}, dtype=torch.qint8)
    input_ids, mask = _padded_batch()
    expected = _run(model, input_ids, mask).last_hidden_state
    with optimized(model, KernelSelector(cache_path=None, repeats=1)):
        torch.testing.assert_close(_run(model, input_ids, mask).last_hidden_state, expected)
    assert not any(counted.values())


def test_the_onednn_attention_needs_biases_on_all_of_q_k_v_or_none(counted):
    model = _distilbert()
    for layer in model.transformer.layer:
        layer.attention.k_lin.bias = None
    input_ids, mask = _padded_batch()
    expected = _run(model, input_ids, mask).last_hidden_state
    with optimized(model, Forced("onednn_attention")):
        torch.testing.assert_close(_run(model, input_ids, mask).last_hidden_state, expected, **TOLERANCE)
    assert counted["onednn_attention"] == 0


def test_onednn_kernels_are_no_candidates_without_onednn(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    for model in (_squeezebert((2, 2, 2, 1, 2, 2)), _distilbert()):
        for module in model.modules():
            for kernel in kernels.KERNELS.get(type(module).__name__, ()):
                assert not (kernel.name.startswith("onednn") and kernel.fits(module))


@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize("rows_per_step", [1, 5, 64])
def test_grouped_feed_forward_in_row_steps_equals_the_projections(rows_per_step, activation):
    model = _squeezebert((3, 3, 3, 1, 3, 3), hidden_act=activation)
    block = model.encoder.layers[0]
    x = torch.randn(33, 48)  # several steps and a remainder
    with torch.inference_mode():
        expected = block.output.conv1d(block.intermediate(x)) + x
        fused = kernels.grouped_feed_forward(x, block.intermediate, block.output, rows_per_step)
    torch.testing.assert_close(fused, expected, **TOLERANCE)


def test_kernels_run_only_without_autograd(counted):
    model = optimize(_squeezebert((3, 3, 3, 1, 3, 3)), Forced("fused_layer"))
    input_ids, mask = _padded_batch()
    output = model(input_ids, attention_mask=mask).last_hidden_state  # weights require grad: the graph is needed
    assert output.requires_grad and counted["fused_layer"] == 0
    model.train()  # dropout 0: with gradients, still the reference through autograd
    torch.testing.assert_close(model(input_ids, attention_mask=mask).last_hidden_state, output)
    assert counted["fused_layer"] == 0
    model.eval()
    with torch.no_grad():
        model(input_ids, attention_mask=mask)
    assert counted["fused_layer"] == 2  # once per layer
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        model(input_ids, attention_mask=mask)
    assert counted["fused_layer"] == 2


@pytest.mark.parametrize("family", ["squeezebert", "distilbert"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_float32_softmax_attention_of_a_bfloat16_model_is_closer_to_float32(family, attn_implementation, counted):
    """In bfloat16 the matmul-softmax kernels take the softmax to float32 (boolean sdpa masks and additive eager
    ones alike): their outputs stay within bfloat16 rounding of the float32 model, no farther than the reference's."""
    name = "grouped_attention_matmul_softmax" if family == "squeezebert" else "attention_matmul_softmax"
    model = _squeezebert((3, 3, 3, 1, 3, 3), attn_implementation) if family == "squeezebert" else _distilbert(
        attn_implementation)
    input_ids, mask = _padded_batch()
    real = mask.bool()
    exact = _run(model, input_ids, mask).last_hidden_state[real]
    model.to(torch.bfloat16)
    reference = _run(model, input_ids, mask).last_hidden_state[real].float()
    with optimized(model, Forced(name)):
        got = _run(model, input_ids, mask).last_hidden_state[real].float()
    assert counted[name] == 2  # once per layer
    assert torch.isfinite(got).all()
    error, reference_error = (got - exact).abs().max(), (reference - exact).abs().max()
    assert error < 0.1 and error <= 1.5 * reference_error


def test_hooks_and_adapters_are_not_bypassed(counted):
    model = optimize(_squeezebert((3, 3, 3, 1, 3, 3)), Forced("fused_layer"))
    seen = []
    model.encoder.layers[0].output.conv1d.register_forward_hook(lambda module, args, output: seen.append(1))
    input_ids, mask = _padded_batch()
    got = _run(model, input_ids, mask).last_hidden_state
    assert seen  # the hooked projection was called as a module
    assert counted["fused_layer"] == 1  # only the unhooked layer took the kernel
    expected = _run(restore(model), input_ids, mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], **TOLERANCE)


@pytest.mark.parametrize("family", ["squeezebert", "distilbert"])
def test_models_with_lora_adapters_give_the_reference_numbers(family, counted):
    from peft import LoraConfig, get_peft_model

    if family == "squeezebert":
        base, targets = _squeezebert((3, 3, 3, 1, 3, 3)), ["query", "value", "conv1d"]
    else:
        base, targets = _distilbert(), ["q_lin", "v_lin", "lin1"]
    model = get_peft_model(base, LoraConfig(r=3, target_modules=targets))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)  # a trained adapter, not the zero initialisation
    model.eval()
    input_ids, mask = _padded_batch()
    expected = _run(model, input_ids, mask).last_hidden_state
    for name in KERNEL_NAMES:
        with optimized(model, Forced(name)):
            got = _run(model, input_ids, mask).last_hidden_state
        torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], **TOLERANCE)
    assert sum(counted.values()) == 0  # every adapted module is called as a module


def test_chunked_distilbert_feed_forward_keeps_the_reference(counted):
    model = _distilbert(chunk_size_feed_forward=13)
    _assert_same_as_reference_and_upstream(model, Forced("fused_feed_forward"))
    assert counted["fused_feed_forward"] == 0


def test_optimize_and_restore_leave_the_model_as_it_was():
    model = _squeezebert((3, 3, 3, 1, 3, 3))
    optimize(model)
    assert kernels.is_optimized(model)
    assert "forward" in vars(model.encoder.layers[0]) and "forward" in vars(model.encoder.layers[0].attention)
    optimize(model)  # twice: still one dispatcher
    with optimized(model):  # already optimized: left so
        pass
    assert kernels.is_optimized(model)
    restore(model)
    assert not kernels.is_optimized(model)
    assert all("forward" not in vars(module) for module in model.modules())
    with optimized(model):
        assert kernels.is_optimized(model)
        with kernels.reference_only(model):
            assert not kernels.is_optimized(model)
        assert kernels.is_optimized(model)
    assert not kernels.is_optimized(model)


def test_pick_keeps_the_reference_unless_a_kernel_wins_by_the_margin():
    assert kernels.pick({REFERENCE: 1.0, "a": 0.5, "b": 0.8}, margin=0.03) == "a"
    assert kernels.pick({REFERENCE: 1.0, "a": 0.98}, margin=0.03) == REFERENCE
    assert kernels.pick({REFERENCE: 1.0, "a": 1.5}, margin=0.0) == REFERENCE


def test_measure_interleaves_the_candidates_and_keeps_each_ones_fastest_round():
    order = []
    # The reference's first timed round is slowed down by other work on the machine.
    clock = FakeClock({"slow": 3.0, "fast": 1.0, REFERENCE: [5.0, 2.0, 2.5]})

    def candidate(name):
        def call():
            order.append(name)
            if len(order) > 3:  # the untimed round reads no clock
                clock.running = name
        return call

    selector = KernelSelector(cache_path=None, repeats=3, clock=clock)
    measured = selector.measure({name: candidate(name) for name in (REFERENCE, "slow", "fast")})
    assert measured == {REFERENCE: 2.0, "slow": 3.0, "fast": 1.0}
    timed = order[3:]  # after one untimed round
    assert timed == [REFERENCE, "slow", "fast", "slow", "fast", REFERENCE, "fast", REFERENCE, "slow"]


@pytest.mark.parametrize("winner", [REFERENCE, "fused_layer"])
def test_a_kernel_that_loses_is_never_used_and_the_choice_is_cached(winner, kernel_cache, counted):
    clock = FakeClock({})
    durations = {**dict.fromkeys(KERNEL_NAMES, 3.0), REFERENCE: 1.0,
                 "fused_layer": 0.5 if winner == "fused_layer" else 2.0}
    clock.durations = durations
    selector = KernelSelector(repeats=2, clock=clock)

    original_measure = selector.measure

    def measure(candidates):  # tell the clock which candidate runs
        def tracked(name, call):
            def run():
                result = call()
                clock.running = name
                return result
            return run
        return original_measure({name: tracked(name, call) for name, call in candidates.items()})

    selector.measure = measure
    model = optimize(_squeezebert((3, 3, 3, 1, 3, 3)), selector)
    input_ids, mask = _padded_batch()
    _run(model, input_ids, mask)
    layer_choices = {key: entry for key, entry in selector.choices().items() if "CompactSqueezeBertModule" in key}
    assert [entry["kernel"] for entry in layer_choices.values()] == [winner]
    counted.update(dict.fromkeys(counted, 0))
    _run(model, input_ids, mask)  # the choice is made: no timing, the winner only
    assert counted["fused_layer"] == (2 if winner == "fused_layer" else 0)
    assert counted["grouped_attention"] == 0 and counted["fused_layer_column_blocks"] == 0
    assert all(counted[name] == 0 for name in SQUEEZEBERT_KERNELS if name != "fused_layer")

    stored = json.loads(kernel_cache.read_text())
    assert list(stored) == [kernels.machine_key()]
    assert stored[kernels.machine_key()] == selector.choices()
    again = KernelSelector(clock=lambda: pytest.fail("timed again instead of reading the cache"))
    _run(optimize(_squeezebert((3, 3, 3, 1, 3, 3)), again), input_ids, mask)
    assert again.choices() == selector.choices()


def test_choices_made_under_an_instruction_set_cap_are_kept_apart(tmp_path, monkeypatch):
    """With oneDNN, MKL or ATen capped to older extensions (as for timing an AVX2-only CPU on a newer one), the
    kernels run other code: the uncapped choices are not read, and the cap is recorded with the timings."""
    from hf_compact.benchmarking import INSTRUCTION_SET_LIMITS, environment_info

    for name in INSTRUCTION_SET_LIMITS:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "kernels.json"
    cache.write_text(json.dumps({kernels.machine_key(): {"a shape": {"kernel": REFERENCE, "ms": {}}}}))
    assert KernelSelector(cache).choices() == {"a shape": {"kernel": REFERENCE, "ms": {}}}
    assert environment_info()["instruction_set_limits"] == {}

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert KernelSelector(cache).choices() == {}
    assert f"ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 torch {torch.__version__}, " in kernels.machine_key()
    assert environment_info()["instruction_set_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2",
                                                            "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_choices_timed_with_other_kernel_code_are_timed_again(tmp_path, monkeypatch):
    """A kernel's code changed (a faster weight layout, say) since a choice was timed: the choice is not read."""
    cache = tmp_path / "kernels.json"
    cache.write_text(json.dumps({kernels.machine_key(): {"a shape": {"kernel": REFERENCE, "ms": {}}}}))
    assert KernelSelector(cache).choices() == {"a shape": {"kernel": REFERENCE, "ms": {}}}
    monkeypatch.setattr(kernels, "kernels_digest", lambda: "other code")
    assert KernelSelector(cache).choices() == {}


def test_a_choice_cached_before_a_kernel_existed_is_timed_again(kernel_cache):
    """A cache written by an earlier release, whose candidates lacked a kernel that fits now, is measured again
    with every candidate; one that measured them all is read as it is."""
    model = _squeezebert((3, 3, 3, 1, 3, 3))
    input_ids, mask = _padded_batch()
    first = KernelSelector(repeats=1)
    _run(optimize(model, first), input_ids, mask)
    stored = json.loads(kernel_cache.read_text())
    layer_key = next(key for key in stored[kernels.machine_key()] if key.startswith("CompactSqueezeBertModule/"))
    entry = stored[kernels.machine_key()][layer_key]
    assert "channels_first_layer_matmul_softmax" in entry["ms"]
    del entry["ms"]["channels_first_layer_matmul_softmax"]  # as an earlier release, without it, measured
    entry["kernel"] = REFERENCE
    kernel_cache.write_text(json.dumps(stored))

    measured = []
    again = KernelSelector(repeats=1)
    original = again.measure
    again.measure = lambda candidates: measured.append(set(candidates)) or original(candidates)
    _run(optimize(_squeezebert((3, 3, 3, 1, 3, 3)), again), input_ids, mask)
    assert measured == [set(entry["ms"]) | {"channels_first_layer_matmul_softmax"}]  # that layer class only
    assert "channels_first_layer_matmul_softmax" in again.choices()[layer_key]["ms"]


def test_shape_classes_round_batch_and_length_up_to_powers_of_two():
    layer = _squeezebert((3, 3, 3, 1, 3, 3)).encoder.layers[0]
    key = kernels.shape_class(layer, torch.zeros(3, 13, 48))
    assert key.startswith("CompactSqueezeBertModule/") and key.endswith("/float32/batch<=4/seq<=16")
    assert kernels.shape_class(layer, torch.zeros(4, 16, 48)) == key
    assert kernels.shape_class(layer, torch.zeros(4, 17, 48)) != key
    other = _squeezebert((1, 1, 1, 1, 1, 1)).encoder.layers[0]
    assert kernels.shape_class(other, torch.zeros(3, 13, 48)) != key  # other groups, other weights' shapes


def test_timing_runs_do_not_add_recorded_attentions(monkeypatch):
    model = optimize(_squeezebert((3, 3, 3, 1, 3, 3), "eager"), KernelSelector(cache_path=None, repeats=2))
    input_ids, mask = _padded_batch()
    output = _run(model, input_ids, mask, output_attentions=True, output_hidden_states=True)
    assert len(output.attentions) == 2 and len(output.hidden_states) == 3


def test_the_default_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "k.json"))
    assert kernels.default_cache_path() == str(tmp_path / "k.json")
    monkeypatch.delenv(kernels.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernels.default_cache_path() == str(tmp_path / "hf_compact" / "kernels.json")


def test_a_damaged_cache_is_timed_again(kernel_cache):
    kernel_cache.write_text("{not json")
    selector = KernelSelector(repeats=1)
    assert selector.choices() == {}
    _run(optimize(_distilbert(), selector), *_padded_batch())
    assert json.loads(kernel_cache.read_text())[kernels.machine_key()] == selector.choices()


def test_column_blocks_hold_whole_units():
    for threads, units, expected in [(2, 12, 4), (2, 6, 6), (2, 7, 7), (8, 12, 12), (2, 1, 1), (1, 12, 2)]:
        assert kernels.column_blocks(units, threads) == expected, (threads, units)


@pytest.mark.parametrize("name", ["modeling_compact_distilbert.py", "modeling_compact_squeezebert.py"])
def test_the_modeling_files_are_the_reference_computation(name):
    source = (REPO / "modeling" / name).read_text()
    assert "get_num_threads" not in source and "_forward_hooks" not in source
    assert not re.search(r"^\s*(from|import) hf_compact", source, re.MULTILINE)  # it ships without the package
    assert not re.search(r"\d+(\.\d+)?x\b", source)  # no speed figures
    assert "CrossEntropyLoss" not in source and "MSELoss" not in source  # the losses are self.loss_function


@pytest.mark.slow
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
    assert {"torch", "transformers", "python", "device_name", "cpu_flags", "instruction_set_limits"} <= set(result)
    assert result["kernels"]["choices"] and "1 threads" in result["kernels"]["machine"]
    assert all(difference <= 1e-4 for difference in result["max_abs_difference"].values())
    rows = {(row["model"], row["batch_size"]): row for row in result["rows"]}
    models = ("bert", "distilbert", "compact_distilbert_reference", "compact_distilbert", "squeezebert",
              "compact_squeezebert_reference", "compact_squeezebert")
    assert set(rows) == {(model, batch) for model in models for batch in (1, 2)}
    for (model, batch), row in rows.items():
        assert row["median_ms"] > 0 and row["gflop_per_s"] > 0
        assert row["speedup_vs_bert"] == pytest.approx(rows["bert", batch]["median_ms"] / row["median_ms"])
    compact = rows["compact_squeezebert", 2]
    assert compact["replaces"] == "squeezebert"
    assert compact["speedup_vs_replaced"] == pytest.approx(rows["squeezebert", 2]["median_ms"] / compact["median_ms"])
    assert "compact_squeezebert" in completed.stdout and "kernels chosen on" in completed.stdout


@pytest.mark.slow
def test_speed_benchmark_profile_reports_where_the_time_goes(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--device", "cpu", "--threads", "1",
         "--profile", "compact_squeezebert", "--batch-sizes", "1", "--repeats", "1",
         "--output", str(tmp_path / "speed.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "compact_squeezebert, batch 1 x 16" in completed.stdout
    # With sdpa's fused kernel the attention is reported apart; the kernel chosen here may run it as matrix products.
    fused = "matrix products (projections):" in completed.stdout and "fused attention:" in completed.stdout
    assert fused or "matrix products (projections and attention):" in completed.stdout
    assert "everything else:" in completed.stdout
    assert not (tmp_path / "speed.json").exists()  # a profile writes no JSON
