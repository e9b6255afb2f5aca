"""Training a fuser with the stock `transformers.Trainer`: gate annealing, a checked resume that skips checkpoints a
killed run left incomplete, and the frozen sharer's prompt KV computed once per prompt instead of once per step."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Sized
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import DynamicCache, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.modelcard import extract_hyperparameters_from_trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .atomic import atomic_write_text
from .cache import C2CCache
from .hub import TRAINING_FILE, write_model_card
from .loading import BASE_NAME_FIELDS, resolve_base_reference
from .modeling_c2c import C2CForCausalLM

logger = logging.get_logger(__name__)

CHECKPOINT_FOLDER = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")  # Trainer's `checkpoint-<global step>` folders
# Evaluation log entries that time the evaluation rather than measure the model (left out of the model card).
EVAL_TIMINGS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
# Files only Trainer writes into a checkpoint (a folder holding none of them is a plain `save_pretrained` folder).
TRAINER_FILES = (TRAINER_STATE_NAME, "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


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


def checkpoint_problems(checkpoint: str | os.PathLike) -> list[str]:
    """What is missing or cut short in the Trainer checkpoint folder `checkpoint` (empty when it is complete).

    Complete means: `trainer_state.json` is there (`Trainer._save_checkpoint` writes it last, after the model through
    `save_pretrained`, the tokenizer, the training arguments, the optimizer, scheduler, scaler and RNG states), and
    every file in the folder (sub-folders included) is whole: each JSON file parses; each safetensors file has a
    whole header and all the data it announces; a sharded index names only shards that are there; each torch file
    (`.pt`, `.pth`, `.bin`) is a whole zip archive. Only headers and archive ends are read: nothing is unpickled.
    """
    folder = Path(checkpoint)
    problems = [] if (folder / TRAINER_STATE_NAME).is_file() else [f"no {TRAINER_STATE_NAME}"]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name.endswith(".json"):
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                problems.append(f"{name} is cut short")
                continue
            if name.endswith(".safetensors.index.json"):
                for shard in sorted(set(content.get("weight_map", {}).values())):
                    if not (path.parent / shard).is_file():
                        problems.append(f"{shard} (named by {name}) is missing")
        elif name.endswith(".safetensors"):
            try:
                with safe_open(path, "pt"):
                    pass
            except (SafetensorError, OSError):
                problems.append(f"{name} is cut short")
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            problems.append(f"{name} is cut short")
    return problems


def _newest_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[str | None, list[str]]:
    """The newest complete `checkpoint-N` folder of `output_dir` (or None), and the newer incomplete ones, each
    described with its problems."""
    if not os.path.isdir(output_dir):
        return None, []
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := CHECKPOINT_FOLDER.fullmatch(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    incomplete = []
    for _, name in reversed(steps):
        problems = checkpoint_problems(os.path.join(output_dir, name))
        if not problems:
            return os.path.join(output_dir, name), incomplete
        incomplete.append(f"{name} ({'; '.join(problems)})")
    return None, incomplete


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` folder in `output_dir` (`checkpoint_problems`), what a resume picks; None
    when there is none (or no `output_dir`). Newer incomplete ones, which a run killed while writing them leaves,
    are skipped with a warning naming each and what is wrong with it; training writes them again."""
    checkpoint, incomplete = _newest_complete_checkpoint(output_dir)
    if incomplete:
        logger.warning(
            f"Skipping incomplete checkpoints in {output_dir} (a run stopped while writing them; training writes them "
            f"again): {', '.join(incomplete)}. "
            + (f"Resuming from {checkpoint}." if checkpoint else "No complete checkpoint is left.")
        )
    return checkpoint


