"""Fuser size vs accuracy and cost in the demo world: which fuser should a user pick?

    c2c-hf demo --output c2c-demo
    python -m perf.fuser_sizes --demo c2c-demo --sizes 16 64 256 1024 --output docs/results/perf/fuser-sizes
    python -m perf.fuser_sizes --demo c2c-demo --sizes 256 --learning-rates 1e-3 3e-4 --output ...

Over the demo's own trained receiver and sharer (its `receiver/` and `sharer/` folders), one fuser per hidden size,
number of blocks and learning rate is trained as the demo trains its fuser (same data, steps, schedule and seed;
`c2c_hf.demo.train_fuser`; blocks and learning rate default to the demo's) and evaluated with C2C on the demo's
validation questions (a fuser size is a choice: it is made on validation, never on test). Reported per fuser:
parameters, validation accuracy with its interval, the time of one fuser forward over a validation prompt's caches
and of one C2C answer, and training time. Rows accumulate in `--output`
across runs (a fuser already there is not trained again), so a sweep can be spread over sessions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from c2c_hf import C2CForCausalLM
from c2c_hf.demo import Bases, DemoConfig, build_c2c, demo_questions, fuser_dataset, fuser_items, train_fuser
from c2c_hf.demo.world import World
from c2c_hf.evaluation import LM, UNSEALED_PROTOCOL, Direct, Scoring, evaluate, result_metadata, summarize

from .bench import fuse_all_layers


def run_size(config: DemoConfig, demo: Path, world: World, scoring: Scoring) -> dict:
    """Train and evaluate the fuser `config` describes (`fuser_hidden_size`, `fuser_num_blocks`, `fuser_lr`)."""
    receiver_tokenizer, sharer_tokenizer = (
        AutoTokenizer.from_pretrained(demo / role) for role in ("receiver", "sharer")
    )
    receiver, sharer = (AutoModelForCausalLM.from_pretrained(demo / role).eval() for role in ("receiver", "sharer"))
    model = build_c2c(config, Bases(receiver, sharer, receiver_tokenizer, sharer_tokenizer, {}))  # as the demo does
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        train_fuser(model, receiver_tokenizer, fuser_dataset(fuser_items(world, config)), config, workdir)
    train_seconds = time.perf_counter() - began
    validation = demo_questions(world, replace(config, splits=("validation",)))["transfer-validation"]
    predictions = evaluate([Direct("c2c", LM(model, receiver_tokenizer), scoring)], {"validation": validation})["c2c"][
        "validation"
    ]
    return {
        "hidden_size": config.fuser_hidden_size,
        "num_blocks": config.fuser_num_blocks,
        "learning_rate": config.fuser_lr,
        "fuser_params": sum(p.numel() for p in model.fuser.parameters()),
        **summarize(predictions),
        "fuser_forward_s": fuser_forward_seconds(model, receiver_tokenizer, validation[0].question),
        "train_s": round(train_seconds, 2),
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def fuser_forward_seconds(model: C2CForCausalLM, tokenizer, text: str, repeats: int = 20) -> float:
    """Median time of the fuser over every receiver layer of one prompt's caches (random KV of those shapes)."""
    length = len(tokenizer(text)["input_ids"])
    (receiver_layers, h_r, d_r), (sharer_layers, h_s, d_s) = (
        model.config.receiver_kv_shape,
        model.config.sharer_kv_shape,
    )
    receiver_kv = [(torch.randn(1, h_r, length, d_r), torch.randn(1, h_r, length, d_r))] * receiver_layers
    sharer_kv = [(torch.randn(1, h_s, length, d_s), torch.randn(1, h_s, length, d_s))] * sharer_layers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fuse_all_layers(model.fuser, receiver_kv, sharer_kv)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a `c2c-hf demo --output` folder (full run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--blocks", type=int, nargs="+", help="fuser blocks, >= 2 (default: the demo's)")
    parser.add_argument("--learning-rates", type=float, nargs="+", help="fuser learning rates (default: the demo's)")
    parser.add_argument("--output", type=Path, required=True, help="folder of fuser_sizes.json / .md (rows accumulate)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = json.loads((args.demo / "results.json").read_text())["config"]
    demo_config = DemoConfig(**report["demo"])
    world = World.generate(demo_config.seed, report["world"], demo_config.attributes)
    scoring = Scoring("generate", demo_config.max_new_tokens)
    results = args.output / "fuser_sizes.json"
    rows = json.loads(results.read_text())["sizes"] if results.is_file() else []
    done = {(r["hidden_size"], r["num_blocks"], r["learning_rate"]) for r in rows}
    for hidden, blocks, lr in itertools.product(
        args.sizes, args.blocks or [demo_config.fuser_num_blocks], args.learning_rates or [demo_config.fuser_lr]
    ):
        if (hidden, blocks, lr) in done:
            continue
        config = replace(demo_config, fuser_hidden_size=hidden, fuser_num_blocks=blocks, fuser_lr=lr)
        rows.append(run_size(config, args.demo, world, scoring))
        print(json.dumps(rows[-1]), flush=True)
        rows.sort(key=lambda r: (r["hidden_size"], r["num_blocks"], -r["learning_rate"]))
        write(rows, report["demo"], args.output)


def write(rows: list[dict], demo: dict, output: Path) -> None:
    """`fuser_sizes.json` (the demo's config, every row with the threads it ran on) and `fuser_sizes.md` (one table
    row per fuser)."""
    output.mkdir(parents=True, exist_ok=True)
    content = {**result_metadata(UNSEALED_PROTOCOL), "demo": demo, "sizes": rows}  # sizes chosen on the demo's held-out
    (output / "fuser_sizes.json").write_text(json.dumps(content, indent=2) + "\n")
    lines = ["| fuser hidden | blocks | learning rate | params | validation C2C accuracy % [95% CI] | fuser forward "
             "| C2C answer (median) | training | threads |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        low, high = r["ci95"]
        lines.append(f"| {r['hidden_size']} | {r['num_blocks']} | {r['learning_rate']:g} | {r['fuser_params']:,} "
                     f"| {100 * r['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}] | {1000 * r['fuser_forward_s']:.2f} ms "
                     f"| {1000 * r['latency_median_s']:.1f} ms | {r['train_s']:.0f} s | {r['threads']} |")  # fmt: skip
    (output / "fuser_sizes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
