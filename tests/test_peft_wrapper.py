"""peft on the whole C2C wrapper (`get_peft_model`) is refused with the supported way named, and leaves the model as
it was: no wrapped sharer / fuser / receiver layers, the fuser still trainable, a receiver LoRA kept."""

from __future__ import annotations

import pytest
import torch
from conftest import FUSER_KWARGS
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from tiny_models import build, receiver_config, sharer_configs

from c2c_hf import C2CForCausalLM

IDS = torch.tensor([[5, 17, 42, 8, 77, 23, 61, 9, 30, 12]])
REFUSAL = (
    "peft adapters on a whole C2CForCausalLM (get_peft_model, model.add_adapter) are not supported: they would wrap "
    "the sharer's and the fuser's layers too, freeze the fuser, and save only the adapter (a PeftModel's "
    "save_pretrained) while a merge would change the receiver, which a C2C checkpoint never holds. The injected layers "
    "were removed again{}. Add a LoRA to the receiver with model.add_receiver_lora(r=8, lora_alpha=16, "
    "target_modules={}): it trains beside the fuser (make_trainer, or `c2c-hf train --receiver-lora-r 8`), is saved "
    "in the C2C checkpoint and, in peft's format, in its receiver_adapter/ folder."
)


def c2c_model(receiver_lora: bool) -> C2CForCausalLM:
    torch.manual_seed(0)
    model = C2CForCausalLM.from_base_models(build(receiver_config(), 0), build(sharer_configs()["llama"], 1), **FUSER_KWARGS)
    if receiver_lora:
        model.add_receiver_lora(r=4, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("fuser.") or ".lora_B" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def snapshot(model: C2CForCausalLM):
    return (
        [(name, type(module)) for name, module in model.named_modules()],
        {name: (tensor.clone(), tensor.requires_grad) for name, tensor in model.named_parameters()},
    )


@pytest.mark.parametrize("receiver_lora", [False, True], ids=["plain", "with-receiver-lora"])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]])
def test_get_peft_model_on_the_wrapper_is_refused_and_undone(receiver_lora, targets):
    model = c2c_model(receiver_lora)
    modules, parameters = snapshot(model)
    with torch.no_grad():
        logits = model(IDS).logits
    with pytest.raises(ValueError) as raised:
        get_peft_model(model, LoraConfig(r=2, target_modules=targets), adapter_name="mine")
    assert str(raised.value) == REFUSAL.format("", sorted(targets))
    assert snapshot(model)[0] == modules  # no peft layer left in the sharer, the fuser or the receiver
    for name, (tensor, requires_grad) in snapshot(model)[1].items():
        assert torch.equal(tensor, parameters[name][0]) and requires_grad == parameters[name][1], name
    assert all(p.requires_grad for p in model.fuser.parameters())  # peft froze it: trainable again
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, logits, atol=0, rtol=0)
    assert not hasattr(model, "peft_config")


def test_a_default_named_adapter_over_the_receiver_lora_says_it_was_reinitialised():
    model = c2c_model(receiver_lora=True)
    with pytest.raises(ValueError) as raised:
        get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    clobbered = " (the receiver's own LoRA layers, adapter 'default', were re-initialised by peft: reload the checkpoint)"
    assert str(raised.value) == REFUSAL.format(clobbered, ["q_proj"])
    assert not any(isinstance(m, BaseTunerLayer) for m in model.sharer.modules())
    assert not any(isinstance(m, BaseTunerLayer) for m in model.fuser.modules())
