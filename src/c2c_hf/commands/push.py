"""`c2c-hf push DIR org/name`: upload a saved C2C checkpoint with its model card (the bases are neither needed nor
uploaded)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..cli_flags import accept_both_spellings
from ..configuration_c2c import C2CConfig
from ..hub import RESULTS_FILE, TRAINING_FILE, push_to_hub
from ..modeling_c2c import C2CForCausalLM


def load_fuser_only(path: str | os.PathLike, **hub_kwargs) -> C2CForCausalLM:
    """A C2C checkpoint with its bases on the meta device: enough to save, push or describe it, nothing downloaded
    but the C2C repo itself (`hub_kwargs`: `revision`, `cache_dir`, `token`, `local_files_only`).

    A checkpoint with a receiver LoRA loads its real receiver (the LoRA weights need real base layers to live in).
    """
    config = C2CConfig.from_pretrained(path, **hub_kwargs)
    with torch.device("meta"):
        receiver = None if config.receiver_lora else AutoModelForCausalLM.from_config(config.text_config)
        sharer = AutoModelForCausalLM.from_config(config.sharer_config)
    return C2CForCausalLM.from_pretrained(path, config=config, receiver=receiver, sharer=sharer, **hub_kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The `c2c-hf push` arguments (each long flag also parses with underscores)."""
    parser = argparse.ArgumentParser(prog="c2c-hf push", description=main.__doc__)
    parser.add_argument("directory", help="a C2C checkpoint saved with save_pretrained")
    parser.add_argument("repo_id", help="target Hub repo, e.g. my-org/c2c-qwen3-0.6b-qwen2.5-0.5b")
    parser.add_argument("--revision", help="branch to push to (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--commit-message", default="Upload C2C fuser")
    parser.add_argument("--training-data", help=f"training data, for the card (default: from DIR/{TRAINING_FILE})")
    parser.add_argument("--training-steps", help=f"optimizer steps, for the card (default: from DIR/{TRAINING_FILE})")
    parser.add_argument("--results", help=f"markdown evaluation table for the card (default: DIR/{RESULTS_FILE})")
    parser.add_argument(
        "--allow-local-bases", action="store_true",
        help="upload even when a base is named by a local path (others must then pass receiver= / sharer=)",
    )  # fmt: skip
    return accept_both_spellings(parser)


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf push DIR org/name`: upload a saved C2C checkpoint (bases not needed, not uploaded) with its card."""
    args = build_parser().parse_args(argv)

    directory = Path(args.directory)
    model = load_fuser_only(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory) if (directory / "tokenizer_config.json").is_file() else None
    results = Path(args.results) if args.results else directory / RESULTS_FILE
    evaluation_table = results.read_text(encoding="utf-8") if args.results or results.is_file() else None
    training_file = directory / TRAINING_FILE
    training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.is_file() else {}
    training.update({k: v for k, v in (("data", args.training_data), ("steps", args.training_steps)) if v is not None})
    commit = push_to_hub(
        model,
        args.repo_id,
        tokenizer=tokenizer,
        training=training,
        evaluation_table=evaluation_table,
        commit_message=args.commit_message,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        create_pr=args.create_pr,
        allow_local_bases=args.allow_local_bases,
    )
    print(f"Pushed {directory} to {args.repo_id}: {commit.commit_url}")


__all__ = ["build_parser", "load_fuser_only", "main"]