def check_checkpoint_complete(checkpoint: str | os.PathLike) -> None:
    """Refuse to resume from a Trainer checkpoint (a `checkpoint-N` folder, or one holding Trainer's files) that is
    incomplete, naming what is wrong and the last complete checkpoint beside it. A folder saved with
    `save_pretrained` alone (weights only) passes: training then starts from its weights, as `Trainer` does."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return  # `Trainer` reports a missing checkpoint itself
    if not (CHECKPOINT_FOLDER.fullmatch(folder.name) or any((folder / name).exists() for name in TRAINER_FILES)):
        return
    problems = checkpoint_problems(folder)
    if problems:
        complete, _ = _newest_complete_checkpoint(folder.parent)
        raise ValueError(
            f"Cannot resume from {checkpoint}: the checkpoint is incomplete ({'; '.join(problems)}), as a run stopped "
            f"while writing it leaves it. Resume from a complete one ("
            + (f"the last is {complete}" if complete else f"there is none in {folder.parent}")
            + "), or pass resume_from_checkpoint=True to pick the last complete one."
        )


def _real_if_local(name_or_path: str | None) -> str | None:
    """A base name as compared across saves: a local folder's real path, a Hub id as it is."""
    return os.path.realpath(name_or_path) if name_or_path and os.path.isdir(name_or_path) else name_or_path


