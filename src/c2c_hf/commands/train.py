"""`c2c-hf train`: train a fuser for a receiver/sharer pair on a chat, instruction or multiple-choice dataset.

    c2c-hf train --receiver ID_OR_DIR --sharer ID_OR_DIR --dataset ID_OR_FILES --output-dir DIR [TrainingArguments]

Every `transformers.TrainingArguments` flag works (`--max-steps`, `--learning-rate`, `--bf16`, `--save-steps`,
`--resume-from-checkpoint`, ...). Flags are shown with dashes; the underscore spelling (`--max_steps`, the
dataclass field's name) parses too. Multi-process: `torchrun --nproc_per_node N -m c2c_hf.cli train ...` or
`accelerate launch -m c2c_hf.cli train ...`: one process per GPU with nccl, or, on a machine without an accelerator,
CPU processes with gloo (`--use-cpu` is then the default).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import enable_full_determinism
from transformers.utils import logging

from ..cli_flags import accept_both_spellings
from ..configuration_c2c import LAYER_MAP_STRATEGIES, C2CConfig
from ..data import C2CDataCollator, build_features, conversation_messages, detect_format, load_dataset_any
from ..fuser import FUSIONS
from ..lora import DEFAULT_TARGET_MODULES
from ..modeling_c2c import C2CForCausalLM
from ..training import SharerCacheMemo, check_resume_checkpoint, last_complete_checkpoint, make_trainer

logger = logging.get_logger(__name__)

# `C2CConfig` fields that become `c2c-hf train` flags as they are (type, default and help taken from the config).
FUSER_FIELDS = (
    "fuser_hidden_size",
    "fuser_intermediate_size",
    "fuser_num_blocks",
    "fuser_dropout",
    "fuser_zero_init",
    "fusion",
    "gate_init_logit",
    "gate_temperature_start",
    "gate_temperature_end",
)
BASE_DTYPES = ("float32", "bfloat16", "float16")
TOKEN_ALIGNMENTS = ("longest", "first", "span", "none")


def parse_layer_map(text: str) -> str | list[int]:
    """`--layer-map`: a strategy name, or comma-separated sharer layer indices (one per receiver layer)."""
    if text in LAYER_MAP_STRATEGIES:
        return text
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise ValueError(
            f"--layer_map {text!r} is neither a strategy ({' or '.join(LAYER_MAP_STRATEGIES)}) nor comma-separated "
            "sharer layer indices, one per receiver layer (e.g. 0,2,4,6)."
        )
    return [int(part) for part in parts]


def config_field_help(name: str) -> str:
    """The paragraph `C2CConfig`'s docstring gives the argument `name` (its `Args:` entries), on one line."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (C2CConfig.__doc__ or "").splitlines():
        header = re.match(r"^ {8}([\w /]+?) \(`", line)
        if header:
            current = []
            for entry_name in header.group(1).split(" / "):
                entries[entry_name.strip()] = current
        elif current is not None and line.startswith(" " * 12):
            current.append(line.strip())
        elif line.strip():
            current = None
    return " ".join(entries.get(name, []))


def fuser_arguments_class() -> type:
    """A dataclass of the `FUSER_FIELDS` of `C2CConfig`, for `HfArgumentParser` (one definition: the config's)."""
    config_fields = {f.name: f for f in dataclasses.fields(C2CConfig)}
    builtins = {"int": int, "float": float, "bool": bool, "str": str}
    specs = []
    for name in FUSER_FIELDS:
        config_field = config_fields[name]
        field_type = eval(config_field.type, builtins) if isinstance(config_field.type, str) else config_field.type  # the config's own annotation
        metadata = {"help": config_field_help(name)}
        if name == "fusion":
            metadata["choices"] = tuple(FUSIONS)
        specs.append((name, field_type, field(default=config_field.default, metadata=metadata)))
    return dataclasses.make_dataclass("FuserArguments", specs, namespace={"__post_init__": check_fuser_arguments})


