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
from collections.abc import Callable, Mapping, Sequence
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
KNOWLEDGE_CHOICE = f"{KNOWLEDGE_RESULTS}/validation-choice.json"
CAPABILITY, CAPABILITY_CHOICE = "capability/test-likelihood.json", "capability/validation-choice.json"
KNOWLEDGE_NAMES = {"receiver": "receiver alone", "sharer": "sharer alone", "t2t": "text-to-text (paper's protocol)",
                   "t2t_trained": "trained text-to-text", "routing": "routing", "fact_in_prompt": "fact in the prompt",
                   "projection": "C2C, projection only", "gated": "C2C, the method's full fuser"}  # fmt: skip
CAPABILITY_NAMES = {"receiver": "receiver alone", "sharer": "sharer alone", "t2t": "text-to-text",
                    "t2t_trained": "trained text-to-text", "routing": "routing",
                    "projection": "C2C, projection only", "gated": "C2C, the method's full fuser",
                    "control-projection": "control (projection only): the receiver as its own sharer",
                    "control-gated": "control (full fuser): the receiver as its own sharer"}  # fmt: skip


def met(flag: bool | None) -> str:
    """A target's verdict; None where it needs an interval over seeds and one seed is in."""
    return "not measured: one seed" if flag is None else "met" if flag else "**missed**"


def above_zero(seed_t95: Sequence[float] | None) -> bool | None:
    """Whether an interval over seeds lies above 0 (None for one seed: no interval)."""
    return None if seed_t95 is None else seed_t95[0] > 0


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
            f"{interval(t2t['seed_t95'])} (above 0: {met(above_zero(t2t['seed_t95']))}); latency {latency:.2f}x "
            f"text-to-text (<= 0.5x: {met(latency <= 0.5)})."
        )
    return lines


def percent(seed_t95: Sequence[float] | None) -> str:
    """A share's interval over seeds in whole percent."""
    return "(one seed)" if seed_t95 is None else f"[{100 * seed_t95[0]:.0f}, {100 * seed_t95[1]:.0f}]%"


def capability_targets(summary: Mapping[str, Any]) -> list[str]:
    """Each configuration's share of the receiver-to-sharer gap, against the target of a third with its intervals
    above 0."""
    lines = []
    references = {reference for _, reference in summary["contrast_pairs"]}  # controls: C2C's references, no target
    for config, row in summary["seeds"].items():
        if config in references:
            continue
        closed, receiver = row["gap_closed"], row["minus"]["receiver"]
        seeds_above = above_zero(receiver["seed_t95"])
        above = None if seeds_above is None else seeds_above and receiver["question_paired95"][0] > 0
        lines.append(
            f"- {CAPABILITY_NAMES.get(config, config)}: closes {100 * closed['mean']:.0f}% of the gap, t over seeds "
            f"{percent(closed['seed_t95'])} (>= 33%: "
            f"{met(closed['mean'] >= 1 / 3)}); C2C - receiver {points(receiver['mean'])}, t over seeds "
            f"{interval(receiver['seed_t95'])}, paired {interval(receiver['question_paired95'])} (above 0: "
            f"{met(above)})."
        )
    return lines


@dataclass(frozen=True)
class Block:
    """A README block: a test summary and the validation choice it rests on (paths under the results folder), the
    rows' names and the target lines. Validation summaries stay in their own files: the block's head line names
    the choice and each candidate's validation accuracy."""

    summary: str
    choice: str
    names: Mapping[str, str]
    targets: Callable[[Mapping[str, Any]], list[str]]


BLOCKS = {
    "knowledge-test": Block(KNOWLEDGE, KNOWLEDGE_CHOICE, KNOWLEDGE_NAMES, knowledge_targets),
    "capability-test": Block(CAPABILITY, CAPABILITY_CHOICE, CAPABILITY_NAMES, capability_targets),
}


def block(name: str, results: Path = RESULTS) -> str:
    """The text of block `name`: the validation choice, its test summary's tables, then its targets."""
    spec = BLOCKS[name]
    summary = json.loads((results / spec.summary).read_text(encoding="utf-8"))
    protocol, commit = summary["protocol"], summary["environment"]["git_commit"]
    if protocol["scored_split"] != "test":
        raise ValueError(f"Block {name!r} reads {spec.summary}, a {protocol['scored_split']!r} summary; a README "
                         "block shows a test summary (validation summaries stay in their own files).")  # fmt: skip
    choice = json.loads((results / spec.choice).read_text(encoding="utf-8"))
    candidates = ", ".join(f"{c} {100 * accuracy:.1f}%" for c, accuracy in choice["validation_accuracy"].items())
    head = (f"Chosen on validation: **{choice['chosen']}** ({candidates}). `{spec.summary}`: test scored "
            f"{protocol['test_evaluations']} time(s) per configuration; commit {commit}.")  # fmt: skip
    return "\n".join([head, "", *summary_markdown(summary, spec.names), "", *spec.targets(summary)])


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
