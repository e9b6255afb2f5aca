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
from .report import TASKS, TEST, claim_output_folder

# Per-seed accuracy differences reported with their t-intervals over seeds; "best_single" is, per seed, the best of
# the receiver alone, the sharer alone and routing (what picking one model can reach).
DIFFERENCES = (("c2c", "t2t"), ("c2c", "t2t_trained"), ("c2c", "receiver"), ("c2c", "best_single"))
SINGLE_MODEL_METHODS = ("receiver", "sharer", "routing")


def seed_summary(reports: Mapping[int, Mapping[str, Any]], benchmark: str) -> dict[str, Any]:
    """Per-seed accuracies and latencies on `benchmark` (e.g. "transfer-test"), their means with t-intervals over
    seeds, the per-seed differences `DIFFERENCES` with theirs, C2C's latency ratio to text-to-text. Needs at least
    two seeds."""
    seeds = sorted(reports)
    if len(seeds) < 2:
        raise ValueError(f"A summary over seeds needs at least two seeds, got {seeds}.")
    methods = list(reports[seeds[0]]["results"])
    accuracy = {m: [reports[s]["results"][m][benchmark]["accuracy"] for s in seeds] for m in methods}
    latency = {m: [reports[s]["results"][m][benchmark]["latency_median_s"] for s in seeds] for m in methods}
    if all(m in accuracy for m in SINGLE_MODEL_METHODS):
        accuracy_with_best = {**accuracy, "best_single": [max(v) for v in zip(*(accuracy[m] for m in SINGLE_MODEL_METHODS))]}
    else:
        accuracy_with_best = accuracy

    def over_seeds(values: Sequence[float]) -> dict[str, Any]:
        mean, (low, high) = t_interval(values)
        return {"per_seed": list(values), "mean": mean, "t95": [low, high], "sd": statistics.stdev(values)}

    summary: dict[str, Any] = {
        "seeds": seeds,
        "benchmark": benchmark,
        "interval": "t-interval over seeds (95%, n - 1 degrees of freedom)",
        "accuracy": {m: over_seeds(accuracy[m]) for m in methods},
        "latency_median_s": {m: over_seeds(latency[m]) for m in methods},
        "differences": {},
    }
    for first, second in DIFFERENCES:
        if first in accuracy_with_best and second in accuracy_with_best:
            per_seed = [a - b for a, b in zip(accuracy_with_best[first], accuracy_with_best[second])]
            summary["differences"][f"{first} - {second}"] = over_seeds(per_seed)
    if "c2c" in latency and "t2t" in latency:
        summary["c2c_latency_ratio_to_t2t"] = over_seeds([c / t for c, t in zip(latency["c2c"], latency["t2t"])])
    return summary


def seed_targets(transfer: Mapping[str, Any], complementary: Mapping[str, Any], quick: bool = False) -> dict[str, bool]:
    """The multi-world targets. Full demo, on means over seeds: transfer: C2C >= receiver + 50 points, C2C above
    text-to-text with the t-interval of the difference above 0 and on every seed, C2C's seed-to-seed SD <= 4 points,
    C2C's latency at most half of text-to-text's; complementary: C2C >= the best single model (receiver, sharer or
    routing, per seed) + 30 points, and C2C >= text-to-text. Quick demo: C2C >= receiver + 30 points on every seed."""
    gains = transfer["differences"]["c2c - receiver"]
    if quick:
        return {"transfer_c2c_ge_receiver_plus_30pts_every_seed": all(g >= 0.30 for g in gains["per_seed"])}
    versus_t2t = transfer["differences"]["c2c - t2t"]
    return {
        "transfer_c2c_ge_receiver_plus_50pts": gains["mean"] >= 0.50,
        "transfer_c2c_above_t2t_interval_above_0": versus_t2t["t95"][0] > 0,
        "transfer_c2c_above_t2t_every_seed": all(d > 0 for d in versus_t2t["per_seed"]),
        "transfer_c2c_sd_le_4pts": transfer["accuracy"]["c2c"]["sd"] <= 0.04,
        "transfer_c2c_latency_le_half_t2t": transfer["c2c_latency_ratio_to_t2t"]["mean"] <= 0.5,
        "complementary_c2c_ge_best_single_plus_30pts": complementary["differences"]["c2c - best_single"]["mean"] >= 0.30,
        "complementary_c2c_ge_t2t": complementary["differences"]["c2c - t2t"]["mean"] >= 0,
    }