def check_fuser_arguments(fuser_args) -> None:
    """Refuse the fuser flags `C2CConfig` refuses (nan, negative sizes...) before any model loads: they are checked
    on a config of the default pair, whose shapes they do not depend on."""
    C2CConfig(**dataclasses.asdict(fuser_args))


FuserArguments = fuser_arguments_class()


@dataclass
class ModelArguments:
    """The pair, how it is aligned and loaded, and an optional receiver LoRA."""

    receiver: str = field(metadata={"help": "Receiver causal LM (Hub id or local folder): the model that answers."})
    sharer: str = field(metadata={"help": "Sharer causal LM (Hub id or local folder) whose cache is fused."})
    receiver_revision: str | None = field(default=None, metadata={"help": "Revision of the receiver repo."})
    sharer_revision: str | None = field(default=None, metadata={"help": "Revision of the sharer repo."})
    base_dtype: str = field(
        default="float32", metadata={"help": "dtype of the frozen bases (the fuser is fp32).", "choices": BASE_DTYPES}
    )
    layer_map: str = field(
        default="terminal", metadata={"help": f"{' or '.join(LAYER_MAP_STRATEGIES)}, or comma-separated sharer layers."}
    )
    token_alignment: str = field(
        default="longest",
        metadata={
            "help": "longest or first (one sharer token per receiver token), span (the sharer reads the prompt in its "
            "own tokenization), or none (refuse pairs whose tokenizers differ).",
            "choices": TOKEN_ALIGNMENTS,
        },
    )
    receiver_lora_r: int = field(default=0, metadata={"help": "Rank of a LoRA trained on the receiver (0: none)."})
    receiver_lora_alpha: int = field(default=16)
    receiver_lora_target_modules: str = field(default=",".join(DEFAULT_TARGET_MODULES))

    def __post_init__(self) -> None:
        """Refuse bad flags before any model loads (also for arguments built in code, which skip argparse)."""
        if self.base_dtype not in BASE_DTYPES:
            raise ValueError(f"--base_dtype {self.base_dtype!r} is not one of {BASE_DTYPES}.")
        if self.token_alignment not in TOKEN_ALIGNMENTS:
            raise ValueError(f"--token_alignment {self.token_alignment!r} is not one of {TOKEN_ALIGNMENTS}.")
        if self.receiver_lora_r < 0:
            raise ValueError(f"--receiver_lora_r must be >= 0 (0: no LoRA), got {self.receiver_lora_r}.")
        parse_layer_map(self.layer_map)


