"""Probe a knowledge-task fuser checkpoint: C2C accuracy on the fuser's training people vs on validation people.

    python experiments/real_cpu/probe_checkpoint.py runs/real-cpu/knowledge/c2c-open-gated-h64/trainer/checkpoint-300

A fuser that transfers the sharer's knowledge scores alike on both; one that memorises its training people's facts
scores high on them only. Validation people are fuser-group people kept out of training (`--validation-people`),
so checkpoints are chosen without looking at the held-out people. 64 questions per group (a fresh phrasing per fact).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from c2c_hf import C2CForCausalLM
from c2c_hf.demo.world import ATTRIBUTES
from c2c_hf.evaluation import LM, PROMPTS, Direct, Scoring, evaluate, summarize

sys.path.insert(0, str(Path(__file__).parent))
import knowledge_setup  # this folder's scripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--prompt", choices=PROMPTS, default="open")
    knowledge_setup.add_world_arguments(parser)
    parser.add_argument("--output", type=Path, help="append one JSON line per checkpoint here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = knowledge_setup.load_world(args)
    trained, validation = knowledge_setup.split_fuser_people(world, args.validation_people)
    rng = random.Random("probe")
    groups = {
        name: [world.question(e, a, rng, tag="#probe") for e in people for a in ATTRIBUTES][:64]
        for name, people in (("trained-people", trained), ("validation-people", validation + validation))
    }
    for checkpoint in args.checkpoints:
        model = C2CForCausalLM.from_pretrained(checkpoint, dtype=args.dtype).eval()
        tokenizer = AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)
        method = Direct("c2c", LM(model, tokenizer), Scoring("generate", 16, args.prompt))
        row = {"checkpoint": str(checkpoint)}
        for name, predictions in evaluate([method], groups)["c2c"].items():
            summary = summarize(predictions)
            answers = collections.Counter(p.predicted for p in predictions).most_common(4)
            row[name] = {"accuracy": summary["accuracy"], "ci95": summary["ci95"]}
            print(f"{checkpoint.name} {name}: {100 * summary['accuracy']:.1f}% "
                  f"{[round(100 * b, 1) for b in summary['ci95']]} answers {answers}", flush=True)  # fmt: skip
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            with args.output.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
