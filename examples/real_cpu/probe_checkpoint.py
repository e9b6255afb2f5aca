"""Probe a knowledge-task fuser checkpoint: C2C accuracy on held-out people vs on the fuser's own training people.

    python examples/real_cpu/probe_checkpoint.py runs/real-cpu/knowledge/c2c-gated-long/trainer/checkpoint-300

A fuser that transfers the sharer's knowledge scores alike on both; one that memorises its training people's facts
scores high on them only. 64 questions about fuser people (a fresh phrasing per fact), the 128 held-out questions.
"""

from __future__ import annotations

import collections
import random
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from c2c_hf import C2CForCausalLM
from c2c_hf.evaluation import LM, Direct, Scoring, evaluate, summarize

sys.path.insert(0, str(Path(__file__).parent))
import knowledge  # this folder's script


def main() -> None:
    torch.set_num_threads(1)
    model = C2CForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)
    world = knowledge.load_world(0)
    groups = {
        "heldout": knowledge.heldout_items(world, 0),
        "fuser-people": world.questions("fuser", random.Random("probe"), per_fact=1)[:64],
    }
    method = Direct("c2c", LM(model, tokenizer), Scoring("generate", 16))
    for name, predictions in evaluate([method], groups)["c2c"].items():
        summary = summarize(predictions)
        answers = collections.Counter(p.predicted for p in predictions).most_common()
        print(f"{name}: {100 * summary['accuracy']:.1f}% {[round(100 * b, 1) for b in summary['ci95']]} answers {answers}")


if __name__ == "__main__":
    main()