def seeds_markdown(summaries: Mapping[str, Mapping[str, Any]], targets: Mapping[str, bool]) -> str:
    """`seeds.md`: per task, every seed's accuracy per method, the means with their t-intervals, the differences;
    then the targets."""
    first = next(iter(summaries.values()))
    seeds = first["seeds"]
    head = "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean [95% t-interval over seeds] | SD |"
    rule = "|---" * (len(seeds) + 3) + "|"
    lines = [f"# The demo over {len(seeds)} worlds", ""]

    def row(name: str, s: Mapping[str, Any], signed: bool = False) -> str:
        cell = "{:+.1f}" if signed else "{:.1f}"
        values = " | ".join(cell.format(100 * v) for v in s["per_seed"])
        low, high = (cell.format(100 * v) for v in s["t95"])
        return f"| {name} | {values} | {cell.format(100 * s['mean'])} [{low}, {high}] | {100 * s['sd']:.1f} |"

    for task, summary in summaries.items():
        lines += [f"## {task} ({summary['benchmark']} questions)", "", "Accuracy (%):", "", head, rule]
        lines += [row(m, s) for m, s in summary["accuracy"].items()]
        lines += ["", "Per-seed differences (points):", "", head.replace("method", "difference"), rule]
        lines += [row(name, s, signed=True) for name, s in summary["differences"].items()]
        ratio = summary.get("c2c_latency_ratio_to_t2t")
        if ratio:
            lines += ["", f"C2C latency / text-to-text latency: mean {ratio['mean']:.2f} (per seed "
                      f"{', '.join(f'{r:.2f}' for r in ratio['per_seed'])})."]  # fmt: skip
        lines.append("")
    lines += ["Targets: " + ", ".join(f"{name} {'met' if met else 'MISSED'}" for name, met in targets.items()), ""]
    return "\n".join(lines)


def readme_summary(content: Mapping[str, Any]) -> str:
    """The README's account of a multi-seed demo run, from its `seeds.json` content (a test keeps them equal)."""
    transfer, complementary = content["summary"]["transfer"], content["summary"]["complementary"]
    seeds = transfer["seeds"]
    if any(config.get("quick") for config in content["configs"].values()):
        return _quick_summary(content)

    def mean_interval(s: Mapping[str, Any], signed: bool = False) -> str:
        cell = "{:+.1f}" if signed else "{:.1f}"
        low, high = (cell.format(100 * v) for v in s["t95"])
        return f"{cell.format(100 * s['mean'])}{'' if signed else '%'} [{low}, {high}]"

    def methods(summary: Mapping[str, Any]) -> str:
        return ", ".join(f"{name} {mean_interval(summary['accuracy'][m])}" for m, name in (
            ("receiver", "receiver alone"), ("sharer", "sharer alone"), ("routing", "routing"),
            ("t2t", "text-to-text"), ("t2t_trained", "trained text-to-text"), ("fact_in_prompt", "fact in prompt"),
        ) if m in summary["accuracy"])  # fmt: skip

    versus_t2t = transfer["differences"]["c2c - t2t"]
    above = sum(d > 0 for d in versus_t2t["per_seed"])
    return (
        f"Over {len(seeds)} worlds (seeds {', '.join(map(str, seeds))}; test people; mean [95% t-interval over "
        f"seeds]). **Transfer** (a fact only the sharer knows): C2C {mean_interval(transfer['accuracy']['c2c'])} (SD "
        f"{100 * transfer['accuracy']['c2c']['sd']:.1f}), {methods(transfer)}; C2C - text-to-text "
        f"{mean_interval(versus_t2t, signed=True)} points, above it on {above} of {len(seeds)} seeds; C2C - receiver "
        f"{mean_interval(transfer['differences']['c2c - receiver'], signed=True)} points; C2C's latency "
        f"{transfer['c2c_latency_ratio_to_t2t']['mean']:.2f}x text-to-text's. **Complementary** (the sharer's fact "
        f"and the receiver's): C2C {mean_interval(complementary['accuracy']['c2c'])}, {methods(complementary)}; C2C - "
        f"best single model {mean_interval(complementary['differences']['c2c - best_single'], signed=True)} points. "
        "Targets: " + ", ".join(f"{name} {'met' if met else 'MISSED'}" for name, met in content["targets"].items())
        + "." + _duration_sentence(content)
    )


