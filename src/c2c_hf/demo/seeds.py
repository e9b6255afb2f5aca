"""Several worlds: the demo once per seed (other people, facts and base initialisations), and what holds across them.

A claim about the recipe ("C2C beats text-to-text") is a claim over worlds, so its interval is a t-interval over the
per-seed figures (n = seeds, n - 1 degrees of freedom), for each method's accuracy and for the paired per-seed
differences C2C - text-to-text and C2C - receiver. Pooling the questions of several seeds as if independent would
give a too-narrow interval. Each seed's own report (with its per-question paired intervals) stays in `seed-<N>/`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, atomic_write_text
from ..evaluation import environment, t_interval
from .report import BENCHMARK, claim_output_folder

DIFFERENCES = (("c2c", "t2t"), ("c2c", "receiver"))  # per-seed accuracy differences with their t-intervals


def seed_summary(reports: Mapping[int, Mapping[str, Any]], split: str = BENCHMARK) -> dict[str, Any]:
    """Per-seed accuracies and latencies on `split`, their means with t-intervals over seeds, the per-seed
    differences `DIFFERENCES` with theirs, C2C's seed-to-seed standard deviation and latency ratio to
    text-to-text. Needs at least two seeds."""
    seeds = sorted(reports)
    if len(seeds) < 2:
        raise ValueError(f"A summary over seeds needs at least two seeds, got {seeds}.")
    methods = list(reports[seeds[0]]["results"])
    accuracy = {m: [reports[s]["results"][m][split]["accuracy"] for s in seeds] for m in methods}
    latency = {m: [reports[s]["results"][m][split]["latency_median_s"] for s in seeds] for m in methods}

    def over_seeds(values: Sequence[float]) -> dict[str, Any]:
        mean, (low, high) = t_interval(values)
        return {"per_seed": list(values), "mean": mean, "t95": [low, high], "sd": statistics.stdev(values)}

    summary: dict[str, Any] = {
        "seeds": seeds,
        "split": split,
        "interval": "t-interval over seeds (95%, n - 1 degrees of freedom)",
        "accuracy": {m: over_seeds(accuracy[m]) for m in methods},
        "latency_median_s": {m: over_seeds(latency[m]) for m in methods},
        "differences": {},
    }
    for first, second in DIFFERENCES:
        if first in accuracy and second in accuracy:
            per_seed = [a - b for a, b in zip(accuracy[first], accuracy[second])]
            summary["differences"][f"{first} - {second}"] = over_seeds(per_seed)
    if "c2c" in latency and "t2t" in latency:
        summary["c2c_latency_ratio_to_t2t"] = over_seeds([c / t for c, t in zip(latency["c2c"], latency["t2t"])])
    return summary


def seed_targets(summary: Mapping[str, Any]) -> dict[str, bool]:
    """The multi-world targets: on the mean over seeds, C2C >= receiver + 50 points, C2C above text-to-text with
    the t-interval of the difference above 0 and on every seed, C2C's seed-to-seed SD <= 4 points, C2C's latency at
    most half of text-to-text's."""
    versus_t2t = summary["differences"]["c2c - t2t"]
    return {
        "c2c_ge_receiver_plus_50pts": summary["differences"]["c2c - receiver"]["mean"] >= 0.50,
        "c2c_above_t2t_interval_above_0": versus_t2t["t95"][0] > 0,
        "c2c_above_t2t_every_seed": all(d > 0 for d in versus_t2t["per_seed"]),
        "c2c_sd_le_4pts": summary["accuracy"]["c2c"]["sd"] <= 0.04,
        "c2c_latency_le_half_t2t": summary["c2c_latency_ratio_to_t2t"]["mean"] <= 0.5,
    }


def seeds_markdown(summary: Mapping[str, Any], targets: Mapping[str, bool]) -> str:
    """`seeds.md`: every seed's accuracy per method, the means with their t-intervals, the differences, targets."""
    seeds, methods = summary["seeds"], list(summary["accuracy"])
    head = "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean [95% t-interval over seeds] | SD |"
    lines = [f"# The demo over {len(seeds)} worlds ({summary['split']} questions)", "", "Accuracy (%):", "", head,
             "|---" * (len(seeds) + 3) + "|"]  # fmt: skip

    def row(name: str, s: Mapping[str, Any], signed: bool = False) -> str:
        cell = "{:+.1f}" if signed else "{:.1f}"
        values = " | ".join(cell.format(100 * v) for v in s["per_seed"])
        low, high = (cell.format(100 * v) for v in s["t95"])
        return f"| {name} | {values} | {cell.format(100 * s['mean'])} [{low}, {high}] | {100 * s['sd']:.1f} |"

    lines += [row(m, summary["accuracy"][m]) for m in methods]
    lines += ["", "Per-seed differences (points):", "", head.replace("method", "difference"), "|---" * (len(seeds) + 3) + "|"]
    lines += [row(name, s, signed=True) for name, s in summary["differences"].items()]
    ratio = summary.get("c2c_latency_ratio_to_t2t")
    if ratio:
        lines += ["", f"C2C latency / text-to-text latency: mean {ratio['mean']:.2f} (per seed "
                  f"{', '.join(f'{r:.2f}' for r in ratio['per_seed'])})."]  # fmt: skip
    lines += ["", "Targets: " + ", ".join(f"{name} {'met' if met else 'MISSED'}" for name, met in targets.items()), ""]
    return "\n".join(lines)


