"""What the sealed real-model results share: the committed log of test scorings, the protocol a report starts with,
and the test summary over fuser seeds, which recomputes from the per-question outcomes it carries.

A test summary (`test_summary`) holds, for every method and every fuser run, each question's outcome
(`question_outcomes`: ids and right/wrong as a string of 1s and 0s), and from them: each one's accuracy with its
Wilson interval and, per configuration trained with several fuser seeds, two intervals of its difference to each
baseline, labelled apart because they answer different questions:
- `seed_t95`: the t-interval over the seeds of (the run's accuracy - the baseline's): how much another fuser seed
  can move the result (the seeds are the sample);
- `question_paired95`: the paired normal interval over the questions of (the seeds' mean outcome - the baseline's
  outcome): how much other questions can move it, the seeds held fixed.
`recompute_summary` rebuilds every number from the outcomes alone, which a test checks on every committed summary.
"""

from __future__ import annotations

import datetime
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from c2c_hf import build_layer_map
from c2c_hf.atomic import atomic_write_text
from c2c_hf.evaluation import (
    load_report,
    normal_mean_interval,
    question_outcomes,
    result_metadata,
    t_interval,
    wilson_interval,
)


def record_test_scoring(log: Path, entry: dict, identity: Sequence[str]) -> dict[str, int]:
    """Append one scoring of a test split (`entry`: the fields named by `identity`, which say what was scored on
    which questions, and the `methods` scored) to the JSON-lines `log`, and return, per method ever scored for that
    identity, how many times it has been, this scoring included. The log is committed, so a best-of-N cannot hide."""

    def key(e: dict) -> str:
        return json.dumps([e.get(field) for field in identity], sort_keys=True)

    earlier = []
    if log.is_file():
        earlier = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as lines:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        lines.write(json.dumps({**entry, "date": stamp}) + "\n")
    counts: dict[str, int] = {}
    for e in [*earlier, entry]:
        if key(e) == key(entry):
            for method in e["methods"]:
                counts[method] = counts.get(method, 0) + 1
    return counts


def with_protocol(report: dict, protocol: dict) -> dict:
    """`report` with `protocol` as its second key, after `environment` (every committed results file starts so)."""
    rest = {key: value for key, value in report.items() if key not in ("environment", "protocol")}
    return {"environment": report.get("environment"), "protocol": protocol, **rest}


def layer_map(strategy: str, receiver_layers: int, sharer_layers: int) -> str | list[int]:
    """`terminal` / `proportional` (the library's), or `top<k>`: the terminal map with every receiver layer taking
    at least the sharer's k-th layer from the top (the knowledge study's `top7`: the dense recall sharer's layers
    17-23, whose values hold a fact at the name, its `sharer-kv-probe.json`)."""
    if not strategy.startswith("top"):
        return strategy
    terminal = build_layer_map("terminal", receiver_layers, sharer_layers)
    return [max(s, sharer_layers - int(strategy.removeprefix("top"))) for s in terminal]


def outcome_vector(outcomes: Mapping[str, Any]) -> dict[str, int]:
    """`question_outcomes` as {question id: 1 right / 0 wrong}."""
    return {i: int(c) for i, c in zip(outcomes["ids"], outcomes["correct"], strict=True)}


def seed_differences(runs: Sequence[Mapping[str, int]], others: Sequence[Mapping[str, int]]) -> dict[str, Any]:
    """The runs (one per fuser seed, {id: 0/1}) minus `others` on the same questions, `others` being one baseline
    (no seeds) or one run per seed of another configuration (paired seed by seed): per seed, their mean, the
    t-interval over the seeds (`seed_t95`) and the paired interval over the questions of the seeds' mean outcome
    minus the others' mean outcome (`question_paired95`)."""
    if len(others) not in (1, len(runs)):
        raise ValueError(f"{len(runs)} fuser runs against {len(others)}: compare with one baseline or one run a seed.")
    others = list(others) * len(runs) if len(others) == 1 else list(others)
    ids = sorted(others[0])
    for run in [*runs, *others]:
        if sorted(run) != ids:
            raise ValueError(
                "A fuser run and its baseline were scored on different questions; score both on one split."
            )
    per_seed = [sum(run[i] - other[i] for i in ids) / len(ids) for run, other in zip(runs, others)]
    mean, seed_t95 = t_interval(per_seed) if len(runs) > 1 else (per_seed[0], None)
    per_question = [statistics.fmean(run[i] for run in runs) - statistics.fmean(o[i] for o in others) for i in ids]
    _, question_paired95 = normal_mean_interval(per_question, ddof=1)
    return {"per_seed": per_seed, "mean": mean, "seed_t95": list(seed_t95) if seed_t95 else None,
            "question_paired95": list(question_paired95), "n": len(ids)}  # fmt: skip


