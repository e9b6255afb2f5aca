"""The printed-output task's training rows for a fuser: chat rows (the program question, its printed output) of the
`train` split only, as JSON lines that `c2c-hf train --dataset` reads.

    python experiments/real_cpu/snippet_rows.py --difficulty basic --size 4000 --output data/snippets/basic-train.jsonl

The fuser learns from the training programs' outputs as the interpreter computes them (`snippets.run_program`, the
gold choice of each item); validation and test programs are never written here (a program's split is a hash of its
text, `snippets.split_of`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # this folder's scripts
import snippets


def training_rows(seed: int, size: int, difficulty: str) -> list[dict]:
    """`size` chat rows of training programs: the question every method is asked, answered with the printed output."""
    return [
        {"messages": [{"role": "user", "content": item.question},
                      {"role": "assistant", "content": item.choices[item.gold]}]}
        for item in snippets.snippet_items(seed, "train", size, difficulty)
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", choices=sorted(snippets.DIFFICULTIES), default="basic")
    parser.add_argument("--size", type=int, default=4000, help="training programs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = training_rows(args.seed, args.size, args.difficulty)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(partial, args.output)  # written then renamed: an earlier file is never left half overwritten
    print(f"{len(rows)} training rows ({args.difficulty}) -> {args.output}")


if __name__ == "__main__":
    main()
