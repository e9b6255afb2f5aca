"""`c2c-hf demo [--output DIR] [--seed S | --seeds S ...] [--quick] [--splits test|validation ...] [--workers 1|2]
[--threads N]`: parse the flags and run the demo, once or once per world."""

from __future__ import annotations

import argparse
import dataclasses
import os

import torch
from transformers.utils import logging as hf_logging

from .config import DemoConfig
from .report import SPLITS, TEST
from .run import run_demo
from .seeds import run_seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2c-hf demo",
        description="Train two small models with different knowledge, tokenizers and architectures on the CPU, a C2C "
        "fuser between them, and compare receiver, sharer, text-to-text (plain and trained), routing, C2C and the "
        "fact in the receiver's prompt on questions about people only the sharer knows (transfer) and on questions "
        "that need one fact of each model (complementary).",
    )
    parser.add_argument("--output", default="c2c-demo", help="output folder (report, plots, models)")
    parser.add_argument("--seed", type=int, default=0, help="the world (people, facts, base initialisations)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="several worlds, each in OUTPUT/seed-N, and their summary (seeds.json/md/png: each "
                        "seed, the means with t-intervals over seeds, the paired per-seed differences)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="a smaller world and shorter training, no trained text-to-text (under 2 minutes on 2 CPU "
                        "cores)")  # fmt: skip
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=[TEST],
                        help="the people to score: test (default; the demo's settings were chosen on validation) or "
                        "validation (to choose settings without looking at test)")  # fmt: skip
    parser.add_argument("--workers", type=int, choices=(1, 2), default=2,
                        help="processes: with 2, the receiver trains beside the sharer and the trained text-to-text "
                        "baseline beside the fuser (same results as 1, about a third less time on 2 cores)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (results are reproducible for a given count; 1 is fastest for these "
                        "tiny models on a shared CPU)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    threads, verbosity = torch.get_num_threads(), hf_logging.get_verbosity()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the bases' load/save chatter; progress bars and the report stay
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        def config(seed: int) -> DemoConfig:
            preset = DemoConfig.quick_config(seed) if args.quick else DemoConfig.full(seed)
            return dataclasses.replace(preset, splits=tuple(args.splits), workers=args.workers)

        if args.seeds:
            run_seeds(args.seeds, args.output, lambda seed, folder: run_demo(config(seed), folder))
        else:
            run_demo(config(args.seed), args.output)
    finally:
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)


if __name__ == "__main__":
    main()
