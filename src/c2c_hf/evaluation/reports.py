"""Reports of an evaluation: per method and benchmark a summary (accuracy with its Wilson interval, latency) and
every prediction, saved as `results.json`, a markdown table `results.md` and the plot `accuracy_latency.png`;
reports run apart (one per method, say) merge into one table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file, atomic_write_text
from .environment import environment
from .methods import METHODS
from .scoring import Prediction
from .statistics import paired_difference, wilson_interval
from .tasks import BENCHMARKS


def summarize(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Accuracy with its 95% Wilson interval, latency median / p90 (seconds per question), mean generated tokens."""
    n, correct = len(predictions), sum(p.correct for p in predictions)
    latencies = np.array([p.latency for p in predictions], dtype=float)
    summary = {
        "accuracy": correct / n if n else 0.0,
        "ci95": list(wilson_interval(correct, n)),
        "n": n,
        "correct": correct,
        "latency_median_s": float(np.median(latencies)) if n else 0.0,
        "latency_p90_s": float(np.percentile(latencies, 90)) if n else 0.0,
        "mean_generated_tokens": float(np.mean([p.tokens for p in predictions])) if n else 0.0,
    }
    hint_tokens = [p.details["hint_tokens"] for p in predictions if "hint_tokens" in p.details]
    if hint_tokens:
        summary["mean_hint_tokens"] = float(np.mean(hint_tokens))
    return summary


