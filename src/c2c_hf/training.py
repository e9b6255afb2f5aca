"""Training a fuser with the stock `transformers.Trainer`: gate annealing and a checked resume."""

from __future__ import annotations

import json
import os

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

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


__all__ = ["GateTemperatureCallback", "check_resume_checkpoint", "make_trainer", "unwrap_c2c"]