def recompute_summary(
    outcomes: Mapping[str, Mapping[str, Any]],
    configs: Mapping[str, Sequence[str]],
    baselines: Iterable[str],
    gap: Sequence[str] | None = None,
    contrasts: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """From per-question `outcomes` (label -> `question_outcomes`): every label's accuracy with its Wilson interval,
    and per configuration (name -> the labels of its fuser seeds) its seeds' accuracies, their mean with a t-interval
    over the seeds, and `seed_differences` to every baseline label. With `gap` = (low, high) baseline labels, also
    the share of the gap from low to high each seed closes, (run - low) / (high - low), with its t-interval over
    the seeds (`gap_closed`). Each of `contrasts` (configuration A, configuration B) gives A minus B, seed by seed
    (`contrasts["A - B"]`): a fuser minus its control, say."""
    vectors = {label: outcome_vector(o) for label, o in outcomes.items()}
    accuracy = {}
    for label, vector in vectors.items():
        correct = sum(vector.values())
        accuracy[label] = {"accuracy": correct / len(vector), "ci95": list(wilson_interval(correct, len(vector))),
                           "n": len(vector)}  # fmt: skip
    seeds = {}
    for config, labels in configs.items():
        runs = [vectors[label] for label in labels]
        accuracies = [accuracy[label]["accuracy"] for label in labels]
        mean, interval = t_interval(accuracies) if len(labels) > 1 else (accuracies[0], None)
        seeds[config] = {
            "runs": list(labels), "mean": mean, "accuracy_seed_t95": list(interval) if interval else None,
            "minus": {baseline: seed_differences(runs, [vectors[baseline]]) for baseline in baselines},
        }  # fmt: skip
        if gap is not None:
            low, high = (accuracy[label]["accuracy"] for label in gap)
            if high <= low:
                raise ValueError(f"No gap to close: {gap[1]} ({high:.3f}) is not above {gap[0]} ({low:.3f}).")
            shares = [(accuracy[label]["accuracy"] - low) / (high - low) for label in labels]
            share, share_t95 = t_interval(shares) if len(shares) > 1 else (shares[0], None)
            seeds[config]["gap_closed"] = {"from": gap[0], "to": gap[1], "per_seed": shares, "mean": share,
                                           "seed_t95": list(share_t95) if share_t95 else None}  # fmt: skip
    between = {f"{a} - {b}": seed_differences([vectors[label] for label in configs[a]],
                                              [vectors[label] for label in configs[b]]) for a, b in contrasts}  # fmt: skip
    return {"accuracy": accuracy, "seeds": seeds, "contrasts": between}


def test_summary(
    outcomes: Mapping[str, Mapping[str, Any]],
    configs: Mapping[str, Sequence[str]],
    baselines: Sequence[str],
    latency: Mapping[str, float],
    metadata: Mapping[str, Any],
    gap: Sequence[str] | None = None,
    contrasts: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """The committed summary of one split's scoring: `metadata` (environment, protocol, config: what was scored how),
    each label's per-question `outcomes` (`question_outcomes`), its median `latency_median_s`, and the numbers
    `recompute_summary` derives from the outcomes."""
    return {**metadata, "baselines": list(baselines), "configs": {c: list(labels) for c, labels in configs.items()},
            "gap": list(gap) if gap else None, "contrast_pairs": [list(pair) for pair in contrasts],
            **recompute_summary(outcomes, configs, baselines, gap, contrasts),
            "latency_median_s": dict(latency),
            "outcomes": outcomes}  # fmt: skip


def points(value: float) -> str:
    return f"{100 * value:+.1f}"


def interval(bounds: Sequence[float] | None, signed: bool = True) -> str:
    """`[low, high]` in points (signed: a difference) or percent; "(one seed)" where a seed interval has one value."""
    if bounds is None:
        return "(one seed)"
    low, high = bounds
    return f"[{points(low)}, {points(high)}]" if signed else f"[{100 * low:.1f}, {100 * high:.1f}]"


def summary_markdown(summary: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    """The tables of a split's summary: every label's accuracy and latency; each configuration's seeds against each
    baseline with both intervals; the contrasts between configurations, if any (`names`: label -> what the row
    says)."""
    lines = ["| method | accuracy % [95% Wilson] | median latency |", "|---|---|---|"]
    for label, row in summary["accuracy"].items():
        latency = summary["latency_median_s"].get(label)
        seconds = f"{latency:.3f} s" if latency is not None else ""
        lines.append(
            f"| {names.get(label, label)} | {100 * row['accuracy']:.1f} {interval(row['ci95'], False)} | {seconds} |"
        )
    lines += ["", "| configuration (seeds) | mean % [t over seeds] | minus | points | t over seeds | paired over questions |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for config, row in summary["seeds"].items():
        runs = " / ".join(f"{100 * summary['accuracy'][label]['accuracy']:.1f}" for label in row["runs"])
        head = f"{names.get(config, config)} ({runs})"
        mean = f"{100 * row['mean']:.1f} {interval(row['accuracy_seed_t95'], False)}"
        for baseline, d in row["minus"].items():
            lines.append(f"| {head} | {mean} | {names.get(baseline, baseline)} | {points(d['mean'])} | "
                         f"{interval(d['seed_t95'])} | {interval(d['question_paired95'])} |")  # fmt: skip
            head = mean = ""
    if summary.get("contrasts"):
        lines += ["", "| contrast, seed by seed | points | t over seeds | paired over questions |", "|---|---|---|---|"]
        for pair, d in summary["contrasts"].items():
            a, b = pair.split(" - ")
            lines.append(f"| {names.get(a, a)} - {names.get(b, b)} | {points(d['mean'])} | {interval(d['seed_t95'])} | "
                         f"{interval(d['question_paired95'])} |")  # fmt: skip
    return lines


def plot_summary(summary: Mapping[str, Any], names: Mapping[str, str], path: Path, title: str) -> None:
    """Every baseline's accuracy with its Wilson interval, and each configuration's fuser seeds (dots) with their
    mean and its t-interval over the seeds, one row each, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(names.get(b, b), summary["accuracy"][b]["accuracy"], summary["accuracy"][b]["ci95"], [])
            for b in summary["baselines"]]  # fmt: skip
    rows += [(names.get(c, c), row["mean"], row["accuracy_seed_t95"],
              [summary["accuracy"][label]["accuracy"] for label in row["runs"]]) for c, row in summary["seeds"].items()]  # fmt: skip
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for y, (_, centre, bounds, seeds) in enumerate(rows):
        low, high = bounds or (centre, centre)  # one seed: no interval over seeds
        colour = "tab:orange" if seeds else "tab:blue"
        axes.barh(y, 100 * centre, color=colour, alpha=0.35)
        axes.errorbar(100 * centre, y, xerr=[[100 * (centre - low)], [100 * (high - centre)]], color=colour, capsize=3)
        axes.scatter([100 * s for s in seeds], [y] * len(seeds), color="black", s=12, zorder=3)
    axes.set_yticks(range(len(rows)), [row[0] for row in rows])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("accuracy % (blue: Wilson 95%; orange: seeds' mean, t 95% over seeds; dots: seeds)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_configs(specs: Sequence[str]) -> dict[str, list[str]]:
    """`NAME=RUN,RUN,...` (one run per fuser seed) -> {NAME: [RUN, ...]}."""
    configs = {}
    for spec in specs:
        name, _, runs = spec.partition("=")
        if not name or not runs:
            raise ValueError(f"--config {spec!r}: write NAME=RUN,RUN,... (the report folders of one fuser per seed).")
        configs[name] = runs.split(",")
    return configs


def write_split_summary(
    folder: Path,
    benchmark: str,
    baselines: Sequence[str],
    configs: Mapping[str, Sequence[str]],
    protocol: dict[str, Any],
    config: Mapping[str, Any],
    stem: Path,
    names: Mapping[str, str],
    title: str,
    gap: Sequence[str] | None = None,
    contrasts: Sequence[Sequence[str]] = (),
    baseline_reports: Sequence[str] = ("baselines",),
) -> dict[str, Any]:
    """The `test_summary` of one split's reports under `folder` -> `<stem>.json`, `.md` and `.png`. Each baseline
    is read from the first of the `baseline_reports` folders that scored it, each fuser run from its own folder (as
    `c2c`), on `benchmark`. A label whose report is not on this machine (per-question reports of a run that landed
    on another machine stay out of git) is read from the summary already at `<stem>.json`, which holds every
    question's outcome; the new summary names, per such label, the commit of the summary it was read from
    (`carried`; the test log has the commit of each scoring). On the test split the protocol's `test_evaluations`
    is the most any report (or the earlier summary) was scored."""
    runs = [run for labels in configs.values() for run in labels]
    reports = {name: load_report(folder / name) for name in [*baseline_reports, *runs]
               if (folder / name / "results.json").is_file()}  # fmt: skip
    earlier_path = stem.with_suffix(".json")
    earlier = json.loads(earlier_path.read_text(encoding="utf-8")) if earlier_path.is_file() else {}
    outcomes, latency, sources, carried = {}, {}, set(), {}
    for label in [*baselines, *runs]:
        if label in baselines:
            source = next((n for n in baseline_reports if label in reports.get(n, {}).get("results", {})), None)
            method = label
        else:
            source, method = (label if label in reports else None), "c2c"
        if source is not None:
            row = reports[source]["results"][method][benchmark]
            outcomes[label], latency[label] = question_outcomes(row["predictions"]), row["latency_median_s"]
            sources.add(source)
        elif label in earlier.get("outcomes", {}):
            outcomes[label], latency[label] = earlier["outcomes"][label], earlier["latency_median_s"][label]
            carried[label] = earlier.get("carried", {}).get(label, earlier["environment"]["git_commit"])
        else:
            raise FileNotFoundError(
                f"{label!r}: no report under {folder} scored it and {earlier_path} does not hold it; score it first."
            )
    if protocol.get("scored_split") == "test":
        counts = [reports[name]["protocol"]["test_evaluations"] for name in sources]
        counts += [earlier["protocol"]["test_evaluations"]] if carried else []
        protocol = {**protocol, "test_evaluations": max(counts)}
    summary = test_summary(
        outcomes, configs, baselines, latency, {**result_metadata(protocol), "config": config}, gap, contrasts
    ) | ({"carried": carried} if carried else {})
    atomic_write_text(stem.with_suffix(".json"), json.dumps(summary, indent=1) + "\n")
    atomic_write_text(stem.with_suffix(".md"), "\n".join([f"# {title}", "", *summary_markdown(summary, names), ""]))
    plot_summary(summary, names, stem.with_suffix(".png"), title)
    return summary


def choose_on_validation(candidates: Mapping[str, Path], benchmark: str, out: Path) -> str:
    """The candidate (name -> its validation report folder, scoring `c2c` on `benchmark`) with the highest
    validation accuracy, the first listed on a tie; the choice and every candidate's accuracy go to `out` (JSON). A
    choice once written is frozen: called again, it returns the written choice, and raises if the reports now give
    another one (a candidate retrained or rescored after the choice)."""
    accuracies = {
        name: load_report(folder)["results"]["c2c"][benchmark]["accuracy"] for name, folder in candidates.items()
    }
    chosen = max(accuracies, key=lambda name: (accuracies[name], -list(accuracies).index(name)))
    if out.is_file():
        frozen = json.loads(out.read_text(encoding="utf-8"))
        if frozen["chosen"] != chosen or frozen["validation_accuracy"] != accuracies:
            raise RuntimeError(
                f"{out} chose {frozen['chosen']!r} from {frozen['validation_accuracy']}, but the validation reports "
                f"now give {accuracies}: a frozen choice cannot change; restore the candidates' reports."
            )
        return frozen["chosen"]
    record = {**result_metadata({"selected_on": "validation"}), "benchmark": benchmark,
              "rule": "highest validation accuracy, the first listed on a tie",
              "validation_accuracy": accuracies, "chosen": chosen}  # fmt: skip
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    return chosen


def train_fuser_resumably(
    model, receiver_tokenizer, features, out: Path, *, steps: int, batch_size: int, lr: float, save_steps: int,
    seed: int, save_total_limit: int | None,
) -> None:
    """Train `model`'s fuser on `features` with the stock Trainer (linear schedule, a tenth warm-up, the sharer run
    once per prompt by `SharerCacheMemo`), resuming from the last checkpoint in `out/trainer`; then save the model,
    the receiver tokenizer and `train-log.json` to `out`."""
    import time

    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from c2c_hf import C2CDataCollator, SharerCacheMemo, make_trainer

    training = TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        weight_decay=0.01, warmup_steps=steps // 10, lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=10,
        save_steps=save_steps, save_total_limit=save_total_limit, report_to="none", use_cpu=True, seed=seed,
        disable_tqdm=True,
    )  # fmt: skip
    collator = C2CDataCollator.for_tokenizer(receiver_tokenizer, SharerCacheMemo(model))  # the sharer once per prompt
    trainer = make_trainer(model, training, features, collator)
    began = time.perf_counter()
    last = get_last_checkpoint(training.output_dir) if Path(training.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=last)  # None: from scratch
    model.save_pretrained(out)
    receiver_tokenizer.save_pretrained(out)
    log = {"log": trainer.state.log_history, "seconds": time.perf_counter() - began}
    atomic_write_text(out / "train-log.json", json.dumps(log))


def main(argv: Sequence[str] | None = None) -> None:
    """`python sealed.py choose --benchmark B --out CHOICE.json NAME=REPORT_DIR ...`: print the chosen NAME."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("choose",))
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the choice's JSON (frozen once written)")
    parser.add_argument("candidates", nargs="+", help="NAME=REPORT_DIR, in order of preference on a tie")
    args = parser.parse_args(argv)
    candidates = {}
    for spec in args.candidates:
        name, _, folder = spec.partition("=")
        if not name or not folder:
            raise SystemExit(f"candidate {spec!r}: write NAME=REPORT_DIR (a validation report's folder).")
        candidates[name] = Path(folder)
    print(choose_on_validation(candidates, args.benchmark, args.out))


if __name__ == "__main__":
    main()
