"""The receiver LoRA in peft's adapter format: saved beside the fuser, loadable by `PeftModel.from_pretrained` on the
receiver alone, and C2C loads (new and older checkpoints) without "UNEXPECTED" key reports."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from conftest import FUSER_KWARGS
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_models import saved_bases
from transformers import AutoModelForCausalLM

from c2c_hf import C2CForCausalLM

IDS = torch.tensor([[5, 17, 42, 8, 77, 23, 61, 9, 30, 12], [44, 3, 90, 15, 7, 66, 21, 50, 11, 38]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Bases in local folders; a C2C model with a trained-looking receiver LoRA (non-zero B) saved beside them."""
    root = tmp_path_factory.mktemp("lora")
    receiver, sharer = saved_bases(root)
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(receiver, sharer, **FUSER_KWARGS).eval()
    model.add_receiver_lora(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name or name.startswith("fuser."):
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(root / "c2c")
    return root, model


def test_receiver_lora_is_saved_in_peft_adapter_format(saved):
    root, _ = saved
    adapter = root / "c2c" / "receiver_adapter"
    assert sorted(os.listdir(adapter)) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
    assert config["base_model_name_or_path"] == str(root / "receiver")
    with safe_open(adapter / "adapter_model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert keys == {
        f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{ab}.weight" for i in range(4) for m in ("q_proj", "v_proj") for ab in "AB"
    }
    with safe_open(root / "c2c" / "model.safetensors", "pt") as weights:  # the C2C checkpoint keeps them too
        assert sum(".lora_" in key for key in weights.keys()) == len(keys)


def test_peft_loads_the_adapter_on_the_receiver_alone(saved):
    root, model = saved
    with torch.no_grad():
        expected = model.receiver(IDS).logits
        plain = AutoModelForCausalLM.from_pretrained(root / "receiver").eval()(IDS).logits
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "receiver"), root / "c2c" / "receiver_adapter").eval()
        got = peft_model(IDS).logits
    assert (plain - expected).abs().max() > 1e-3  # the LoRA changes the receiver: the comparison below means something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_loading_a_lora_checkpoint_reports_no_unexpected_keys(saved, capfd):
    root, model = saved
    capfd.readouterr()
    reloaded = C2CForCausalLM.from_pretrained(root / "c2c")
    captured = capfd.readouterr()
    assert "UNEXPECTED" not in captured.err + captured.out
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, model(IDS).logits, atol=1e-5, rtol=0)


def test_an_older_checkpoint_without_the_adapter_folder_still_loads(saved, capfd):
    """Checkpoints saved before `receiver_adapter/` existed hold the LoRA in model.safetensors only."""
    root, model = saved
    shutil.copytree(root / "c2c", root / "old")  # beside the bases, as the original
    shutil.rmtree(root / "old" / "receiver_adapter")
    assert any(".lora_" in key for key in load_file(root / "old" / "model.safetensors"))
    capfd.readouterr()
    reloaded = C2CForCausalLM.from_pretrained(root / "old")
    assert "UNEXPECTED" not in capfd.readouterr().err
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, model(IDS).logits, atol=1e-5, rtol=0)


def test_a_save_without_lora_drops_an_earlier_adapter_folder(saved, tmp_path):
    root, model = saved
    shutil.copytree(root / "c2c", tmp_path / "c2c")
    plain = C2CForCausalLM.from_base_models(model.receiver.__class__(model.receiver.config), model.sharer, **FUSER_KWARGS)
    plain.save_pretrained(tmp_path / "c2c")
    assert not (tmp_path / "c2c" / "receiver_adapter").exists()
