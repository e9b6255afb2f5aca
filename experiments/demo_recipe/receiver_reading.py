"""Does the demo's receiver learn to read a stated fact? Train only the receiver of a preset, per world and setting,
and score the fact in its prompt on the validation people (the test people are never scored here).

    python experiments/demo_recipe/receiver_reading.py --preset quick --seeds 102 103 104 105 106 107 \
        --variant base --variant receiver_lr=0.006 --output experiments/demo_recipe/results/quick-receiver.jsonl

The receiver's reading appears abruptly during its training, so a schedule that reads in one world may not in
another: this checks a receiver setting on more worlds than the whole-demo runs of `choose.py` can afford. One JSON
line per (seed, variant): the fact-in-prompt accuracy per task, the receiver's last loss and its seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from choose import parse_variant
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from c2c_hf.demo import World
from c2c_hf.demo.config import DemoConfig
from c2c_hf.demo.run import FactInPrompt, _train_receiver, demo_questions
from c2c_hf.evaluation import LM, Scoring, evaluate
from c2c_hf.evaluation.environment import environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("full", "quick"), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    preset = DemoConfig.quick_config if args.preset == "quick" else DemoConfig.full
    for variant in args.variant or ["base"]:
        for seed in args.seeds:
            config = dataclasses.replace(preset(seed), splits=("validation",), **parse_variant(variant))
            world = World.generate(seed, config.world_sizes(), config.attributes)
            with tempfile.TemporaryDirectory() as folder:
                losses, seconds = _train_receiver(config, Path(folder), threads=1, progress=False)
                receiver = AutoModelForCausalLM.from_pretrained(Path(folder) / "receiver").eval()
                tokenizer = AutoTokenizer.from_pretrained(Path(folder) / "receiver")
            method = FactInPrompt(LM(receiver, tokenizer), world, Scoring("generate", config.max_new_tokens))
            results = evaluate([method], demo_questions(world, config), batch_size=16)[method.name]
            row = {
                "preset": args.preset, "seed": seed, "variant": variant, "receiver_seconds": seconds, **losses,
                "fact_in_prompt": {name: round(sum(p.correct for p in preds) / len(preds), 4)
                                   for name, preds in results.items()},
                "environment": environment(),
            }  # fmt: skip
            print(json.dumps({k: row[k] for k in ("seed", "variant", "fact_in_prompt", "receiver_last")}), flush=True)
            with open(args.output, "a", encoding="utf-8") as lines:
                lines.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
