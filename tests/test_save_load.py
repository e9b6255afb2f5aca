"""Fuser-only checkpoints: save, Auto-class loading, remote code, base loading and mismatch errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import FUSER_KWARGS
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_models import build, saved_bases, sharer_configs
from transformers import AutoModel, AutoModelForCausalLM

from c2c_hf import C2CConfig, C2CForCausalLM

IDS = torch.tensor([[5, 17, 42, 8, 77, 23, 61, 9, 30, 12], [44, 3, 90, 15, 7, 66, 21, 50, 11, 38]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Bases saved to local folders, a C2C model over them (loaded from those folders) saved to another."""
    root = tmp_path_factory.mktemp("c2c")
    receiver, sharer = saved_bases(root)
    build(sharer_configs()["qwen2"], seed=2).save_pretrained(root / "other-sharer")
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharer, **FUSER_KWARGS).eval()
    with torch.no_grad():
        for parameter in model.fuser.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        reference = model(IDS).logits
    model.save_pretrained(root / "c2c")
    torch.save(reference, root / "reference.pt")
    return root, model, reference


def test_checkpoint_holds_only_the_fuser(saved):
    root, model, _ = saved
    files = sorted(os.listdir(root / "c2c"))
    assert files == [
        "README.md", "alignment.py", "atomic.py", "cache.py", "config.json", "configuration_c2c.py", "fuser.py",
        "generation_config.json", "lm_eval_guard.py", "loading.py", "lora.py", "model.safetensors", "modeling_c2c.py", "validation.py",
    ]
    with safe_open(root / "c2c" / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert keys == {f"fuser.{name}" for name, _ in model.fuser.named_parameters()}
    config = json.loads((root / "c2c" / "config.json").read_text())
    assert config["receiver_name_or_path"] == "../receiver"  # bases beside the folder: named relative to it
    assert config["sharer_name_or_path"] == "../sharer"
    assert model.config.receiver_name_or_path == str(root / "receiver")  # in memory: unchanged by the save
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_c2c.C2CForCausalLM"


@pytest.mark.parametrize("auto_class", [AutoModelForCausalLM, AutoModel, C2CForCausalLM])
def test_reload_gives_identical_logits(saved, auto_class):
    root, _, reference = saved
    loaded = auto_class.from_pretrained(root / "c2c")
    assert isinstance(loaded, C2CForCausalLM) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, reference)
    assert all(not p.requires_grad for n, p in loaded.named_parameters() if not n.startswith("fuser."))


@pytest.mark.parametrize("fusion", ["weighted", "projection"])
def test_ablation_fusions_round_trip(saved, tmp_path, fusion):
    """A fuser without gates (and without receiver input) saves its own tensors and reloads to identical logits."""
    _, model, _ = saved
    torch.manual_seed(1)
    variant = C2CForCausalLM.from_base_models(model.receiver, model.sharer, **FUSER_KWARGS, fusion=fusion).eval()
    variant.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        assert set(weights.keys()) == {f"fuser.{name}" for name, _ in variant.fuser.named_parameters()}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, receiver=model.receiver, sharer=model.sharer)
    assert loaded.config.fusion == fusion
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, variant(IDS).logits)


def test_remote_code_loads_without_importing_c2c_hf(saved):
    root, _, _ = saved
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(root / 'c2c')!r}, trust_remote_code=True)
assert "c2c_hf" not in sys.modules, "c2c_hf was imported"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
ids = torch.tensor({IDS.tolist()})
with torch.no_grad():
    assert torch.equal(model(ids).logits, torch.load({str(root / 'reference.pt')!r}, weights_only=True))
print("remote-ok", model.generate(ids, max_new_tokens=3, do_sample=False).shape[1])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote-ok 13" in result.stdout


def test_load_kwargs_reach_the_bases_and_fuser_stays_fp32(saved):
    root, _, _ = saved
    loaded = AutoModelForCausalLM.from_pretrained(root / "c2c", dtype=torch.bfloat16)
    assert loaded.receiver.dtype == torch.bfloat16 and loaded.sharer.dtype == torch.bfloat16
    assert {p.dtype for p in loaded.fuser.parameters()} == {torch.float32}
    with torch.no_grad():
        assert loaded.generate(IDS, max_new_tokens=3, do_sample=False).shape == (2, 13)


def test_already_loaded_bases_are_used_as_given(saved):
    root, model, reference = saved
    loaded = C2CForCausalLM.from_pretrained(root / "c2c", receiver=model.receiver, sharer=model.sharer)
    assert loaded.receiver is model.receiver and loaded.sharer is model.sharer
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, reference)


def test_mismatched_bases_fail_naming_both(saved):
    root, _, _ = saved
    other = AutoModelForCausalLM.from_pretrained(root / "other-sharer")
    with pytest.raises(ValueError) as error:
        C2CForCausalLM.from_pretrained(root / "c2c", sharer=other)
    message = str(error.value)
    assert f"sharer {root / 'sharer'} with KV cache (layers, kv heads, head dim) = (6, 3, 32)" in message
    assert f"the sharer given ({root / 'other-sharer'}) has (3, 1, 12)" in message


def test_missing_base_repo_is_named(saved, tmp_path):
    root, _, _ = saved
    config = C2CConfig.from_pretrained(root / "c2c")
    config.receiver_name_or_path = "no-such-org/no-such-receiver"
    with pytest.raises(OSError, match="Could not load the C2C receiver 'no-such-org/no-such-receiver'"):
        C2CForCausalLM.from_pretrained(root / "c2c", config=config, local_files_only=True)
    config.receiver_name_or_path = None
    with pytest.raises(ValueError, match="names no receiver"):
        C2CForCausalLM.from_pretrained(root / "c2c", config=config)


def test_checkpoint_that_does_not_match_its_config_fails(saved, tmp_path):
    root, model, _ = saved
    config = C2CConfig.from_pretrained(root / "c2c")
    config.fuser_hidden_size = config.fuser_intermediate_size = 24
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        C2CForCausalLM.from_pretrained(root / "c2c", config=config)
    # A checkpoint that lacks tensors (here: one layer's fuser) is refused, not silently re-initialised.
    truncated = tmp_path / "truncated"
    model.save_pretrained(truncated)
    with safe_open(truncated / "model.safetensors", "pt") as weights:
        kept = {k: weights.get_tensor(k) for k in weights.keys() if not k.startswith("fuser.layers.3.")}
    save_file(kept, truncated / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"does not match its C2C config .*'missing_keys': \['fuser.layers.3.key.gate_logit'"):
        C2CForCausalLM.from_pretrained(truncated)