def _quick_summary(content: Mapping[str, Any]) -> str:
    """The quick demo's promise per world: C2C at least 30 points above the receiver alone on the test people."""
    transfer = content["summary"]["transfer"]
    gains = transfer["differences"]["c2c - receiver"]["per_seed"]
    met = sum(g >= 0.30 for g in gains)
    return (
        f"Quick demo over {len(gains)} worlds (seeds {', '.join(map(str, transfer['seeds']))}; test people, transfer): "
        f"C2C - receiver {', '.join(f'{100 * g:+.1f}' for g in gains)} points (at least +30 on {met} of {len(gains)}); "
        f"C2C {100 * transfer['accuracy']['c2c']['mean']:.1f}% and receiver alone "
        f"{100 * transfer['accuracy']['receiver']['mean']:.1f}% on average." + _duration_sentence(content)
    )


def _duration_sentence(content: Mapping[str, Any]) -> str:
    """" Each world took M-N min (...)" (or "M min" when they round alike): the per-seed wall times of the run, with
    its machine, when recorded."""
    seconds = [s for s in content.get("total_seconds", {}).values() if s is not None]
    if not seconds:
        return ""
    machine = content.get("environment", {})
    cpu = machine.get("cpu_model") or "this machine"
    low, high = f"{min(seconds) / 60:.1f}", f"{max(seconds) / 60:.1f}"
    return (f" Each world took {low if low == high else f'{low}-{high}'} min of wall time on {cpu} "
            f"({machine.get('cpu_count', '?')} CPUs, {machine.get('torch_threads', '?')} torch thread per process).")


def plot_seeds(summaries: Mapping[str, Mapping[str, Any]], path: str | Path) -> None:
    """One panel per task: each method's per-seed accuracies (dots) and their mean with its t-interval over seeds."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6 * len(summaries), 4.2), layout="constrained")
    for axes, (task, summary) in zip(figure.subplots(1, len(summaries), squeeze=False)[0], summaries.items()):
        for i, s in enumerate(summary["accuracy"].values()):
            axes.scatter([i] * len(s["per_seed"]), [100 * v for v in s["per_seed"]], color=f"C{i}", alpha=0.5, s=18)
            low, high = (100 * v for v in s["t95"])
            mean = 100 * s["mean"]
            axes.errorbar([i + 0.2], [mean], yerr=[[mean - low], [high - mean]], fmt="s", color=f"C{i}", capsize=4)
        axes.set_xticks(range(len(summary["accuracy"])), list(summary["accuracy"]), rotation=30, ha="right")
        axes.set_ylabel("accuracy (%)")
        axes.set_ylim(0, 102)
        axes.grid(alpha=0.3, axis="y")
        axes.set_title(f"{task} ({summary['benchmark']})")
    first = next(iter(summaries.values()))
    figure.suptitle(f"{len(first['seeds'])} worlds: per seed (dots), mean and 95% t-interval over seeds (squares)")
    figure.savefig(path, dpi=150)


def summary_split(reports: Mapping[int, Mapping[str, Any]]) -> str:
    """The split a summary over worlds is about: the test people when every world scored them, else the validation
    people (a `--splits validation` run, for choosing)."""
    scored = [set(report["config"].get("demo", {}).get("splits", [TEST])) for report in reports.values()]
    common = set.intersection(*scored) if scored else set()
    if not common:
        raise ValueError(f"The worlds scored no split in common ({[sorted(s) for s in scored]}): summarise like runs.")
    return TEST if TEST in common else sorted(common)[0]


def write_seed_summary(reports: Mapping[int, Mapping[str, Any]], output: str | Path) -> dict[str, Any]:
    """`seeds.json`, `seeds.md` and `seeds.png` in `output` from the per-seed reports; returns the JSON content."""
    output = Path(output)
    split = summary_split(reports)
    summary = {task: seed_summary(reports, f"{task}-{split}") for task in TASKS}
    quick = any(reports[seed]["config"].get("demo", {}).get("quick") for seed in reports)
    targets = seed_targets(summary["transfer"], summary["complementary"], quick)
    content = {
        "environment": environment(),
        "protocol": {"seeds": sorted(reports),
                     **{k: v for k, v in reports[min(reports)].get("protocol", {}).items() if k != "seed"}},
        "configs": {seed: reports[seed]["config"].get("demo") for seed in sorted(reports)},
        "total_seconds": {seed: reports[seed]["config"].get("timings_s", {}).get("total") for seed in sorted(reports)},
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


__all__ = [
    "DIFFERENCES",
    "plot_seeds",
    "readme_summary",
    "run_seeds",
    "seed_summary",
    "seed_targets",
    "seeds_markdown",
    "summary_split",
    "write_seed_summary",
]
