"""Copy a multi-world demo run into `docs/results/demo` at a size git keeps: the summary (`seeds.json/md/png`), each
world's `results.md` and `demo.md`, and each world's per-question outcomes as compact JSON (`seed-N/questions.json`:
environment, protocol, config, and per method and question set the question ids, predicted letters and right/wrong
flags, from which every accuracy, Wilson interval and paired difference of the run recomputes). The full per-question
`results.json` (hints, prompts, latencies) stays in the run folder.

    python experiments/demo_recipe/export_results.py runs/demo/seeds docs/results/demo
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from c2c_hf.evaluation import question_outcomes


def compact(report: dict) -> dict:
    """The per-question outcomes of one world's `results.json`."""
    outcomes = {}
    for method, by_set in report["results"].items():
        outcomes[method] = {
            name: {**question_outcomes(summary["predictions"]), "latency_median_s": summary["latency_median_s"]}
            for name, summary in by_set.items()
        }
    config = {k: v for k, v in report["config"].items() if k not in ("gate_map",)}
    return {"environment": report["environment"], "protocol": report["protocol"], "config": config, "outcomes": outcomes}


def main(run: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("seeds.json", "seeds.md", "seeds.png"):
        shutil.copy2(run / name, target / name)
    for world in sorted(run.glob("seed-*")):
        (target / world.name).mkdir(exist_ok=True)
        for name in ("results.md", "demo.md"):
            shutil.copy2(world / name, target / world.name / name)
        report = json.loads((world / "results.json").read_text(encoding="utf-8"))
        (target / world.name / "questions.json").write_text(json.dumps(compact(report)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
