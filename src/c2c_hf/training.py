"""Training a fuser with the stock `transformers.Trainer`: gate annealing, a checked resume, and the frozen sharer's
prompt KV computed once per prompt instead of once per step."""

from __future__ import annotations

import json
import os

import torch
from transformers import DynamicCache, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .cache import C2CCache
from .modeling_c2c import C2CForCausalLM


def unwrap_c2c(model) -> C2CForCausalLM:
    """The `C2CForCausalLM` inside a (peft / DDP) wrapper, or the model itself."""
    while not isinstance(model, C2CForCausalLM):
        inner = getattr(model, "module", None) or getattr(model, "base_model", None)
        if inner is None or inner is model:
            raise TypeError(f"Expected a C2CForCausalLM (possibly wrapped), got {type(model).__name__}.")
        model = inner
    return model


class GateTemperatureCallback(TrainerCallback):
    """Anneals the relaxed gates' temperature over training, from `gate_temperature_start` to `_end` (exponential).

    The temperature is a function of `global_step / max_steps`, so a resumed run continues the same schedule.
    """

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        c2c = unwrap_c2c(model)
        c2c.set_gate_temperature(c2c.config.gate_temperature_at(state.global_step / max(state.max_steps, 1)))


def check_resume_checkpoint(model: C2CForCausalLM, checkpoint: str | os.PathLike) -> None:
    """Refuse to resume from a checkpoint written for another pair or fuser shape, naming both."""
    config_file = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{checkpoint} is not a C2C checkpoint: it has no config.json.")
    with open(config_file) as file:
        saved = json.load(file)
    config = model.config
    expected = {
        "model_type": "c2c",
        "receiver_name_or_path": config.receiver_name_or_path,
        "sharer_name_or_path": config.sharer_name_or_path,
        "fuser_hidden_size": config.fuser_hidden_size,
        "fuser_intermediate_size": config.fuser_intermediate_size,
        "fuser_num_blocks": config.fuser_num_blocks,
        "layer_map": config.layer_map,
    }
    differences = {key: (saved.get(key), value) for key, value in expected.items() if saved.get(key) != value}
    if differences:
        details = "; ".join(f"{key}: checkpoint {old!r} vs this model {new!r}" for key, (old, new) in differences.items())
        raise ValueError(f"Cannot resume from {checkpoint}: it was written for another C2C model ({details}).")


class SharerCacheMemo:
    """The frozen sharer's KV over each training prompt, computed the first time a batch holds the prompt and reused
    every later time (each further epoch): the sharer then runs once per distinct prompt instead of once per step.
    Costs memory: every layer's sharer KV of every distinct prompt, kept on the CPU.

    Give it to the collator, `C2CDataCollator.for_tokenizer(tokenizer, sharer_caches=SharerCacheMemo(model))`: its
    batches then carry a `C2CCache` holding the sharer's KV, which `C2CForCausalLM.forward` fuses instead of running
    the sharer. The losses equal those of running the sharer on every batch (to float rounding: a prompt's KV is
    computed in one batch and reused in others). The sharer runs inside the collator, so data loading must stay in
    the main process (`dataloader_num_workers=0`, the default).
    """

    def __init__(self, model: C2CForCausalLM):
        self.model = unwrap_c2c(model)
        # The receiver ids of a prompt's fused tokens -> per sharer layer, its (keys, values), each (H_s, n, D_s).
        self.prompts: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.prompts)

    def batch_cache(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor, num_fused: int) -> C2CCache:
        """A `C2CCache` holding the sharer's KV of the left-padded prompts' first `num_fused` positions (zeros at
        padding), from the memo, the sharer running only on prompts it has not seen."""
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                "SharerCacheMemo runs the sharer while collating, which a DataLoader worker process cannot share: "
                "set dataloader_num_workers=0."
            )
        ids, mask = input_ids[:, :num_fused], attention_mask[:, :num_fused]  # (B, F) each
        keys = [tuple(row[row_mask.bool()].tolist()) for row, row_mask in zip(ids, mask)]
        device = self.model.sharer.device
        new_rows = list({key: row for row, key in enumerate(keys) if key not in self.prompts}.values())
        if new_rows:
            with torch.no_grad():
                computed = self.model.sharer_cache_for(ids[new_rows].to(device), mask[new_rows].to(device), num_fused)
            for i, row in enumerate(new_rows):
                real = slice(num_fused - len(keys[row]), num_fused)  # a left-padded row's real tokens
                self.prompts[keys[row]] = [
                    (layer.keys[i, :, real].cpu().clone(), layer.values[i, :, real].cpu().clone())
                    for layer in computed.layers
                ]
        layers = []
        for layer_idx in range(len(self.prompts[keys[0]])):
            layer_kv = []
            for part in (0, 1):  # keys, values
                stored = [self.prompts[key][layer_idx][part] for key in keys]  # each (H_s, n, D_s)
                heads, _, dim = stored[0].shape
                padded = stored[0].new_zeros(len(keys), heads, num_fused, dim)  # (B, H_s, F, D_s)
                for row, kv in enumerate(stored):
                    padded[row, :, num_fused - kv.shape[1] :] = kv
                layer_kv.append(padded.to(device))
            layers.append(tuple(layer_kv))
        return C2CCache(self.model.receiver.config, DynamicCache(ddp_cache_data=layers) if layers else None)


def make_trainer(model: C2CForCausalLM, args: TrainingArguments, train_dataset, data_collator, **trainer_kwargs) -> Trainer:
    """A stock `Trainer` for the fuser, with the gate-temperature schedule; only the fuser is trainable."""
    callbacks = [GateTemperatureCallback(), *trainer_kwargs.pop("callbacks", [])]
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        callbacks=callbacks,
        **trainer_kwargs,
    )


__all__ = ["GateTemperatureCallback", "SharerCacheMemo", "check_resume_checkpoint", "make_trainer", "unwrap_c2c"]