def check_resume_checkpoint(model: C2CForCausalLM, checkpoint: str | os.PathLike) -> None:
    """Refuse to resume from an incomplete Trainer checkpoint (`check_checkpoint_complete`) or from a checkpoint
    written for another pair or fuser shape, naming both."""
    check_checkpoint_complete(checkpoint)
    config_file = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{checkpoint} is not a C2C checkpoint: it has no config.json.")
    with open(config_file) as file:
        saved = json.load(file)
    config = model.config
    for field in BASE_NAME_FIELDS.values():  # local bases compared as real paths (a save names them relative to it)
        saved[field] = _real_if_local(resolve_base_reference(saved.get(field), checkpoint))
    expected = {
        "model_type": "c2c",
        "receiver_name_or_path": _real_if_local(config.receiver_name_or_path),
        "sharer_name_or_path": _real_if_local(config.sharer_name_or_path),
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
    Costs memory: the sharer KV of every distinct prompt, kept on the CPU, for the sharer layers the fuser reads
    (those of its layer map) only; a batch's other sharer layers are zeros, which no fuser layer reads.

    Give it to the collator, `C2CDataCollator.for_tokenizer(tokenizer, sharer_caches=SharerCacheMemo(model))`: its
    batches then carry a `C2CCache` holding the sharer's KV, which `C2CForCausalLM.forward` fuses instead of running
    the sharer. The losses equal those of running the sharer on every batch (to float rounding: a prompt's KV is
    computed in one batch and reused in others). The sharer runs inside the collator, so data loading must stay in
    the main process (`dataloader_num_workers=0`, the default).
    """

    def __init__(self, model: C2CForCausalLM):
        self.model = unwrap_c2c(model)
        self.read_layers = sorted(set(self.model.fuser.layer_map))  # the sharer layers some receiver layer fuses
        # The receiver ids of a prompt's fused tokens -> per read sharer layer, its (keys, values), each (H_s, n, D_s).
        self.prompts: dict[tuple[int, ...], dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}

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
                self.prompts[keys[row]] = {
                    s: (layer.keys[i, :, real].cpu().clone(), layer.values[i, :, real].cpu().clone())
                    for s, layer in enumerate(computed.layers)
                    if s in self.read_layers
                }
        if num_fused == 0:
            return C2CCache(self.model.receiver.config, None)
        sharer_layers, heads, dim = self.model.config.sharer_kv_shape
        layers = []
        for layer_idx in range(sharer_layers):
            layer_kv = []
            for part in (0, 1):  # keys, values
                padded = torch.zeros(len(keys), heads, num_fused, dim, dtype=self.model.sharer.dtype)  # (B, H_s, F, D_s)
                if layer_idx in self.read_layers:
                    for row, key in enumerate(keys):
                        kv = self.prompts[key][layer_idx][part]  # (H_s, n, D_s)
                        padded[row, :, num_fused - kv.shape[1] :] = kv
                layer_kv.append(padded.to(device))
            layers.append(tuple(layer_kv))
        return C2CCache(self.model.receiver.config, DynamicCache(ddp_cache_data=layers))


def kept_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The columns of `labels` `(B, L)` that the model's kept `logits` `(B, K, V)` cover: its last K, as
    `C2CForCausalLM.forward` keeps the last `logits_to_keep` positions (the last prompt token and the response)."""
    return labels[:, labels.shape[1] - logits.shape[1] :]


class C2CTrainer(Trainer):
    """The stock `Trainer`, with:
    - `train(resume_from_checkpoint=True)` resuming from the last *complete* checkpoint (`last_complete_checkpoint`,
      where the stock one takes the newest folder, however incomplete); a checkpoint given by path must be complete
      (`check_checkpoint_complete`);
    - label smoothing (`label_smoothing_factor`) and evaluation predictions on the positions whose logits the model
      keeps (`C2CDataCollator`'s `logits_to_keep`: the last prompt token and the response): the stock `Trainer`
      assumes logits over every label column;
    - the C2C model card (`hub.write_model_card`) filled from the run (`run_facts`): every save (`save_model`,
      checkpoints) writes it with `training.json`, and `create_model_card` (which `Trainer.push_to_hub` calls before
      its upload) writes it instead of the Trainer's generic card.

    `dataset_name` (the data's Hub id or files, as given), `dataset_selection` (which rows: config, split) and
    `example_messages` (a training conversation whose last message is the trained answer) are for the card;
    unknown, it says "unknown" and asks a generic question.
    """

    def __init__(
        self,
        *args,
        dataset_name: str | None = None,
        dataset_selection: str | None = None,
        example_messages: list[dict[str, str]] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.dataset_name, self.dataset_selection, self.example_messages = dataset_name, dataset_selection, example_messages

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"resume_from_checkpoint=True, but the output_dir {self.args.output_dir} holds no complete "
                    "checkpoint-N folder: train without resume_from_checkpoint to start afresh."
                )
        elif resume_from_checkpoint:
            check_checkpoint_complete(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def run_facts(self, dataset: str | None = None) -> dict[str, Any]:
        """What the model card says about this run (`hub.card_variables` reads the keys): `data` (`dataset`, else
        `dataset_name` with `dataset_selection`, and the training rows), `dataset` (the name alone, for the card's
        metadata), `steps` (optimizer steps so far), the last logged training loss
        (`final train loss`) and the run's mean (`mean train loss`), the last evaluation's metrics (`eval_metrics`,
        timings left out), the Trainer's hyperparameters and the `example` conversation."""
        name = dataset or self.dataset_name
        selection = f" ({self.dataset_selection})" if name and self.dataset_selection and not dataset else ""
        rows = len(self.train_dataset) if isinstance(self.train_dataset, Sized) else None
        data = ", ".join(filter(None, [name and name + selection, None if rows is None else f"{rows} training rows"]))
        history = self.state.log_history
        logged = [entry["loss"] for entry in history if "loss" in entry]
        mean = next((entry["train_loss"] for entry in reversed(history) if "train_loss" in entry), None)
        evaluation = next((entry for entry in reversed(history) if "eval_loss" in entry), {})
        facts = {
            "data": data or None,
            "dataset": name,
            "steps": self.state.global_step,
            "final train loss": logged[-1] if logged else None,
            "mean train loss": mean,
            "eval_metrics": {
                key.removeprefix("eval_"): value for key, value in evaluation.items()
                if key.startswith("eval_") and key not in EVAL_TIMINGS
            } or None,
            "example": self.example_messages,
            **extract_hyperparameters_from_trainer(self),
        }  # fmt: skip
        return {key: value for key, value in facts.items() if value is not None}

    def card_repo_id(self, folder: str | os.PathLike) -> str:
        """The id the card's usage snippet loads: the Hub repo this Trainer pushes to, else `folder`."""
        return getattr(self, "hub_model_id", None) or self.args.hub_model_id or str(folder)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The run's facts (`training.json`) first, then the stock save (the model's `save_pretrained`, the tokenizer,
        the training arguments): the model's save keeps `training.json` and writes the card filled from it. The card
        is written again only when it must name the Hub repo this Trainer pushes to instead of the folder."""
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / TRAINING_FILE, json.dumps(self.run_facts(), indent=2, default=str) + "\n")
        super()._save(output_dir, state_dict)
        repo_id = self.card_repo_id(folder)
        if Path(repo_id) != folder:
            write_model_card(unwrap_c2c(self.model), folder, repo_id=repo_id)

    def create_model_card(
        self,
        language: str | list[str] | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the C2C card (`hub.write_model_card`) into `output_dir` with the run's facts, where the stock method
        writes a generic card (that `Trainer.push_to_hub` would upload over the C2C one). `dataset` (else
        `dataset_tags`) names the data, `language`, `license` and `tags` go to the metadata, `model_name` is the
        name the card's snippet loads (default: the Hub repo, else `output_dir`); `finetuned_from`, `tasks` and
        `dataset_args` are not used: the card names both bases and the text-generation task itself."""
        if not self.is_world_process_zero():
            return
        names = dataset or dataset_tags
        facts = self.run_facts(", ".join(names) if isinstance(names, list) else names)
        folder = Path(self.args.output_dir)
        write_model_card(
            unwrap_c2c(self.model), folder, facts, repo_id=model_name or self.card_repo_id(folder),
            tags=[tags] if isinstance(tags, str) else tags, language=language, license=license,
        )  # fmt: skip

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """With label smoothing, the stock `Trainer` pops the labels before the forward (which then cannot place the
        prompt/response boundary from them) and smooths logits it takes to cover every label column; here the forward
        keeps its labels and the smoothing reads the labels of the kept logits, shifted as for any causal LM."""
        if self.label_smoother is None or self.compute_loss_func is not None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs)
        # Normalised over the whole accumulated batch exactly when `training_step` treats the loss as such.
        num_items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        labels = kept_labels(inputs["labels"], outputs.logits)
        loss = self.label_smoother(outputs, labels, shift_labels=True, num_items_in_batch=num_items)
        if self.args.average_tokens_across_devices and num_items is not None:  # as the stock `compute_loss` scales
            loss *= self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1 else self.args.n_gpu
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys: list[str] | None = None):
        """The stock step, with the labels cut to the columns of the kept logits: `compute_metrics` and
        `preprocess_logits_for_metrics` get predictions and labels of one shape, aligned as for any causal LM
        (`predictions[:, t]` predicts `labels[:, t + 1]`)."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if logits is not None and isinstance(labels, torch.Tensor):
            labels = kept_labels(labels, logits[0] if isinstance(logits, tuple) else logits)
        return loss, logits, labels


def make_trainer(model: C2CForCausalLM, args: TrainingArguments, train_dataset, data_collator, **trainer_kwargs) -> Trainer:
    """A `C2CTrainer` (the stock `Trainer` with a resume that skips incomplete checkpoints) for the fuser, with the
    gate-temperature schedule; only the fuser is trainable. `processing_class` defaults to the model's receiver
    tokenizer, so that every checkpoint holds it (and `AutoTokenizer` / `pipeline` work on it). `dataset_name`,
    `dataset_selection` and `example_messages` (for the model card) go to `C2CTrainer`."""
    callbacks = [GateTemperatureCallback(), *trainer_kwargs.pop("callbacks", [])]
    processing_class = trainer_kwargs.pop("processing_class", None) or unwrap_c2c(model).receiver_tokenizer
    return C2CTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        processing_class=processing_class,
        callbacks=callbacks,
        **trainer_kwargs,
    )


__all__ = [
    "C2CTrainer",
    "GateTemperatureCallback",
    "SharerCacheMemo",
    "check_checkpoint_complete",
    "check_resume_checkpoint",
    "checkpoint_problems",
    "kept_labels",
    "last_complete_checkpoint",
    "make_trainer",
    "unwrap_c2c",
]