def question_outcomes(predictions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-question outcomes of one method on one question set, compactly (what a committed results file keeps so
    that every accuracy and paired interval recomputes): question ids, gold and predicted letters, and right/wrong as
    a string of 1s and 0s. `predictions` are `Prediction.to_dict()` records."""
    return {
        "ids": [p["id"] for p in predictions],
        "gold": [p["gold"] for p in predictions],
        "predicted": [p["predicted"] for p in predictions],
        "correct": "".join("1" if p["correct"] else "0" for p in predictions),
    }


# --------------------------------------------------------------------------- report


def write_report(
    results: Mapping[str, Mapping[str, Sequence[Prediction]]],
    output_dir: str | Path,
    config: Mapping[str, Any],
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `results.json`, `results.md` and `accuracy_latency.png` to `output_dir`; returns the JSON content."""
    report = build_report(results, config, protocol)
    save_report(report, output_dir)
    return report


def build_report(
    results: Mapping[str, Mapping[str, Sequence[Prediction]]],
    config: Mapping[str, Any],
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A report's JSON content: the environment it ran in, the protocol when the caller states one (which split
    every choice was made on, how often the test split was scored: `{"selected_on": "validation",
    "test_evaluations": 1, ...}`), the config, and per method and benchmark the summary and every prediction."""
    return {
        "environment": environment(),
        **({"protocol": dict(protocol)} if protocol is not None else {}),
        "config": dict(config),
        "results": {
            method: {
                benchmark: {**summarize(predictions), "predictions": [p.to_dict() for p in predictions]}
                for benchmark, predictions in by_benchmark.items()
            }
            for method, by_benchmark in results.items()
        },
    }


def load_report(report_dir: str | Path) -> dict[str, Any]:
    """The JSON content of the report `save_report` wrote to `report_dir`."""
    return json.loads((Path(report_dir) / "results.json").read_text(encoding="utf-8"))


def save_report(report: Mapping[str, Any], output_dir: str | Path) -> None:
    """Write a report's `results.json`, `results.md` and `accuracy_latency.png` to `output_dir`, each atomically (a
    failed write leaves the previous file)."""
    output_dir = Path(output_dir)
    atomic_write_text(output_dir / "results.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(output_dir / "results.md", markdown_table(report))
    with atomic_file(output_dir / "accuracy_latency.png") as path:
        plot_accuracy_latency(report, path)


# Settings that every merged report must share: rows of one table compare only when these agree. The fuser
# checkpoint (`model`) must agree only among reports with c2c rows: the baselines never run the fuser, so they may come
# from the bases alone (`--receiver/--sharer`) or from any checkpoint of the same bases.
MERGE_SETTINGS = (
    "receiver", "sharer", "dtype", "device", "mode", "prompt", "max_new_tokens", "hint_tokens", "batch_size", "limit",
    "seed", "latency",
)  # fmt: skip
OUTCOME_FIELDS = ("id", "gold", "predicted", "correct")  # what a merged report keeps of each prediction


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from several reports of the same bases, fuser and settings, evaluated apart (e.g. one run per
    method and benchmark, resumable across sessions): their results side by side, methods and benchmarks in canonical
    order, the source configs under `config["merged_from"]` (a merged report contributes its own sources, so the list
    stays flat). Each prediction keeps only its question's outcome (`OUTCOME_FIELDS`: item id, gold and predicted
    letters, correctness), what the paired differences and `question_outcomes` need; the rest (answers, hints,
    latencies) stays in the source reports, so a merged table does not store it twice.

    Raises `ValueError` when a setting of `MERGE_SETTINGS` (or the fuser checkpoint of two reports with c2c rows)
    differs, a (method, benchmark) pair appears twice, or two methods were evaluated on different items of one
    benchmark."""
    if not reports:
        raise ValueError("Nothing to merge: give at least one report.")
    configs = [report["config"] for report in reports]
    with_c2c = [config for config, report in zip(configs, reports) if "c2c" in report["results"]]
    for group, keys in ((configs, MERGE_SETTINGS), (with_c2c, ("model",))):
        for config in group[1:]:
            for key in keys:
                if config.get(key) != group[0].get(key):
                    raise ValueError(
                        f"Cannot merge reports evaluated with different {key}: {group[0].get(key)!r} vs "
                        f"{config.get(key)!r}; evaluate every method with the same settings."
                    )
    first = configs[0]
    results: dict[str, dict[str, Any]] = {}
    for report in reports:
        for method, by_benchmark in report["results"].items():
            for benchmark, summary in by_benchmark.items():
                if benchmark in results.get(method, {}):
                    raise ValueError(f"{method} on {benchmark} appears in two reports; merge only one of them.")
                slim = [{key: p[key] for key in OUTCOME_FIELDS if key in p} for p in summary["predictions"]]
                results.setdefault(method, {})[benchmark] = {**summary, "predictions": slim}
    items_seen: dict[str, tuple[str, list[str]]] = {}  # benchmark -> (first method, its item ids in order)
    for method, by_benchmark in results.items():
        for benchmark, summary in by_benchmark.items():
            ids = [p["id"] for p in summary["predictions"]]
            other, other_ids = items_seen.setdefault(benchmark, (method, ids))
            if ids != other_ids:
                raise ValueError(
                    f"{method} and {other} were evaluated on different {benchmark} items, so their accuracies do not "
                    "compare; evaluate every method with the same --limit and --seed."
                )

    def canonical(names: Sequence[str], order: Sequence[str]) -> list[str]:
        return sorted(names, key=lambda name: (order.index(name) if name in order else len(order), name))

    benchmarks = canonical({b for by_benchmark in results.values() for b in by_benchmark}, BENCHMARKS)
    methods = canonical(list(results), METHODS)
    return {
        "environment": environment(),
        "sources_environment": [e for r in reports for e in r.get("sources_environment", [r.get("environment")])],
        "config": {
            "model": (with_c2c[0] if with_c2c else first).get("model"),
            **{key: first[key] for key in MERGE_SETTINGS if key in first},
            "methods": methods,
            "benchmarks": benchmarks,
            "merged_from": [source for r in reports for source in r["config"].get("merged_from", [r["config"]])],
        },
        "results": {
            method: {b: results[method][b] for b in benchmarks if b in results[method]} for method in methods
        },
    }


