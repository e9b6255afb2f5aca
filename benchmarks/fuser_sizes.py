"""Fuser size vs accuracy and cost in the demo world (issue 9, part 3): which fuser should a user pick?

    c2c-hf demo --output c2c-demo
    python -m benchmarks.fuser_sizes --demo c2c-demo --sizes 16 64 256 1024 --output docs/results/perf/fuser-sizes

Over the demo's own trained receiver and sharer (its `receiver/` and `sharer/` folders), one fuser per hidden size is
trained exactly as the demo trains its fuser (same data, steps, schedule and seed; `c2c_hf.demo.train_fuser`) and
evaluated with C2C on the demo's held-out questions. Reported per size: parameters, held-out accuracy with its
interval, the time of one fuser forward over a held-out prompt's caches and of one C2C answer, and training time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from c2c_hf import C2CForCausalLM
from c2c_hf.demo import DemoConfig, fuser_dataset, heldout_questions, train_fuser
from c2c_hf.evaluation import LM, Direct, Scoring, evaluate, summarize
from c2c_hf.world import World

from .run import fuse_all_layers


def run_size(hidden: int, demo: Path, config: DemoConfig, world: World, scoring: Scoring) -> dict:
    receiver_tokenizer, sharer_tokenizer = (AutoTokenizer.from_pretrained(demo / role) for role in ("receiver", "sharer"))
    receiver, sharer = (AutoModelForCausalLM.from_pretrained(demo / role).eval() for role in ("receiver", "sharer"))
    config = replace(config, fuser_hidden_size=hidden)
    torch.manual_seed(config.seed + 3)  # as the demo seeds its fuser
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment="longest",
        layer_map=list(config.layer_map), fuser_hidden_size=hidden, fuser_num_blocks=config.fuser_num_blocks,
        fuser_dropout=config.fuser_dropout,
    )  # fmt: skip
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        train_fuser(model, receiver_tokenizer, fuser_dataset(world, config.fuser_questions_per_fact, config.seed), config, workdir)
    train_seconds = time.perf_counter() - began
    heldout = heldout_questions(world, config.seed)
    predictions = evaluate([Direct("c2c", LM(model, receiver_tokenizer), scoring)], {"heldout": heldout})["c2c"]["heldout"]
    return {
        "hidden_size": hidden,
        "fuser_params": sum(p.numel() for p in model.fuser.parameters()),
        **summarize(predictions),
        "fuser_forward_s": fuser_forward_seconds(model, receiver_tokenizer, heldout[0].question),
        "train_s": round(train_seconds, 2),
    }


@torch.no_grad()
def fuser_forward_seconds(model: C2CForCausalLM, tokenizer, text: str, repeats: int = 20) -> float:
    """Median time of the fuser over every receiver layer of one prompt's caches (random KV of those shapes)."""
    length = len(tokenizer(text)["input_ids"])
    (layers, h_r, d_r), (_, h_s, d_s) = model.config.receiver_kv_shape, model.config.sharer_kv_shape
    sharer_kv, receiver_kv = torch.randn(2, 1, h_s, length, d_s), torch.randn(2, 1, h_r, length, d_r)
    kv = [(sharer_kv[0], sharer_kv[1], receiver_kv[0], receiver_kv[1])] * layers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fuse_all_layers(model.fuser, kv)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a `c2c-hf demo --output` folder (full run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = json.loads((args.demo / "results.json").read_text())["config"]
    config = DemoConfig(**report["demo"])
    world = World.generate(config.seed, report["world"])
    scoring = Scoring("generate", config.max_new_tokens)
    rows = []
    for hidden in args.sizes:
        rows.append(run_size(hidden, args.demo, config, world, scoring))
        print(json.dumps(rows[-1]), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "fuser_sizes.json").write_text(json.dumps({"demo": report["demo"], "threads": torch.get_num_threads(), "sizes": rows}, indent=2) + "\n")
    lines = ["| fuser hidden | params | held-out C2C accuracy % [95% CI] | fuser forward | C2C answer (median) | training |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        low, high = r["ci95"]
        lines.append(f"| {r['hidden_size']} | {r['fuser_params']:,} | {100 * r['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}] "
                     f"| {1000 * r['fuser_forward_s']:.2f} ms | {1000 * r['latency_median_s']:.1f} ms | {r['train_s']:.0f} s |")  # fmt: skip
    (args.output / "fuser_sizes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
