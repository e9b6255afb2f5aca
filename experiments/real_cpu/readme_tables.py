"""The sealed results' tables in `docs/results/real-cpu/README.md`, generated from the committed summaries.

Each table sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->`; this script rewrites every such block
from its summary file, and a test checks that the README holds exactly what the script writes, so every figure in
it is the committed result's.

    python experiments/real_cpu/readme_tables.py          # rewrite the blocks
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c2c_hf.atomic import atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))  # this folder's scripts
from sealed import interval, points, summary_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "real-cpu"
README = RESULTS / "README.md"
KNOWLEDGE_RESULTS = "knowledge-sealed/seed-1/world-224-32/dense-sharer/recall-sharer"
KNOWLEDGE = f"{KNOWLEDGE_RESULTS}/open/test-summary.json"
KNOWLEDGE_VALIDATION = f"{KNOWLEDGE_RESULTS}/validation/open/validation-summary.json"
KNOWLEDGE_CHOICE = f"{KNOWLEDGE_RESULTS}/validation-choice.json"
CAPABILITY, CAPABILITY_CHOICE = "capability/test-likelihood.json", "capability/validation-choice.json"
CAPABILITY_VALIDATION = "capability/validation-likelihood.json"
KNOWLEDGE_NAMES = {"receiver": "receiver alone", "sharer": "sharer alone", "t2t": "text-to-text (paper's protocol)",
                   "t2t_trained": "trained text-to-text", "routing": "routing", "fact_in_prompt": "fact in the prompt",
                   "projection": "C2C, projection only", "gated": "C2C, the method's full fuser"}  # fmt: skip
CAPABILITY_NAMES = {"receiver": "receiver alone", "sharer": "sharer alone", "t2t": "text-to-text", "routing": "routing",
                    "projection": "C2C, projection only", "gated": "C2C, the method's full fuser",
                    "control-projection": "control (projection only): the receiver as its own sharer",
                    "control-gated": "control (full fuser): the receiver as its own sharer"}  # fmt: skip


def met(flag: bool) -> str:
    return "met" if flag else "**missed**"


def knowledge_targets(summary: Mapping[str, Any]) -> list[str]:
    """Each configuration against the task's three targets on the test people."""
    lines = []
    t2t_latency = summary["latency_median_s"]["t2t"]
    for config, row in summary["seeds"].items():
        receiver, t2t = row["minus"]["receiver"], row["minus"]["t2t"]
        latency = sum(summary["latency_median_s"][run] for run in row["runs"]) / len(row["runs"]) / t2t_latency
        lines.append(
            f"- {KNOWLEDGE_NAMES.get(config, config)}: C2C - receiver {points(receiver['mean'])} (>= +50: "
            f"{met(receiver['mean'] >= 0.5)}); C2C - text-to-text {points(t2t['mean'])}, t over seeds "
            f"{interval(t2t['seed_t95'])} (above 0: {met(t2t['seed_t95'][0] > 0)}); latency {latency:.2f}x "
            f"text-to-text (<= 0.5x: {met(latency <= 0.5)})."
        )
    return lines


def capability_targets(summary: Mapping[str, Any]) -> list[str]:
    """Each configuration's share of the receiver-to-sharer gap, against the target of a third with its intervals
    above 0."""
    lines = []
    references = {reference for _, reference in summary["contrast_pairs"]}  # controls: C2C's references, no target
    for config, row in summary["seeds"].items():
        if config in references:
            continue
        closed, receiver = row["gap_closed"], row["minus"]["receiver"]
        above = receiver["seed_t95"][0] > 0 and receiver["question_paired95"][0] > 0
        lines.append(
            f"- {CAPABILITY_NAMES.get(config, config)}: closes {100 * closed['mean']:.0f}% of the gap, t over seeds "
            f"[{100 * closed['seed_t95'][0]:.0f}, {100 * closed['seed_t95'][1]:.0f}]% (>= 33%: "
            f"{met(closed['mean'] >= 1 / 3)}); C2C - receiver {points(receiver['mean'])}, t over seeds "
            f"{interval(receiver['seed_t95'])}, paired {interval(receiver['question_paired95'])} (above 0: "
            f"{met(above)})."
        )
    return lines


@dataclass(frozen=True)
class Block:
    """A README block: its summary and the choice it rests on (paths under the results folder), the rows' names,
    the target lines (none on validation) and whether it shows each configuration's differences to each baseline
    (one seed a configuration on validation: the accuracy table and the contrasts say it)."""

    summary: str
    choice: str
    names: Mapping[str, str]
    targets: Callable[[Mapping[str, Any]], list[str]] | None = None
    differences: bool = True


BLOCKS = {
    "knowledge-validation": Block(KNOWLEDGE_VALIDATION, KNOWLEDGE_CHOICE, KNOWLEDGE_NAMES, differences=False),
    "knowledge-test": Block(KNOWLEDGE, KNOWLEDGE_CHOICE, KNOWLEDGE_NAMES, knowledge_targets),
    "capability-validation": Block(CAPABILITY_VALIDATION, CAPABILITY_CHOICE, CAPABILITY_NAMES, differences=False),
    "capability-test": Block(CAPABILITY, CAPABILITY_CHOICE, CAPABILITY_NAMES, capability_targets),
}


def block(name: str, results: Path = RESULTS) -> str:
    """The text of block `name`: the validation choice, its summary's tables, then its targets."""
    spec = BLOCKS[name]
    summary = json.loads((results / spec.summary).read_text(encoding="utf-8"))
    protocol, commit = summary["protocol"], summary["environment"]["git_commit"]
    if not (results / spec.choice).is_file():  # validation, while candidates are still being scored
        head = f"`{spec.summary}` (commit {commit}); no choice yet (`{spec.choice}` is written once all are in)."
        return "\n".join([head, "", *summary_markdown(summary, spec.names, differences=False)])
    choice = json.loads((results / spec.choice).read_text(encoding="utf-8"))
    candidates = ", ".join(f"{c} {100 * accuracy:.1f}%" for c, accuracy in choice["validation_accuracy"].items())
    if protocol["scored_split"] == "test":
        head = (f"Chosen on validation: **{choice['chosen']}** ({candidates}). `{spec.summary}`: test scored "
                f"{protocol['test_evaluations']} time(s) per configuration; commit {commit}.")  # fmt: skip
    else:
        head = f"`{spec.summary}` (commit {commit}); the choice, `{spec.choice}`: **{choice['chosen']}**."
    tables = summary_markdown(summary, spec.names, spec.differences)
    return "\n".join([head, "", *tables, *(["", *spec.targets(summary)] if spec.targets else [])])


def blocks_in(text: str) -> list[str]:
    return re.findall(r"<!-- generated: (\S+) -->", text)


def rewrite(text: str, results: Path = RESULTS) -> str:
    """`text` with every generated block rewritten from its summary."""
    for name in blocks_in(text):
        start, end = f"<!-- generated: {name} -->\n", f"<!-- end: {name} -->"
        before, _, rest = text.partition(start)
        _, found, after = rest.partition(end)
        if not found:
            raise ValueError(f"The README's block {name!r} has no closing line {end!r}.")
        text = before + start + block(name, results) + "\n" + end + after
    return text


if __name__ == "__main__":
    atomic_write_text(README, rewrite(README.read_text(encoding="utf-8")))
    print(f"rewrote {', '.join(blocks_in(README.read_text(encoding='utf-8')))} in {README}")
