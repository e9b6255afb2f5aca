"""How far the sharer's own ability to read Python beats the receiver's: both bases alone on the validation split of
the printed-output task (`snippets.py`), per difficulty (issue 35, part 2: the task must show a gap of >= 20 points
before a fuser is trained on it).

Each base answers through the project harness (`Direct` with a `Scoring`) in two ways: `likelihood` (the four
choices' texts scored as the reply to the bare question, per character: what a 135M model can do, it answers
lettered questions with one fixed letter) and `generate` (greedy open generation, right when the first line of the
output's first code block, or of the output without one, is exactly the printed output). Reported per difficulty
and mode: each model's accuracy with its Wilson interval and the sharer-minus-receiver paired difference with its
interval, plus every answer.

Only validation questions are built here; the test split is never generated or scored. Each (difficulty, mode,
model) run is saved to `--runs` as it finishes, so an interrupted command resumes where it stopped.

    python experiments/real_cpu/capability_gap.py            # writes docs/results/real-cpu/capability/validation-gap.*
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from snippets import DIFFICULTIES, snippet_items
from transformers import AutoModelForCausalLM, AutoTokenizer

from c2c_hf.atomic import atomic_write_text
from c2c_hf.data import MCItem
from c2c_hf.evaluation import (
    LM,
    Direct,
    Prediction,
    Scoring,
    paired_difference,
    question_outcomes,
    result_metadata,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[2]
RECEIVER, SHARER = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
MODES = ("likelihood", "generate")
PROTOCOL = {"selected_on": "validation", "test_evaluations": 0, "kind": "both bases alone on validation: no test"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "c2c-real-models")
    parser.add_argument("--receiver", default=RECEIVER, help="folder name under --models")
    parser.add_argument("--sharer", default=SHARER, help="folder name under --models")
    parser.add_argument("--difficulties", nargs="+", choices=sorted(DIFFICULTIES), default=list(DIFFICULTIES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--size", type=int, default=100, help="validation questions per difficulty")
    parser.add_argument("--seed", type=int, default=0, help="the task's seed (snippet_items)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="generate mode's limit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "real-cpu" / "capability")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "real-cpu" / "capability")
    return parser.parse_args(argv)


def first_line(text: str) -> str:
    """A generated answer as a printed output: the first line of its first code block (after the fence's language
    tag), or without a block its first non-empty line, backticks stripped."""
    if "```" in text:
        tag, *lines = text.split("```")[1].split("\n")
        lines = lines if lines or not tag.strip() else [tag]
    else:
        lines = text.splitlines()
    return next((line.strip().strip("`").strip() for line in lines if line.strip().strip("`")), "")


def exact_match(predictions: list[Prediction]) -> list[Prediction]:
    """Generated answers read by exact match: the choice the first line equals (right only for the printed output),
    else none."""
    for prediction in predictions:
        answer = first_line(prediction.text)
        prediction.predicted = prediction.item.choices.index(answer) if answer in prediction.item.choices else None
    return predictions


def answer_all(method: Direct, items: list[MCItem], batch_size: int, mode: str) -> list[dict[str, Any]]:
    """`method`'s answers to `items` in batches, as report dicts (generated answers read by `exact_match`)."""
    answers = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            predictions = method.answer(items[start : start + batch_size])
            answers += exact_match(predictions) if mode == "generate" else predictions
    return [{**prediction.to_dict(), "answer": prediction.item.choices[prediction.item.gold]} for prediction in answers]


def load_lm(folder: Path) -> LM:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return LM(model, AutoTokenizer.from_pretrained(folder))


def summary(answers: list[dict[str, Any]]) -> dict[str, Any]:
    correct = sum(answer["correct"] for answer in answers)
    return {
        "accuracy": correct / len(answers),
        "ci95": list(wilson_interval(correct, len(answers))),
        "correct": correct,
    }


