"""Choose the demo's settings on validation people only: train each world's bases once, then every variant of the
fuser (and of the trained text-to-text baseline) on them, and score the validation split.

    python experiments/demo_recipe/choose.py --preset full --seeds 100 101 \
        --variant base --variant fuser_steps=1000 --variant "fuser_lr=0.005 fuser_hidden_size=128" \
        --output experiments/demo_recipe/results/full.jsonl

Each `--variant` is a space-separated list of `DemoConfig` overrides (`base`: none); overrides of base-model fields
make a world's bases train again (cached by their settings in `--cache`). One JSON line per (seed, variant) is
appended to `--output`: validation accuracies per task and method, the fuser's last losses, timings. The test split
is never scored here. Accuracy is read at batch size 16 (latency is not compared here).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from c2c_hf.demo import World
from c2c_hf.demo.config import DemoConfig
from c2c_hf.demo.run import (
    Bases,
    Stopwatch,
    build_c2c,
    demo_methods,
    demo_questions,
    fuser_items,
    routing_fit_questions,
    train_bases,
    train_fuser,
    train_t2t_receiver,
)
from c2c_hf.evaluation import LM, Routing, evaluate
from c2c_hf.evaluation.environment import environment

BASE_FIELDS = ("attributes", "fuser_entities", "validation_entities", "test_entities", "context_entities", "sharer_vocab_size",
               "sharer_steps", "sharer_lr", "sharer_value_weight", "sharer_schedule", "sharer_max_steps",
               "sharer_probe_threshold", "receiver_steps", "receiver_lr",
               "receiver_multi_fact_share", "receiver_country_share", "base_batch_size", "receiver_schedule",
               "receiver_min_steps", "receiver_give_up_step", "receiver_max_steps", "receiver_attempts",
               "receiver_probe_threshold", "probe_questions", "probe_every", "max_new_tokens")  # fmt: skip


def parse_variant(text: str) -> dict[str, Any]:
    if text == "base":
        return {}
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    overrides = {}
    for pair in text.split():
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown DemoConfig field {key!r} in --variant {text!r}")
        overrides[key] = json.loads(value) if value[:1] in "[{" or value in ("true", "false") else type(
            getattr(DemoConfig(), key))(value)
    return overrides


def load_or_train_bases(config: DemoConfig, cache: Path) -> tuple[World, Bases, float]:
    world = World.generate(config.seed, config.world_sizes(), config.attributes)
    key = json.dumps({f: getattr(config, f) for f in BASE_FIELDS} | {"seed": config.seed}, sort_keys=True)
    folder = cache / f"seed-{config.seed}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    began = time.perf_counter()
    if not (folder / "sharer" / "config.json").exists():
        train_bases(config, world, folder, Stopwatch())
    load = {name: (AutoModelForCausalLM.from_pretrained(folder / name).eval(), AutoTokenizer.from_pretrained(folder / name))
            for name in ("receiver", "sharer")}  # fmt: skip
    bases = Bases(load["receiver"][0], load["sharer"][0], load["receiver"][1], load["sharer"][1], {})
    return world, bases, time.perf_counter() - began


def accuracies(results: dict) -> dict[str, dict[str, float]]:
    return {method: {name: round(sum(p.correct for p in preds) / len(preds), 4) for name, preds in by_set.items()}
            for method, by_set in results.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("full", "quick"), default="full")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--baselines", action="store_true", help="also score receiver, sharer, t2t, routing, fact")
    parser.add_argument("--output", required=True)
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/c2c-demo-recipe"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    variants = args.variant or ["base"]
    for seed in args.seeds:
        for variant in variants:
            preset = DemoConfig.quick_config if args.preset == "quick" else DemoConfig.full
            config = dataclasses.replace(preset(seed), splits=("validation",), **parse_variant(variant))
            world, bases, base_s = load_or_train_bases(config, Path(args.cache))
            model = build_c2c(config, bases)
            items = fuser_items(world, config)
            began = time.perf_counter()
            with tempfile.TemporaryDirectory() as workdir:
                losses, schedule = train_fuser(model, bases.receiver_tokenizer, items, config, workdir)
                fuser_s = time.perf_counter() - began
            reader = None
            if config.trained_t2t:
                reader = train_t2t_receiver(config, world, model.receiver, bases.receiver_tokenizer,
                                            LM(model.sharer, bases.sharer_tokenizer), progress=True)  # fmt: skip
            methods = demo_methods(config, world, model, bases, reader)
            keep = {"c2c", "t2t_trained"} | ({"receiver", "sharer", "t2t", "routing", "fact_in_prompt"}
                                              if args.baselines else set())  # fmt: skip
            methods = [m for m in methods if m.name in keep]
            for method in methods:
                if isinstance(method, Routing):
                    method.fit(routing_fit_questions(world, config))
            results = evaluate(methods, demo_questions(world, config), batch_size=16)
            row = {
                "preset": args.preset, "seed": seed, "variant": variant, "accuracy": accuracies(results),
                "fuser_losses": losses, **schedule, "fuser_s": round(fuser_s, 1), "bases_s": round(base_s, 1),
                "total_s": round(time.perf_counter() - began, 1), "environment": environment(),
            }  # fmt: skip
            print(json.dumps({k: row[k] for k in ("seed", "variant", "accuracy", "fuser_losses", "fuser_s")}), flush=True)
            with open(args.output, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
