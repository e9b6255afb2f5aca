"""Does a general fuser make the right answer more likely? Answer loss, receiver alone vs C2C.

For benchmark questions asked as `c2c-hf eval --prompt open` asks them (the bare question in the receiver's chat
template), the loss of the right choice's text as the reply, per token: the receiver alone (`progressive_fusion`'s
fraction 0) and C2C (fraction 1) on the same prefills. `init` is a fresh fuser with the training script's settings
(what training starts from). Writes `--output` (JSON) and the same table as markdown beside it (`.md`).

    python experiments/real_cpu/answer_loss.py init runs/real-cpu/general-gemma-3-270m \
        --output docs/results/real-cpu/general-answer-loss/answer_loss.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from c2c_hf.analysis import example_from_texts, progressive_fusion
from c2c_hf.commands.train import FuserArguments, ModelArguments, build_model
from c2c_hf.evaluation import MEASUREMENT_PROTOCOL, load_benchmark, load_models, question_prompt, result_metadata

MODELS = Path.home() / ".cache/c2c-real-models"
BENCHMARKS = ("arc_easy", "arc_challenge", "openbookqa")


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per fuser: per benchmark, the receiver's and C2C's mean answer loss and the share C2C lowers."""
    lines = [
        "Loss of the right choice's text after the bare question (nats per token, mean over questions): receiver alone "
        "-> C2C (share of questions where C2C's is lower).",
        "",
        "| fuser | " + " | ".join(BENCHMARKS) + " |",
        "|---|" + "---|" * len(BENCHMARKS),
    ]
    for fuser, per_benchmark in results.items():
        cells = [
            f"{r['receiver_loss']:.2f} -> {r['c2c_loss']:.2f} ({r['c2c_lower_share']:.0%}, n={r['n']})"
            for r in (per_benchmark[name] for name in BENCHMARKS)
        ]
        lines.append(f"| {fuser} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fusers", nargs="+", help="C2C checkpoint folders, or 'init' (a fresh fuser)")
    parser.add_argument("--sharer", default="gemma-3-270m", help="sharer folder under --models, for 'init'")
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/benchmarks"))
    parser.add_argument("--limit", type=int, default=100, help="questions per benchmark")
    parser.add_argument("--seed", type=int, default=1, help="item subset (the evaluation's is seed 0)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="the bases' dtype")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [
        {"prompt": question_prompt(item, "open"), "answer": item.choices[item.gold], "benchmark": name}
        for name in BENCHMARKS
        for item in load_benchmark(name, args.data / f"{name}.jsonl", limit=args.limit, seed=args.seed)
    ]
    results = {}
    for fuser in args.fusers:
        torch.manual_seed(0)
        if fuser == "init":
            model_args = ModelArguments(
                receiver=str(args.models / "smollm2-135m-instruct"), sharer=str(args.models / args.sharer),
                base_dtype=args.dtype,
            )  # fmt: skip
            fuser_args = FuserArguments(fuser_hidden_size=256, fuser_num_blocks=3, fuser_dropout=0.1)
            model, tokenizer = build_model(model_args, fuser_args)
        else:
            model, tokenizer, _ = load_models(fuser, dtype=args.dtype)
        examples = [example_from_texts(row, tokenizer, chat_template=True) for row in rows]
        receiver, c2c = progressive_fusion(model.eval(), examples, fractions=(0.0, 1.0), side="last")["curves"]["last"]
        results[fuser] = {}
        for name in BENCHMARKS:
            pairs = [
                (alone["loss"], fused["loss"])
                for row, alone, fused in zip(rows, receiver["examples"], c2c["examples"])
                if row["benchmark"] == name
            ]
            results[fuser][name] = {
                "n": len(pairs),
                "receiver_loss": sum(a for a, _ in pairs) / len(pairs),
                "c2c_loss": sum(f for _, f in pairs) / len(pairs),
                "c2c_lower_share": sum(f < a for a, f in pairs) / len(pairs),
            }
        print(fuser, json.dumps(results[fuser]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    args.output.write_text(json.dumps({**result_metadata(MEASUREMENT_PROTOCOL), "config": config, "results": results}, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
