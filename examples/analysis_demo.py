"""Run every `c2c-hf analyze` analysis on the demo world's trained pair.

    c2c-hf demo --output c2c-demo
    python examples/analysis_demo.py --demo c2c-demo --output docs/results/analysis/demo

The analysed prompts are the demo's scored transfer questions (people the fuser never saw; the sharer knows them), each in
the receiver's chat template, answered with the right choice's text as in the demo; the enrichment oracle's richer
context is the one fact the question asks about. The world and the questions are rebuilt from the demo's own report
(`results.json`: seed and world sizes), so they are exactly the ones the demo evaluated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from c2c_hf.analysis import ANALYSES
from c2c_hf.analysis import main as analyze
from c2c_hf.data import format_prompt
from c2c_hf.demo import DemoConfig, World, answer_text, demo_questions


def analysed_rows(demo: Path) -> list[dict[str, str]]:
    config = json.loads((demo / "results.json").read_text())["config"]
    demo_config = DemoConfig(**config["demo"])
    world = World.generate(demo_config.seed, config["world"], demo_config.attributes)
    items = demo_questions(world, demo_config)[f"transfer-{demo_config.splits[-1]}"]
    return [{"prompt": format_prompt(i), "answer": answer_text(i), "context": world.fact_hint(i)} for i in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a `c2c-hf demo --output` folder")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    data = args.output / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in analysed_rows(args.demo)), encoding="utf-8")
    for name in args.analyses:
        print(f"== {name}")
        analyze([name, "--model", str(args.demo / "c2c"), "--data", str(data), "--chat-template",
                 "--output", str(args.output)])  # fmt: skip


if __name__ == "__main__":
    main()
