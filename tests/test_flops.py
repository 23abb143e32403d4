import pytest
from transformers import BertConfig

from hf_compact import CompactDistilBertConfig, CompactSqueezeBertConfig
from hf_compact.flops import encoder_flops, flops_per_token


def test_dense_count_matches_twice_the_matmul_weights_plus_attention():
    config = CompactDistilBertConfig(n_layers=2, dim=64, n_heads=4, hidden_dim=256)
    # 4 projections of 64x64 and 2 of 64x256, times 2 FLOPs per multiply-add, plus 2 attention products.
    per_layer = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 4 * 32 * 64
    assert flops_per_token(config, sequence_length=32) == 2 * per_layer
    assert encoder_flops(config, batch_size=3, sequence_length=32) == 3 * 32 * 2 * per_layer


def test_grouped_projections_divide_by_their_groups():
    config = CompactSqueezeBertConfig(
        num_hidden_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=256, embedding_size=64,
        q_groups=4, k_groups=2, v_groups=1, post_attention_groups=1, intermediate_groups=4, output_groups=8,
    )
    projections = 2 * 64 * 64 * (1 / 4 + 1 / 2 + 1 + 1) + 2 * 64 * 256 * (1 / 4 + 1 / 8)
    assert flops_per_token(config, sequence_length=16) == pytest.approx(projections + 4 * 16 * 64, abs=1)


def test_bert_base_is_about_175_megaflops_per_token():
    assert flops_per_token(BertConfig(), sequence_length=128) / 1e6 == pytest.approx(174.6, abs=0.1)