def _method_table(results: Mapping[str, Any], methods: Sequence[str], benchmarks: Sequence[str], cell) -> list[str]:
    """Markdown lines of a method x benchmark table; `cell(method, benchmark)` renders one cell (`-` where absent)."""
    lines = ["| method | " + " | ".join(benchmarks) + " |", "|---" * (len(benchmarks) + 1) + "|"]
    for method in methods:
        cells = [cell(method, b) if b in results[method] else "-" for b in benchmarks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def format_paired(paired: Mapping[str, Any]) -> str:
    """A `paired_difference` result as table text: points [95% interval] (only this right / only the baseline)."""
    low, high = (100 * bound for bound in paired["ci95"])
    return (
        f"{100 * paired['difference']:+.1f} [{low:+.1f}, {high:+.1f}] "
        f"({paired['only_this']} / {paired['only_baseline']})"
    )


def markdown_table(report: Mapping[str, Any]) -> str:
    """Method x benchmark table: accuracy (%) [95% Wilson interval] and median latency per question; then, when the
    report has the receiver, each other method's paired difference from it on the same items."""
    results = report["results"]
    benchmarks = list(dict.fromkeys(b for by_benchmark in results.values() for b in by_benchmark))
    config = report["config"]

    def accuracy_cell(method: str, benchmark: str) -> str:
        s = results[method][benchmark]
        low, high = (100 * bound for bound in s["ci95"])
        return f"{100 * s['accuracy']:.1f} [{low:.1f}, {high:.1f}] · {s['latency_median_s']:.3f} s (n={s['n']})"

    lines = [
        "# C2C evaluation",
        "",
        f"Accuracy (%) [95% Wilson interval] · median latency per question (s); mode `{config.get('mode')}`, "
        f"batch size {config.get('batch_size')}.",
        "",
        *_method_table(results, list(results), benchmarks, accuracy_cell),
    ]
    baseline = results.get("receiver", {})
    compared = [m for m, by_benchmark in results.items() if m != "receiver" and by_benchmark.keys() & baseline.keys()]

    def difference_cell(method: str, benchmark: str) -> str:
        if benchmark not in baseline:
            return "-"
        return format_paired(
            paired_difference(results[method][benchmark]["predictions"], baseline[benchmark]["predictions"])
        )

    if compared:
        lines += [
            "",
            "Difference from the receiver alone on the same items: points [paired 95% interval] (questions only this "
            "method gets right / only the receiver gets right).",
            "",
            *_method_table(results, compared, benchmarks, difference_cell),
        ]
    return "\n".join(lines) + "\n"


def plot_accuracy_latency(report: Mapping[str, Any], path: str | Path) -> None:
    """Accuracy vs median latency, one point (with its Wilson interval) per method and benchmark: a colour per
    method, a marker per benchmark, named in the legend (labels on the points would overlap where methods tie)."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state

    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    benchmarks = list(dict.fromkeys(b for by_benchmark in report["results"].values() for b in by_benchmark))
    markers = {benchmark: "osD^vP*X"[i % 8] for i, benchmark in enumerate(benchmarks)}
    for i, (method, by_benchmark) in enumerate(report["results"].items()):
        for benchmark, s in by_benchmark.items():
            x, y = s["latency_median_s"], 100 * s["accuracy"]
            low, high = (100 * v for v in s["ci95"])
            label = method if len(benchmarks) == 1 else f"{method} · {benchmark}"
            axes.errorbar(x, y, yerr=[[y - low], [high - y]], fmt=markers[benchmark], color=f"C{i}", capsize=3, label=label)
    axes.set_xlabel("median latency per question (s)")
    axes.set_ylabel("accuracy (%)")
    config = report["config"]
    benchmark_note = f", {benchmarks[0]}" if len(benchmarks) == 1 else ""
    axes.set_title(f"Accuracy vs latency (mode {config.get('mode')}, batch size {config.get('batch_size')}{benchmark_note})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.savefig(path, dpi=150, bbox_inches="tight")


def merge_report_dirs(report_dirs: Sequence[str | Path], output_dir: str | Path) -> dict[str, Any]:
    """`merge_reports` over the `results.json` of each folder, saved to `output_dir`; returns the merged report."""
    paths = [Path(folder) / "results.json" for folder in report_dirs]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"No report at {', '.join(missing)}: merge folders written by `c2c-hf eval --output`.")
    report = merge_reports([load_report(folder) for folder in report_dirs])
    save_report(report, output_dir)
    return report