@dataclass
class DataArguments:
    """The training data."""

    dataset: list[str] = field(metadata={"help": "Hub dataset id, or local .json/.jsonl/.csv/.parquet files."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_split: str = field(default="train", metadata={"help": "Split (slicing allowed, e.g. train[:50000])."})
    max_length: int = field(default=1024, metadata={"help": "Longest prompt + response, in receiver tokens."})
    overflow: str = field(default="drop", metadata={"help": "drop or truncate examples longer than max_length."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message for conversations without one."})
    reuse_sharer_kv: bool = field(
        default=False,
        metadata={
            "help": "Run the frozen sharer once per distinct prompt and reuse its KV in later epochs (SharerCacheMemo; "
            "memory: the sharer's KV of every prompt, on the CPU; needs dataloader_num_workers=0)."
        },
    )


def build_model(
    args: ModelArguments, fuser_args: FuserArguments | None = None, seed: int | None = None
) -> tuple[C2CForCausalLM, object]:
    """Load both bases and their tokenizers, and wrap them with a fresh fuser; returns (model, receiver tokenizer).
    With a `seed`, the fuser's initialisation depends on it alone (seeded just before the fuser is built)."""
    fuser_args = FuserArguments() if fuser_args is None else fuser_args
    dtype = getattr(torch, args.base_dtype)
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.receiver, revision=args.receiver_revision)
    sharer_tokenizer = AutoTokenizer.from_pretrained(args.sharer, revision=args.sharer_revision)
    receiver = AutoModelForCausalLM.from_pretrained(args.receiver, revision=args.receiver_revision, dtype=dtype)
    sharer = AutoModelForCausalLM.from_pretrained(args.sharer, revision=args.sharer_revision, dtype=dtype)
    if seed is not None:
        set_seed(seed)
    model = C2CForCausalLM.from_base_models(
        receiver,
        sharer,
        receiver_tokenizer=receiver_tokenizer,
        sharer_tokenizer=sharer_tokenizer,
        token_alignment=None if args.token_alignment == "none" else args.token_alignment,
        receiver_revision=args.receiver_revision,
        sharer_revision=args.sharer_revision,
        layer_map=parse_layer_map(args.layer_map),
        **dataclasses.asdict(fuser_args),
    )
    if args.receiver_lora_r > 0:
        model.add_receiver_lora(
            r=args.receiver_lora_r,
            lora_alpha=args.receiver_lora_alpha,
            target_modules=args.receiver_lora_target_modules.split(","),
        )
    if model.config.token_alignment == "span":
        logger.warning("Tokenizers differ: span alignment (the sharer reads the prompt in its own tokenization)")
    elif model.config.token_alignment is not None:
        logger.warning(f"Tokenizers differ: token map '{model.config.token_alignment}', coverage {model.config.token_alignment_coverage:.1%}")
    return model, receiver_tokenizer


def build_parser() -> HfArgumentParser:
    """The `c2c-hf train` arguments: the pair, the fuser, the data and every `TrainingArguments` flag."""
    parser = HfArgumentParser(
        (ModelArguments, FuserArguments, DataArguments, TrainingArguments), prog="c2c-hf train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return accept_both_spellings(parser)


def cpu_processes_launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch) started several processes on a machine with no accelerator.

    There the stock `TrainingArguments` (without `--use-cpu`) leaves each process training alone on its own copy of
    the data and writing the same output folder; with `use_cpu` the processes form one gloo data-parallel run.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6; older torch: CUDA is the accelerator
    return not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available())


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf train ...`: build the model, tokenize the data, train with `make_trainer`, save the model."""
    parser = build_parser()
    if cpu_processes_launched():  # decided before parsing: `TrainingArguments` sets up its devices when built
        parser.set_defaults(use_cpu=True)
        logger.warning(f"{os.environ['WORLD_SIZE']} processes and no accelerator: one data-parallel run on CPU (gloo)")
    try:
        model_args, fuser_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a flag's value refused by its arguments class (or by C2CConfig): usage and exit 2
        parser.error(str(error))
    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    model, tokenizer = build_model(model_args, fuser_args, seed=training_args.seed)
    with training_args.main_process_first(desc="tokenizing"):
        dataset = load_dataset_any(data_args.dataset, split=data_args.dataset_split, config_name=data_args.dataset_config)
        features, stats = build_features(
            dataset, tokenizer, max_length=data_args.max_length, overflow=data_args.overflow,
            system_prompt=data_args.system_prompt,
        )  # fmt: skip
    logger.warning(f"Training data: {stats}")
    resume = training_args.resume_from_checkpoint
    if resume == "True" or resume is True:  # the last complete checkpoint, if any (else a fresh start)
        resume = last_complete_checkpoint(training_args.output_dir)
    if resume:
        check_resume_checkpoint(model, resume)
    sharer_caches = SharerCacheMemo(model) if data_args.reuse_sharer_kv else None
    config = [f"config {data_args.dataset_config}"] if data_args.dataset_config else []
    trainer = make_trainer(
        model, training_args, features, C2CDataCollator.for_tokenizer(tokenizer, sharer_caches),
        dataset_name=", ".join(data_args.dataset),
        dataset_selection=", ".join([*config, f"split {data_args.dataset_split}"]),
        example_messages=conversation_messages(dataset[0], detect_format(dataset.column_names), 0, data_args.system_prompt),
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model()  # the model's save writes both tokenizers (the sharer's in sharer_tokenizer/ if it differs)
    # and the model card, filled from the run (`C2CTrainer.run_facts`: the data, steps, losses, a training example)


__all__ = [
    "DataArguments", "FuserArguments", "ModelArguments", "build_model", "build_parser", "cpu_processes_launched", "main",
    "parse_layer_map",
]  # fmt: skip
