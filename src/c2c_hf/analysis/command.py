"""`c2c-hf analyze {enrichment,transfer,rank,progressive,gates} --model <c2c dir> --data FILE --output DIR`.

Writes `<analysis>.json` and `<analysis>.png`; `--data` is a jsonl of `{"prompt", "answer", "context"?}` texts, or
`--benchmark NAME [--data PATH]` uses multiple-choice items (`load_benchmark`) rendered as `c2c-hf eval` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..atomic import atomic_file, atomic_write_text
from ..cli_flags import accept_both_spellings
from ..data import left_pad
from ..evaluation.command import load_models
from ..evaluation.environment import MEASUREMENT_PROTOCOL, result_metadata
from ..evaluation.tasks import BENCHMARKS, load_benchmark
from ..modeling_c2c import C2CForCausalLM
from .examples import Example, example_from_item, load_examples
from .gates import gate_map
from .oracles import cache_enrichment_oracle, cache_transfer_oracle
from .plots import PLOTS
from .progressive import SIDES, progressive_fusion
from .rank import cache_effective_rank

ANALYSES = ("enrichment", "transfer", "rank", "progressive", "gates")


def build_parser() -> argparse.ArgumentParser:
    """The `c2c-hf analyze` arguments: the analysis, the checkpoint, the data and each analysis's settings."""
    parser = argparse.ArgumentParser(
        prog="c2c-hf analyze",
        description="The C2C paper's analyses on a C2C checkpoint; writes <analysis>.json and <analysis>.png.",
    )
    parser.add_argument("analysis", choices=ANALYSES)
    parser.add_argument("--model", required=True, help="C2C checkpoint directory or Hub id")
    parser.add_argument("--data", help='jsonl of {"prompt", "answer", "context"?} texts, or the --benchmark path')
    parser.add_argument("--benchmark", choices=BENCHMARKS, help="use multiple-choice items (--data: local path)")
    parser.add_argument("--chat-template", action="store_true", help="render jsonl prompts in the chat template")
    parser.add_argument("--limit", type=int, help="analyse at most this many examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=8, help="rank / gates: prompts per batch")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--side", choices=(*SIDES, "both"), default="both", help="progressive: positions fused first")
    parser.add_argument("--train-fraction", type=float, default=0.75, help="transfer: prompts used for training")
    parser.add_argument("--prefix-fraction", type=float, default=0.5, help="transfer: cached part of a held-out prompt")
    parser.add_argument("--hidden-size", type=int, default=256, help="transfer: MLP width")
    parser.add_argument("--steps", type=int, default=300, help="transfer: training steps per mapper")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    return accept_both_spellings(parser)


def run_analysis(
    name: str,
    model: C2CForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run analysis `name` on examples with the CLI's settings."""
    if name == "enrichment":
        return cache_enrichment_oracle(model.receiver, tokenizer, examples)
    if name == "progressive":
        return progressive_fusion(model, examples, args.fractions, args.side)
    prompts = [torch.cat([e.prompt_ids, e.answer_ids]) if name == "transfer" else e.prompt_ids for e in examples]
    if name == "transfer":
        source_prompts = [model.sharer_inputs(p[None])[0][0] for p in prompts]
        return cache_transfer_oracle(
            model.sharer, model.receiver, prompts, source_prompts, train_fraction=args.train_fraction,
            prefix_fraction=args.prefix_fraction, hidden_size=args.hidden_size, steps=args.steps,
            learning_rate=args.learning_rate, seed=args.seed,
        )  # fmt: skip
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    ids, mask = left_pad(prompts, pad_id)
    analyse = cache_effective_rank if name == "rank" else gate_map
    return analyse(model, ids, mask, args.batch_size)


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf analyze ANALYSIS --model M --data FILE --output DIR`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.benchmark is None and args.data is None:
        parser.error("give --data (a jsonl of prompt/answer texts) or --benchmark")
    if args.analysis == "enrichment" and args.benchmark is not None:
        parser.error("enrichment needs a jsonl --data with 'context' texts, not --benchmark items")
    model, tokenizer, _ = load_models(args.model, dtype=args.dtype, device=args.device)
    if args.benchmark is not None:
        items = load_benchmark(args.benchmark, args.data, limit=args.limit, seed=args.seed)
        examples = [example_from_item(item, tokenizer) for item in items]
    else:
        examples = load_examples(args.data, tokenizer, args.chat_template)[: args.limit]
    torch.manual_seed(args.seed)
    result = run_analysis(args.analysis, model, tokenizer, examples, args)
    output = Path(args.output)
    report = {**result_metadata(MEASUREMENT_PROTOCOL), "analysis": args.analysis, "config": vars(args), "result": result}
    atomic_write_text(output / f"{args.analysis}.json", json.dumps(report, indent=2) + "\n")
    with atomic_file(output / f"{args.analysis}.png") as path:
        PLOTS[args.analysis](result, path)
    print(f"c2c-hf analyze {args.analysis}: wrote {output / args.analysis}.json and .png")


__all__ = ["ANALYSES", "build_parser", "main", "run_analysis"]
