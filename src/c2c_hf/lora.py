"""A LoRA (peft) on the frozen receiver, trained beside the fuser and saved in the same checkpoint.

The checkpoint's `model.safetensors` holds the fuser's tensors (`fuser.*`) and the receiver's LoRA tensors
(`receiver.*.lora_*`); the config's `receiver_lora` holds the LoRA settings, so loading re-injects the adapter and
fills it.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


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


__all__ = ["DEFAULT_TARGET_MODULES", "inject_receiver_lora", "is_trained_key", "load_receiver_lora"]
