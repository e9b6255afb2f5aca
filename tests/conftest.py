"""Shared fixtures: tiny random bases (built once per session) and a factory for C2C models over them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never need the Hub: fail fast instead of retrying

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build, receiver_config, sharer_configs

from c2c_hf import C2CForCausalLM

SHARERS = tuple(sharer_configs())
FUSER_KWARGS = dict(fuser_hidden_size=32, fuser_intermediate_size=48, fuser_dropout=0.0)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and intra-op threads on a busy CPU slow them down by 10-40x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def receiver():
    return build(receiver_config(), seed=0)


@pytest.fixture(scope="session")
def sharers():
    return {name: build(config, seed=1 + i) for i, (name, config) in enumerate(sharer_configs().items())}


@pytest.fixture
def make_c2c(receiver, sharers):
    """`make_c2c(sharer_name, **config_kwargs)`: a C2C model in eval mode with a seeded fuser (gates open)."""

    def make(sharer_name: str = "qwen2", seed: int = 0, **config_kwargs) -> C2CForCausalLM:
        torch.manual_seed(seed)
        model = C2CForCausalLM.from_base_models(receiver, sharers[sharer_name], **{**FUSER_KWARGS, **config_kwargs})
        # A visible fuser: larger output weights than the init, so that fusion changes logits clearly.
        with torch.no_grad():
            for layer in model.fuser.layers:
                for branch in (layer.key, layer.value):
                    branch.out_proj.weight.normal_(std=0.5)
        return model.eval()

    return make


def set_gates(model: C2CForCausalLM, logit: float) -> None:
    with torch.no_grad():
        for layer in model.fuser.layers:
            layer.key.gate_logit.fill_(logit)
            layer.value.gate_logit.fill_(logit)
