"""Summaries of the private-knowledge experiment's reports (`knowledge.py summary | segmentation | seeds | sealed`):
the fusion ablation with its paired differences, accuracy by how the alignment splits names, a fusion's mean over
seeds, and a sealed split's summary with its accuracy by kind of fact. They read the per-run reports
(`results.json`, every answer) and write small tables beside them."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoTokenizer

from c2c_hf import build_token_map
from c2c_hf.atomic import atomic_write_text
from c2c_hf.evaluation import (
    UNSEALED_PROTOCOL,
    format_paired,
    load_report,
    paired_difference,
    question_outcomes,
    result_metadata,
    wilson_interval,
)

sys.path.insert(0, str(Path(__file__).parent))  # this folder's scripts
from knowledge_setup import RECEIVER, experiment_dirs, load_world, split_benchmark, split_root, tagged
from sealed import interval, outcome_vector, parse_configs, points, seed_differences, write_split_summary

ABLATION = {"projection": "projection only (no receiver input, no gate)", "weighted": "+ fusion (receiver input, weight)",
            "gated": "+ gate (C2C)"}  # fmt: skip


def ablation_pairs(
    rows: dict[str, dict], baselines: dict[str, dict], compared: dict[str, dict], compare_tag: str | None
) -> list[dict]:
    """Each fusion against the receiver alone and text-to-text (the experiment's two targets: C2C at least 30 points
    above the receiver, and above text-to-text), each ablation step against the one before it (the paper's order),
    and each fusion against the same fusion of run `compare_tag` (`compared`), paired on the same held-out
    questions."""
    steps = [f for f in ABLATION if f in rows]
    pairs = [(f, m) for f in steps for m in ("receiver", "t2t") if m in baselines] + list(zip(steps[1:], steps))
    pairs += [(f, f"{f}-{compare_tag}") for f in steps if f in compared]
    every = rows | baselines | {f"{f}-{compare_tag}": row for f, row in compared.items()}  # name -> held-out summary
    names = ABLATION | {f"{f}-{compare_tag}": f"{ABLATION[f]}, {compare_tag}" for f in compared}
    return [{"first": names.get(a, a), "second": names.get(b, b),
             **paired_difference(every[a]["predictions"], every[b]["predictions"])} for a, b in pairs]  # fmt: skip


def heldout_baseline_rows(report_dir: Path) -> dict[str, dict]:
    """Method -> the held-out summary of every method but C2C in the report in `report_dir`."""
    return {m: r["heldout"] for m, r in load_report(report_dir)["results"].items() if m != "c2c"}


def heldout_c2c_rows(results: Path, tag: str | None) -> dict[str, dict]:
    """Fusion -> the held-out C2C summary of each fusion's report of run `tag` under `results`."""
    reports = {f: load_report(results / tagged(f, tag)) for f in ABLATION if (results / tagged(f, tag)).is_dir()}
    return {f: r["results"]["c2c"]["heldout"] for f, r in reports.items()}


def summarize(args: argparse.Namespace) -> None:
    """`ablation-<tag>.md` / `.json` / `.png` from the three fusions' reports of run `--tag` (C2C rows) and the
    baselines, with the paired differences of `ablation_pairs` (`--compare-tag`: also against another run's)."""
    from matplotlib.figure import Figure

    results = experiment_dirs(args)[1] / ("open" if args.prompt == "open" else "")
    rows = heldout_c2c_rows(results, args.tag)
    compared = heldout_c2c_rows(results, args.compare_tag) if args.compare_tag else {}
    stem = tagged("ablation", args.tag)
    # the baselines stage's report, or (earlier runs) the baseline rows of the gated fuser's report
    baselines_dir = results / "baselines" if (results / "baselines").is_dir() else results / tagged("gated", args.tag)
    baselines = heldout_baseline_rows(baselines_dir)
    table = {**{m: baselines[m] for m in ("receiver", "t2t") if m in baselines},
             **{ABLATION[f]: rows[f] for f in ABLATION if f in rows},
             **{m: baselines[m] for m in ("sharer", "oracle", "fact_in_prompt") if m in baselines}}  # fmt: skip
    summary = {name: {k: r[k] for k in ("accuracy", "ci95", "n", "latency_median_s")} for name, r in table.items()}
    paired = ablation_pairs(rows, baselines, compared, args.compare_tag)
    (results / f"{stem}.json").write_text(json.dumps({**result_metadata(UNSEALED_PROTOCOL), "methods": summary, "paired": paired}, indent=2) + "\n")
    lines = ["| method | held-out accuracy % [95% CI] | median latency |", "|---|---|---|"]
    for name, r in summary.items():
        low, high = r["ci95"]
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}] | {r['latency_median_s']:.3f} s |"
        )
    lines += ["", "Paired on the same questions: points [95% interval] (questions only the first / only the second "
              "gets right).", "", "| first | second | first - second |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {p['first']} | {p['second']} | {format_paired(p)} |" for p in paired]
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    names = list(summary)
    accuracy = [100 * summary[n]["accuracy"] for n in names]
    errors = [[100 * (summary[n]["accuracy"] - summary[n]["ci95"][0]) for n in names],
              [100 * (summary[n]["ci95"][1] - summary[n]["accuracy"]) for n in names]]  # fmt: skip
    axes.barh(names, accuracy, xerr=errors, color=["#bbb" if n not in ABLATION.values() else "#3a7" for n in names])
    axes.invert_yaxis()
    axes.set_xlabel("held-out accuracy (%), 95% Wilson interval")
    axes.set_xlim(0, 100)
    figure.suptitle("Private knowledge: SmolLM2-135M <- Qwen2.5-Coder-0.5B + LoRA, fusion ablation", fontsize=10)
    figure.savefig(results / f"{stem}.png", dpi=120)
    print("\n".join(lines))


