"""C2CConfig: layer maps, validation errors, fuser size."""

from __future__ import annotations

import pytest
import torch
from tiny_models import receiver_config, sharer_configs
from transformers import AutoConfig, Qwen2Config, Qwen3Config

from c2c_hf import C2CConfig, C2CFuser, build_layer_map


def make_config(**kwargs) -> C2CConfig:
    return C2CConfig(text_config=receiver_config(), sharer_config=sharer_configs()["llama"], **kwargs)


def test_terminal_map_aligns_deepest_layers():
    assert build_layer_map("terminal", 4, 6) == [2, 3, 4, 5]
    assert build_layer_map("terminal", 5, 3) == [0, 0, 0, 1, 2]
    assert build_layer_map("terminal", 28, 24)[-1] == 23 and build_layer_map("terminal", 28, 24)[:5] == [0] * 5


def test_proportional_map_spans_both_depths():
    assert build_layer_map("proportional", 4, 7) == [0, 2, 4, 6]
    assert build_layer_map("proportional", 1, 5) == [4]


def test_explicit_map_is_kept():
    assert make_config(layer_map=[5, 4, 3, 2]).resolved_layer_map() == [5, 4, 3, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layer_map=[0, 1, 2]), "layer_map has 3 entries but the receiver has 4 layers"),
        (dict(layer_map=[0, 1, 2, 6]), "layer_map entries [6] are out of range: the sharer has 6 layers"),
        (dict(layer_map=[0, -1, 2, 3]), "layer_map entries [-1] are out of range"),
        (dict(layer_map="deepest"), "Unknown layer_map strategy 'deepest'"),
        (dict(fuser_hidden_size=0), "fuser_hidden_size must be a positive integer, got 0"),
        (dict(fuser_intermediate_size=-8), "fuser_intermediate_size must be a positive integer, got -8"),
        (dict(fuser_num_blocks=1), "fuser_num_blocks must be an integer >= 2"),
        (dict(fuser_dropout=1.0), "fuser_dropout must be in [0, 1), got 1.0"),
        (dict(gate_temperature_end=0.0), "gate_temperature_end must be positive, got 0.0"),
        (dict(token_alignment="middle"), "Unknown token_alignment 'middle'"),
        (dict(fusion="concat"), "Unknown fusion 'concat': use one of ('projection', 'weighted', 'gated')"),
        (dict(fusion="projection", fuser_zero_init=True), "fusion='projection' replaces the receiver's KV"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        make_config(**kwargs)
    assert message in str(error.value)


def test_config_round_trips_through_auto_config(tmp_path):
    config = make_config(layer_map="proportional", fuser_hidden_size=40, receiver_name_or_path="org/receiver")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, C2CConfig)
    assert loaded.resolved_layer_map() == config.resolved_layer_map()
    assert (loaded.fuser_hidden_size, loaded.fuser_intermediate_size) == (40, 40)
    assert loaded.receiver_name_or_path == "org/receiver"
    assert loaded.text_config.model_type == "qwen3" and loaded.sharer_config.model_type == "llama"
    assert loaded.receiver_kv_shape == (4, 2, 16) and loaded.sharer_kv_shape == (6, 3, 32)


def paper_pair_config() -> C2CConfig:
    """Receiver Qwen3-0.6B shapes (28 layers, 8 KV heads x 128); sharer Qwen2.5-0.5B (24 layers, 2 KV heads x 64)."""
    receiver = Qwen3Config(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128
    )
    sharer = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2)
    return C2CConfig(text_config=receiver, sharer_config=sharer)


def test_fuser_parameter_count_at_paper_shapes():
    config = paper_pair_config()
    with torch.device("meta"):
        fuser = C2CFuser(config)
    count = sum(p.numel() for p in fuser.parameters())
    hidden, receiver_dim, sharer_dim, heads = 1024, 8 * 128, 2 * 64, 8
    block = hidden + 2 * hidden * hidden  # RMSNorm + two bias-free linears
    branch = (
        (sharer_dim + receiver_dim) * hidden + hidden  # input projection
        + 2 * block  # shared block + one projection block
        + hidden * receiver_dim + receiver_dim  # output projection
        + block + hidden * heads + heads  # weight block and head
        + 1  # gate logit
    )
    print(f"fuser parameters at the paper pair's shapes: {count:,}")
    assert count == 28 * 2 * branch == 477_848_056