def build_report(
    runs: dict[tuple[str, str], dict[str, list[dict[str, Any]]]], config: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report: per difficulty and mode, n, each model's accuracy, the sharer-minus-receiver paired
    difference, and every question's outcome per model (`outcomes`) so that the intervals can be recomputed; the
    answers' texts stay in the run cache (`--runs`)."""
    results: dict[str, dict[str, Any]] = {}
    for (difficulty, mode), answers in runs.items():
        receiver, sharer = answers["receiver"], answers["sharer"]
        results.setdefault(difficulty, {})[mode] = {
            "n": len(receiver),
            "receiver": summary(receiver),
            "sharer": summary(sharer),
            "sharer_minus_receiver": paired_difference(sharer, receiver),
            "outcomes": {"receiver": question_outcomes(receiver), "sharer": question_outcomes(sharer)},
        }
    return {**result_metadata(PROTOCOL), "config": config, "results": results}


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        "# Printed-output task: sharer vs receiver alone, validation split",
        "",
        f"Receiver `{config['receiver']}`, sharer `{config['sharer']}` (fp32, {config['threads']} thread(s)); "
        f"{config['size']} validation questions per difficulty, task seed {config['seed']}. "
        "`likelihood`: the four choices scored as the reply to the bare question (per character); `generate`: "
        "greedy open answer, exact match of its first line (in its first code block, if any) with the printed "
        "output. Intervals 95%: Wilson for an accuracy, paired Wald for the difference. Protocol: validation only, "
        "the test split never built.",
        "",
        "| difficulty | mode | n | receiver | sharer | sharer - receiver |",
        "|---|---|---|---|---|---|",
    ]
    for difficulty, by_mode in report["results"].items():
        for mode, row in by_mode.items():
            cells = [
                f"{100 * row[m]['accuracy']:.1f}% [{100 * row[m]['ci95'][0]:.1f}, {100 * row[m]['ci95'][1]:.1f}]"
                for m in ("receiver", "sharer")
            ]
            gap = row["sharer_minus_receiver"]
            low, high = gap["ci95"]
            difference = f"{100 * gap['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
            lines.append(f"| {difficulty} | {mode} | {row['n']} | {cells[0]} | {cells[1]} | {difference} |")
    settings = ", ".join(f"`{name}` {vars(d)}" for name, d in DIFFICULTIES.items() if name in report["results"])
    return "\n".join([*lines, "", f"Difficulties: {settings}.", ""])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = {
        "receiver": args.receiver, "sharer": args.sharer, "difficulties": args.difficulties, "modes": args.modes,
        "size": args.size, "seed": args.seed, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "threads": args.threads, "dtype": "float32", "split": "validation",
    }  # fmt: skip
    lms: dict[str, LM] = {}
    runs: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for difficulty in args.difficulties:
        items = snippet_items(args.seed, "validation", args.size, difficulty)
        for mode in args.modes:
            scoring = Scoring(mode, max_new_tokens=args.max_new_tokens, prompt="open")
            for role, name in (("receiver", args.receiver), ("sharer", args.sharer)):
                path = args.runs / f"seed-{args.seed}-n{args.size}" / f"{difficulty}-{mode}-{role}-{name}.json"
                if not path.exists():
                    if name not in lms:
                        lms[name] = load_lm(args.models / name)
                    started = time.perf_counter()
                    answers = answer_all(Direct(role, lms[name], scoring), items, args.batch_size, mode)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(path, json.dumps(answers, indent=1))
                    right = sum(a["correct"] for a in answers)
                    print(f"{difficulty} {mode} {role}: {right}/{len(answers)} ({time.perf_counter() - started:.0f} s)")
                runs.setdefault((difficulty, mode), {})[role] = json.loads(path.read_text(encoding="utf-8"))
            report = build_report(runs, config)
            args.output.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.output / "validation-gap.json", json.dumps(report) + "\n")
            atomic_write_text(args.output / "validation-gap.md", markdown(report))
    print((args.output / "validation-gap.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
