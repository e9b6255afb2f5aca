"""The paper's analyses (`c2c-hf analyze`) on the real CPU pair, SmolLM2-135M-Instruct <- Qwen2.5-Coder-0.5B.

    python experiments/real_cpu/analysis_real.py --output docs/results/analysis/real

Two fusers of that pair:
- `general/`: the general fuser (`experiments/real_cpu/train_general.sh`), on 64 ARC-Easy test questions (the
  harness's multiple-choice prompt): transfer, rank, progressive and gates (enrichment needs a context text);
- `knowledge/`: the open-question knowledge fuser (`experiments/real_cpu/knowledge.py`, the checkpoint chosen on
  validation people) on the 128 held-out open questions, answered with the fact's statement, the enrichment
  oracle's context being that statement: all five analyses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from c2c_hf.analysis import ANALYSES
from c2c_hf.analysis import main as analyze

sys.path.insert(0, str(Path(__file__).parent))
import knowledge_setup  # this folder's scripts


def knowledge_rows() -> list[dict[str, str]]:
    people = knowledge_setup.DEFAULT_PEOPLE
    world = knowledge_setup.load_world(argparse.Namespace(seed=0, fuser_people=people[0], heldout_people=people[1]))
    items = knowledge_setup.heldout_items(world, seed=0)
    return [{"prompt": i.question, "answer": world.fact_hint(i), "context": world.fact_hint(i)} for i in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--general", type=Path, default=Path("runs/real-cpu/general-qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--knowledge", type=Path, default=knowledge_setup.RUNS / "c2c-open-gated-h64")
    parser.add_argument("--arc-easy", type=Path, default=Path("../shared/data/benchmarks/arc_easy.jsonl"))
    parser.add_argument("--pairs", nargs="+", choices=("general", "knowledge"), default=["general", "knowledge"])
    parser.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES))
    args = parser.parse_args()
    common = ["--dtype", "bfloat16", "--batch-size", "8"]
    if "knowledge" in args.pairs:
        output = args.output / "knowledge"
        output.mkdir(parents=True, exist_ok=True)
        data = output / "heldout.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in knowledge_rows()), encoding="utf-8")
        for name in args.analyses:
            print(f"== knowledge: {name}", flush=True)
            analyze([name, "--model", str(args.knowledge), "--data", str(data), "--chat-template",
                     "--output", str(output), *common])  # fmt: skip
    if "general" in args.pairs:
        output = args.output / "general"
        for name in (a for a in args.analyses if a != "enrichment"):
            print(f"== general: {name}", flush=True)
            analyze([name, "--model", str(args.general), "--benchmark", "arc_easy", "--data", str(args.arc_easy),
                     "--limit", "64", "--output", str(output), *common])  # fmt: skip


if __name__ == "__main__":
    main()
