"""A LoRA (peft) on the frozen receiver, trained beside the fuser and saved in the same checkpoint.

The checkpoint's `model.safetensors` holds the fuser's tensors (`fuser.*`) and the receiver's LoRA tensors
(`receiver.*.lora_*`); the config's `receiver_lora` holds the LoRA settings, so loading re-injects the adapter and
fills it. The same LoRA is also saved in peft's adapter format in `receiver_adapter/` (`adapter_config.json`,
`adapter_model.safetensors`), so that the receiver with its LoRA is usable without c2c_hf:
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<receiver>), "<checkpoint>/receiver_adapter")`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from torch import nn

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# The checkpoint folder holding the receiver LoRA in peft's adapter format.
RECEIVER_ADAPTER_FOLDER = "receiver_adapter"
# The name peft gives the one adapter `inject_receiver_lora` adds.
ADAPTER_NAME = "default"


def is_trained_key(key: str) -> bool:
    """Whether a C2C state-dict key belongs in a checkpoint: the fuser, and the receiver's LoRA if any."""
    return key.startswith("fuser.") or (key.startswith("receiver.") and ".lora_" in key)


def inject_receiver_lora(
    receiver: nn.Module, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, target_modules: list[str] | None = None
) -> dict[str, Any]:
    """Inject a trainable LoRA into `receiver` (only its LoRA tensors train); returns the settings to store."""
    from peft import LoraConfig, inject_adapter_in_model

    if any(".lora_" in name for name, _ in receiver.named_parameters()):
        raise ValueError("The receiver already carries a LoRA: add_receiver_lora injects one adapter only.")
    settings = dict(
        r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=list(target_modules or DEFAULT_TARGET_MODULES),
    )  # fmt: skip
    inject_adapter_in_model(LoraConfig(**settings), receiver)
    for name, parameter in receiver.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    return settings


def save_receiver_adapter(
    receiver: nn.Module, save_directory: str | os.PathLike, base_model_name_or_path: str | None, revision: str | None
) -> None:
    """Write the receiver's LoRA (injected by `inject_receiver_lora`) in peft's adapter format into
    `save_directory/receiver_adapter/`, the files `PeftModel.save_pretrained` writes: `adapter_config.json` (naming
    `base_model_name_or_path` at `revision`, task type CAUSAL_LM) and `adapter_model.safetensors` (peft's keys,
    `base_model.model.<module>.lora_A.weight`)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = copy.deepcopy(receiver.peft_config[ADAPTER_NAME])
    config.base_model_name_or_path, config.revision = base_model_name_or_path, revision
    config.task_type, config.inference_mode = "CAUSAL_LM", True
    folder = Path(save_directory, RECEIVER_ADAPTER_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    state = get_peft_model_state_dict(receiver, adapter_name=ADAPTER_NAME)
    tensors = {f"base_model.model.{key}": tensor.detach().cpu().contiguous() for key, tensor in state.items()}
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})


WRAPPER_PEFT_REFUSAL = (
    "peft adapters on a whole C2CForCausalLM (get_peft_model, model.add_adapter) are not supported: they would "
    "wrap the sharer's and the fuser's layers too, freeze the fuser, and save only the adapter (a PeftModel's "
    "save_pretrained) while a merge would change the receiver, which a C2C checkpoint never holds. The injected "
    "layers were removed again{clobbered}. Add a LoRA to the receiver with model.add_receiver_lora(r=8, "
    "lora_alpha=16, target_modules={targets}): it trains beside the fuser (make_trainer, or `c2c-hf train "
    "--receiver-lora-r 8`), is saved in the C2C checkpoint and, in peft's format, in its receiver_adapter/ folder."
)


def refuse_wrapper_adapter(model: nn.Module, peft_config: dict[str, Any]) -> None:
    """Undo a peft injection into a whole C2C `model` and raise a `ValueError` that names the supported way.

    peft calls this (through `C2CForCausalLM.peft_config`'s setter) at the end of `get_peft_model` /
    `inject_adapter_in_model`, after it wrapped every matching layer and froze every other parameter: the wrapped
    layers are unwrapped (the receiver LoRA of `add_receiver_lora`, adapter `default`, stays) and the fuser trains
    again, so the model is as it was, unless the new adapter was also named `default` and hit the receiver LoRA's
    layers, whose LoRA tensors peft then re-initialised (the error says so).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    new_adapters = set(peft_config)
    own_lora = model.config.receiver_lora
    own_targets = set(own_lora["target_modules"]) if own_lora is not None else set()
    clobbered = False
    for name, module in list(model.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        if name.startswith("receiver.") and name.rpartition(".")[2] in own_targets:
            clobbered |= ADAPTER_NAME in new_adapters
            for adapter in new_adapters - {ADAPTER_NAME}:
                module.delete_adapter(adapter)
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    for parameter in model.fuser.parameters():
        parameter.requires_grad_(True)
    targets = sorted(next(iter(peft_config.values())).target_modules or DEFAULT_TARGET_MODULES)
    clobbered_text = (
        " (the receiver's own LoRA layers, adapter 'default', were re-initialised by peft: reload the checkpoint)"
        if clobbered else ""
    )  # fmt: skip
    raise ValueError(WRAPPER_PEFT_REFUSAL.format(clobbered=clobbered_text, targets=targets))


def load_receiver_lora(model: nn.Module, pretrained_model_name_or_path: str | os.PathLike, hub_kwargs: dict) -> None:
    """Fill the receiver LoRA of a C2C `model` (already injected) from the checkpoint's weights file."""
    from safetensors.torch import load_file
    from transformers.utils.hub import cached_file

    weights = load_file(cached_file(pretrained_model_name_or_path, "model.safetensors", **hub_kwargs))
    lora_state = {k: v for k, v in weights.items() if k.startswith("receiver.")}
    expected = {k for k in model.state_dict() if k.startswith("receiver.") and ".lora_" in k}
    if set(lora_state) != expected:
        raise ValueError(
            f"The receiver LoRA in {pretrained_model_name_or_path} does not match its config: missing "
            f"{sorted(expected - set(lora_state))[:5]}, unexpected {sorted(set(lora_state) - expected)[:5]}."
        )
    model.receiver.load_state_dict({k.removeprefix("receiver."): v for k, v in lora_state.items()}, strict=False)


__all__ = [
    "ADAPTER_NAME", "DEFAULT_TARGET_MODULES", "RECEIVER_ADAPTER_FOLDER", "inject_receiver_lora", "is_trained_key",
    "load_receiver_lora", "refuse_wrapper_adapter", "save_receiver_adapter",
]  # fmt: skip