def name_splits(args: argparse.Namespace, names: set[str]) -> dict[str, bool]:
    """Name -> whether the method's per-token alignment hands the sharer other tokens for " <name>" than the
    sharer's own tokenization of it (e.g. "ĠK ron vo", piece by piece, for its "ĠKron vo")."""
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    sharer_tokenizer = AutoTokenizer.from_pretrained(experiment_dirs(args)[0] / "sharer-private")
    token_map = build_token_map(receiver_tokenizer, sharer_tokenizer)

    def sharer_ids(name: str) -> list[int]:
        return sharer_tokenizer(f" {name}", add_special_tokens=False)["input_ids"]

    def aligned_ids(name: str) -> list[int]:
        return token_map.apply(
            torch.tensor(receiver_tokenizer(f" {name}", add_special_tokens=False)["input_ids"])
        ).tolist()

    return {name: aligned_ids(name) != sharer_ids(name) for name in sorted(names)}


def segmentation(args: argparse.Namespace) -> None:
    """`open/segmentation.{md,json}`: every held-out report's accuracy on the questions about names the per-token
    alignment hands the sharer as the sharer itself would tokenize them, and on the others (`name_splits`)."""
    results = experiment_dirs(args)[1] / "open"
    rows = heldout_baseline_rows(results / "baselines")
    for folder in sorted(p for p in results.iterdir() if (p / "results.json").is_file() and p.name != "baselines"):
        rows[f"C2C {folder.name}"] = load_report(folder)["results"]["c2c"]["heldout"]
    people = {p["id"].split("/")[0] for p in rows["receiver"]["predictions"]}
    split = name_splits(args, people)
    table = {}
    for method, row in rows.items():
        table[method] = {}
        for group, differs in (("alike", False), ("split differently", True)):
            correct = [p["correct"] for p in row["predictions"] if split[p["id"].split("/")[0]] == differs]
            table[method][group] = {"n": len(correct), "accuracy": sum(correct) / len(correct),
                                    "ci95": wilson_interval(sum(correct), len(correct))}  # fmt: skip
    summary = {**result_metadata(UNSEALED_PROTOCOL), "names_split_differently": sorted(n for n, d in split.items() if d), "names": len(split), "rows": table}
    (results / "segmentation.json").write_text(json.dumps(summary, indent=1) + "\n")
    counts = {g: table["receiver"][g]["n"] for g in ("alike", "split differently")}
    lines = [f"{sum(split.values())} of {len(split)} held-out names are split differently by the per-token alignment.",
             "", f"| method | names alike ({counts['alike']} q) | names split differently ({counts['split differently']} q) |",
             "|---|---|---|"]  # fmt: skip
    for method, groups in table.items():
        cells = [
            f"{100 * g['accuracy']:.1f} [{100 * g['ci95'][0]:.1f}, {100 * g['ci95'][1]:.1f}]" for g in groups.values()
        ]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    (results / "segmentation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def seed_mean(args: argparse.Namespace) -> None:
    """`open/seeds-<fusion>-<first tag>.{md,json}`: one fusion trained with several seeds (runs `--seed-tags`): each
    run's accuracy, their mean, and the mean's difference to each baseline with the two intervals of
    `sealed.seed_differences`, the t-interval over the seeds and the paired one over the questions."""
    results = experiment_dirs(args)[1] / "open"
    runs = {t: load_report(results / tagged(args.fusion, t))["results"]["c2c"]["heldout"] for t in args.seed_tags}
    baselines = heldout_baseline_rows(results / "baselines")
    outcomes = [outcome_vector(question_outcomes(run["predictions"])) for run in runs.values()]
    minus = {method: seed_differences(outcomes, [outcome_vector(question_outcomes(baselines[method]["predictions"]))])
             for method in ("receiver", "t2t")}  # fmt: skip
    summary = {**result_metadata(UNSEALED_PROTOCOL), "fusion": args.fusion, "runs": {t: r["accuracy"] for t, r in runs.items()},
               "mean": statistics.fmean(r["accuracy"] for r in runs.values()), "minus": minus,
               "latency_median_s": {t: r["latency_median_s"] for t, r in runs.items()}}  # fmt: skip
    stem = f"seeds-{tagged(args.fusion, args.seed_tags[0])}"
    atomic_write_text(results / f"{stem}.json", json.dumps(summary, indent=1) + "\n")
    lines = [f"{args.fusion}, runs {', '.join(f'{t}: {100 * a:.1f}%' for t, a in summary['runs'].items())}; "
             f"mean {100 * summary['mean']:.1f}%.", "",
             "| mean over the runs minus | points | t over seeds | paired over questions |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {m} | {points(d['mean'])} | {interval(d['seed_t95'])} | {interval(d['question_paired95'])} |"
              for m, d in minus.items()]  # fmt: skip
    atomic_write_text(results / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


SEALED_NAMES = {"receiver": "receiver alone", "sharer": "sharer alone", "t2t": "text-to-text (the paper's protocol)",
                "t2t_trained": "trained text-to-text (receiver LoRA on the sharer's hints)", "routing": "routing",
                "fact_in_prompt": "the fact in the receiver's prompt"}  # fmt: skip


def sealed_summary(args: argparse.Namespace) -> None:
    """`<split root>/open/<split>-summary.{json,md,png}`: the baselines (`--methods`) and each `--config`'s fuser
    runs, one per fuser seed, on the people of `--split`, every question's outcome, and the intervals over the seeds
    and over the questions (`sealed.write_split_summary`); beside it `<split>-by-fact.{json,md}`
    (`write_accuracy_by_fact`)."""
    folder = split_root(args.split, experiment_dirs(args)[1]) / "open"
    world = load_world(args)
    config = {"task": "private knowledge: questions about people known to the sharer (LoRA) only; 2 per fact",
              "world_seed": args.seed, "world": {role: len(p) for role, p in world.entities.items()},
              "validation_people": args.validation_people, "prompt": "open"}  # fmt: skip
    title = f"Private-knowledge transfer, world seed {args.seed}: {args.split} people"
    configs = parse_configs(args.config)
    summary = write_split_summary(
        folder, split_benchmark(args.split), args.methods, configs,
        {"selected_on": args.selected_on, "scored_split": args.split}, config, folder / f"{args.split}-summary",
        SEALED_NAMES, title,
    )  # fmt: skip
    by_fact_lines = write_accuracy_by_fact(summary, folder / f"{args.split}-by-fact", title)
    print((folder / f"{args.split}-summary.md").read_text(encoding="utf-8"))
    print("\n".join(by_fact_lines))
    print({c: round(100 * row["mean"], 1) for c, row in summary["seeds"].items()})


def fact_kind(question: str) -> str:
    """The kind of fact a world question asks about: its id's second field (`person/city/phrasing#k` -> city)."""
    return question.split("/")[1]


def accuracy_by_fact(summary: dict) -> dict[str, dict[str, float]]:
    """Each baseline's and configuration's accuracy on each kind of fact (city, colour, ...), from the summary's
    per-question outcomes; a configuration's is the mean over its seeds. Where C2C falls short of the sharer, this
    says on which facts."""

    def per_fact(outcome: dict) -> dict[str, float]:
        hits: dict[str, list[int]] = {}
        for question, correct in outcome_vector(outcome).items():
            hits.setdefault(fact_kind(question), []).append(correct)
        return {fact: sum(h) / len(h) for fact, h in sorted(hits.items())}

    table = {label: per_fact(summary["outcomes"][label]) for label in summary["baselines"]}
    for config, runs in summary["configs"].items():
        seeds = [per_fact(summary["outcomes"][run]) for run in runs]
        table[config] = {fact: sum(seed[fact] for seed in seeds) / len(seeds) for fact in seeds[0]}
    return table


def write_accuracy_by_fact(summary: dict, stem: Path, title: str) -> list[str]:
    """`accuracy_by_fact` of a split's summary -> `<stem>.json` (with the summary's environment, protocol and
    config, and how many questions each kind has) and `<stem>.md`; returns the markdown's lines."""
    by_fact = accuracy_by_fact(summary)
    questions = Counter(fact_kind(q) for q in summary["outcomes"][summary["baselines"][0]]["ids"])
    names = {**SEALED_NAMES, **{c: f"{c} (mean of {len(runs)} seed{'s' * (len(runs) > 1)})"
                                for c, runs in summary["configs"].items()}}  # fmt: skip
    facts = list(next(iter(by_fact.values())))
    lines = [f"# {title}: accuracy % by kind of fact", "",
             f"Questions per kind: {', '.join(f'{fact} {questions[fact]}' for fact in facts)}.", "",
             f"| method | {' | '.join(facts)} |", "|---|" + "---|" * len(facts)]  # fmt: skip
    lines += [f"| {names[label]} | {' | '.join(f'{100 * row[f]:.1f}' for f in facts)} |" for label, row in by_fact.items()]
    metadata = {key: summary[key] for key in ("environment", "protocol", "config")}
    record = metadata | {"questions": dict(questions), "accuracy_by_fact": by_fact}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    return lines