def readme_summary(content: Mapping[str, Any]) -> str:
    """The README's account of a multi-seed demo run, from its `seeds.json` content (a test keeps them equal)."""
    summary, targets = content["summary"], content["targets"]
    seeds, accuracy = summary["seeds"], summary["accuracy"]

    def mean_interval(s: Mapping[str, Any], signed: bool = False) -> str:
        cell = "{:+.1f}" if signed else "{:.1f}"
        low, high = (cell.format(100 * v) for v in s["t95"])
        return f"{cell.format(100 * s['mean'])}{'' if signed else '%'} [{low}, {high}]"

    versus_t2t = summary["differences"]["c2c - t2t"]
    above = sum(d > 0 for d in versus_t2t["per_seed"])
    methods = ", ".join(f"{name} {mean_interval(accuracy[m])}" for m, name in (
        ("receiver", "receiver alone"), ("sharer", "sharer alone"), ("t2t", "text-to-text"), ("routing", "routing"),
        ("oracle", "oracle"),
    ) if m in accuracy)  # fmt: skip
    return (
        f"Over {len(seeds)} worlds (seeds {', '.join(map(str, seeds))}; {summary['split']} people; mean [95% "
        f"t-interval over seeds]): C2C {mean_interval(accuracy['c2c'])} (SD {100 * accuracy['c2c']['sd']:.1f}), "
        f"{methods}; C2C - text-to-text {mean_interval(versus_t2t, signed=True)} points, above it on {above} of "
        f"{len(seeds)} seeds; C2C - receiver {mean_interval(summary['differences']['c2c - receiver'], signed=True)} "
        f"points; C2C's latency {summary['c2c_latency_ratio_to_t2t']['mean']:.2f}x text-to-text's. Targets: "
        + ", ".join(f"{name} {'met' if met else 'MISSED'}" for name, met in targets.items())
        + "."
    )


def plot_seeds(summary: Mapping[str, Any], path: str | Path) -> None:
    """Each method's per-seed accuracies (dots) and their mean with its t-interval over seeds (bar)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    for i, s in enumerate(summary["accuracy"].values()):
        axes.scatter([i] * len(s["per_seed"]), [100 * v for v in s["per_seed"]], color=f"C{i}", alpha=0.5, s=18)
        low, high = (100 * v for v in s["t95"])
        mean = 100 * s["mean"]
        axes.errorbar([i + 0.2], [mean], yerr=[[mean - low], [high - mean]], fmt="s", color=f"C{i}", capsize=4)
    axes.set_xticks(range(len(summary["accuracy"])), list(summary["accuracy"]))
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3, axis="y")
    axes.set_title(f"{len(summary['seeds'])} worlds: per seed (dots), mean and 95% t-interval over seeds (squares)")
    figure.savefig(path, dpi=150)


def write_seed_summary(reports: Mapping[int, Mapping[str, Any]], output: str | Path) -> dict[str, Any]:
    """`seeds.json`, `seeds.md` and `seeds.png` in `output` from the per-seed reports; returns the JSON content."""
    output = Path(output)
    summary = seed_summary(reports)
    targets = seed_targets(summary)
    content = {
        "environment": environment(),
        "protocol": {"seeds": summary["seeds"], **reports[summary["seeds"][0]].get("protocol", {})},
        "configs": {seed: reports[seed]["config"].get("demo") for seed in summary["seeds"]},
        "summary": summary,
        "targets": targets,
    }
    atomic_write_text(output / "seeds.json", json.dumps(content, indent=1) + "\n")
    atomic_write_text(output / "seeds.md", seeds_markdown(summary, targets))
    with atomic_file(output / "seeds.png") as path:
        plot_seeds(summary, path)
    return content


def run_seeds(seeds: Sequence[int], output: str | Path, run_one: Callable[[int, Path], Mapping[str, Any]]) -> dict:
    """`run_one(seed, output / f"seed-{seed}")` for every seed (one independent world each), then the summary."""
    output = Path(output)
    claim_output_folder(output)
    reports = {seed: run_one(seed, output / f"seed-{seed}") for seed in seeds}
    content = write_seed_summary(reports, output)
    print(seeds_markdown(content["summary"], content["targets"]))
    return content


__all__ = ["DIFFERENCES", "plot_seeds", "readme_summary", "run_seeds", "seed_summary", "seed_targets", "seeds_markdown", "write_seed_summary"]
