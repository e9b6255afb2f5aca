"""The validation table of every variant `choose.py` tried: one row per (preset, variant), each world's figures and
their mean, for C2C and the baselines scored with it.

    python experiments/demo_recipe/summarize.py experiments/demo_recipe/results/*.jsonl > experiments/demo_recipe/results/table.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def cell(values: list[float]) -> str:
    shown = " / ".join(f"{100 * v:.0f}" for v in values)
    return f"{shown} (mean {100 * sum(values) / len(values):.1f})" if len(values) > 1 else shown


def main(paths: list[str]) -> None:
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                rows[(record["preset"], record["variant"])].append(record)
    print("Validation accuracy (%), per world (seeds in order) and mean; transfer | complementary. Each variant")
    print("overrides the preset of its day (`choices.md` says which): `base` is the first round's full preset, with no")
    print("country questions in the fuser's data and the trained text-to-text included; `fuser_schedule=linear` is the")
    print("second round's, before the warm-up-stable-decay schedule became the default. Round 4's quick rows (the")
    print("`until_learnt` schedules) override round 3's quick preset.\n")
    print("| preset | variant | seeds | C2C transfer | C2C complementary | receiver transfer | text-to-text transfer | trained t2t transfer | fuser loss (last log) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (preset, variant), records in rows.items():
        records.sort(key=lambda r: r["seed"])

        def figures(method: str, task: str, records: list[dict] = records) -> str:
            values = [r["accuracy"][method][f"{task}-validation"] for r in records if method in r["accuracy"]]
            return cell(values) if values else "-"

        losses = " / ".join(f"{r['fuser_losses'][-1]:.3f}" for r in records)
        print(f"| {preset} | `{variant}` | {', '.join(str(r['seed']) for r in records)} | {figures('c2c', 'transfer')} | "
              f"{figures('c2c', 'complementary')} | {figures('receiver', 'transfer')} | {figures('t2t', 'transfer')} | "
              f"{figures('t2t_trained', 'transfer')} | {losses} |")


if __name__ == "__main__":
    main(sys.argv[1:])
