"""C2C on a capability the sharer has from pretraining: what a short Python program prints (`snippets.py`).

Qwen2.5-Coder-0.5B-Instruct (the sharer) reads code; SmolLM2-135M-Instruct (the receiver) barely does
(`capability/validation-gap.md`: on `basic` programs the sharer is 22 points ahead when both pick the likeliest of
four printed outputs). A fuser trained on the train split's programs, answered with their printed output
(`snippet_rows.py`), should pass some of that on. Every choice is made on the validation split; the test split is
scored once per reported configuration, each scoring appended to the committed `<results>/test-scorings.jsonl`.
The control is a fuser of the same kind trained the same way with the receiver as its own sharer: it learns the
answers' format and the task's priors but can take nothing from the sharer.

    python experiments/real_cpu/capability.py fuser --fusion projection --layer-map top7 --fuser-seed 0
    python experiments/real_cpu/capability.py fuser --control ...        # the receiver as its own sharer
    python experiments/real_cpu/capability.py baselines --split validation  # receiver, sharer, t2t, routing
    python experiments/real_cpu/capability.py reader --fuser-seed 0          # trained text-to-text (receiver LoRA)
    python experiments/real_cpu/capability.py eval --split validation --run <fuser or reader run name>
    python experiments/real_cpu/capability.py summary --split test --config NAME=<run>,<run>,<run> control-NAME=...

Reports: `<results>/<split>/<mode>/<run or baselines>/results.{json,md}` (per question, not committed), and the
summary `<results>/<split>-<mode>.{json,md,png}` (committed: every method's and run's per-question outcomes and the
intervals recomputed from them, `sealed.test_summary`). Fusers train and resume in `<runs>/<run name>/`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from c2c_hf import C2CForCausalLM, build_features
from c2c_hf.atomic import atomic_folder, atomic_write_text
from c2c_hf.demo import TrainedTextToText, train_hint_reader
from c2c_hf.evaluation import (
    LM,
    Direct,
    Method,
    Routing,
    Scoring,
    TextToText,
    build_report,
    environment,
    save_report,
    timed_predictions,
)

sys.path.insert(0, str(Path(__file__).parent))  # this folder's scripts
import snippets
from capability_gap import exact_match, load_lm
from sealed import (
    layer_map,
    parse_configs,
    record_test_scoring,
    train_fuser_resumably,
    with_protocol,
    write_split_summary,
)
from snippet_rows import training_rows

ROOT = Path(__file__).resolve().parents[2]
RECEIVER, SHARER = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
MODES = ("likelihood", "generate")
BASELINES = ("receiver", "sharer", "t2t", "routing")
READER_RANK = 8  # the trained text-to-text reader's LoRA rank, as in the knowledge study
ROUTING_FIT = 64  # training-split programs the routing classifier is fitted on
TASK_IDENTITY = ("task", "config")  # a test scoring's identity: these programs, this configuration


def run_name(args: argparse.Namespace) -> str:
    """`projection-h64-top7-span-seed0`, `control-gated-h64-top7-span-gate4-seed1`: a fuser's folder and report."""
    parts = ["control"] if args.control else []
    parts += [args.fusion, f"h{args.fuser_hidden_size}", args.layer_map, args.token_alignment]
    parts += [f"gate{args.gate_init_logit:g}"] if args.fusion == "gated" else []
    return "-".join([*parts, f"seed{args.fuser_seed}"])


def reader_run(args: argparse.Namespace) -> str:
    """`t2t-reader-r8-seed0`: the trained text-to-text reader's folder and report."""
    return f"t2t-reader-r{READER_RANK}-seed{args.fuser_seed}"


def split_items(args: argparse.Namespace) -> list:
    size = args.validation_size if args.split == "validation" else args.test_size
    return snippets.snippet_items(args.task_seed, args.split, size, args.difficulty)


def task(args: argparse.Namespace) -> dict[str, Any]:
    """What a scored split holds: the task, its difficulty and seed, the split and its size."""
    return {"benchmark": snippets.BENCHMARK, "difficulty": args.difficulty, "task_seed": args.task_seed,
            "split": args.split, "size": len(split_items(args))}  # fmt: skip


# --------------------------------------------------------------------------- training


def train_fuser(args: argparse.Namespace) -> None:
    """A fuser on the train split's programs answered with their printed output; checkpoints every `--save-steps`
    and resumes from the last one when run again."""
    sharer_name = RECEIVER if args.control else SHARER
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    torch.manual_seed(args.fuser_seed)
    receiver = AutoModelForCausalLM.from_pretrained(args.models / RECEIVER, dtype=torch.float32)
    sharer = AutoModelForCausalLM.from_pretrained(args.models / sharer_name, dtype=torch.float32)
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, receiver_tokenizer, AutoTokenizer.from_pretrained(args.models / sharer_name),
        token_alignment=args.token_alignment, fuser_hidden_size=args.fuser_hidden_size, fuser_num_blocks=3,
        fuser_dropout=args.fuser_dropout, fusion=args.fusion, gate_init_logit=args.gate_init_logit,
        layer_map=layer_map(args.layer_map, receiver.config.num_hidden_layers, sharer.config.num_hidden_layers),
    )  # fmt: skip
    rows = datasets.Dataset.from_list(training_rows(args.task_seed, args.train_size, args.difficulty))
    features, stats = build_features(rows, receiver_tokenizer, max_length=320)
    print(f"fuser data: {stats}")
    out = args.runs / run_name(args)
    train_fuser_resumably(
        model, receiver_tokenizer, features, out, steps=args.fuser_steps, batch_size=args.fuser_batch_size,
        lr=args.fuser_lr, save_steps=args.save_steps, seed=args.fuser_seed, save_total_limit=2,
    )  # fmt: skip
    print(f"fuser -> {out}")


def train_reader(args: argparse.Namespace) -> None:
    """The trained text-to-text baseline (`c2c_hf.demo.train_hint_reader`): a rank-8 LoRA of the receiver, merged,
    trained to answer the train split's programs from the sharer's written hints (one per program), with the fuser's
    data (the same programs and replies), steps, batch size and learning rate -> `<runs>/t2t-reader-r8-seed<seed>`,
    saved atomically, so an interrupted run leaves no reader."""
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    receiver = AutoModelForCausalLM.from_pretrained(args.models / RECEIVER, dtype=torch.float32)
    sharer = load_lm(args.models / SHARER)
    items = snippets.snippet_items(args.task_seed, "train", args.train_size, args.difficulty)
    with tempfile.TemporaryDirectory() as workdir:
        reader = train_hint_reader(
            receiver, receiver_tokenizer, sharer, items, steps=args.fuser_steps, batch_size=args.fuser_batch_size,
            lr=args.fuser_lr, rank=READER_RANK, hint_tokens=args.hint_tokens, seed=args.fuser_seed, workdir=workdir,
            prompt="open", hint_batch_size=32, hint_key=lambda item: item.id,
        )  # fmt: skip
    out = args.runs / reader_run(args)
    with atomic_folder(out) as folder:
        reader.save_pretrained(folder)
        receiver_tokenizer.save_pretrained(folder)
    print(f"trained text-to-text reader -> {out}")


# --------------------------------------------------------------------------- evaluation


def split_protocol(args: argparse.Namespace, config: str, methods: list[str]) -> dict[str, Any]:
    """Where `config` was chosen and, on the test split, how often each of `methods` has been scored on it (this
    scoring included, from the committed log)."""
    protocol: dict[str, Any] = {"scored_split": args.split, "selected_on": args.selected_on}
    if args.split == "test":
        entry = {"task": task(args), "config": config, "methods": methods, "selected_on": args.selected_on,
                 "git_commit": environment().get("git_commit")}  # fmt: skip
        counts = record_test_scoring(args.results.resolve() / "test-scorings.jsonl", entry, TASK_IDENTITY)
        per_method = {method: counts[method] for method in methods}
        protocol |= {"test_evaluations": max(per_method.values()), "test_evaluations_per_method": per_method}
    return protocol


def score(args: argparse.Namespace, methods: list[Method], mode: str, name: str, settings: dict[str, Any]) -> None:
    """`methods` on the split's items at batch 1 (generated answers read by exact match of the printed output) ->
    `<results>/<split>/<mode>/<name>/`, with its protocol."""
    items = split_items(args)
    results = {}
    for method in methods:
        predictions = timed_predictions(method, items, batch_size=1)
        results[method.name] = {snippets.BENCHMARK: exact_match(predictions) if mode == "generate" else predictions}
        right = sum(p.correct for p in predictions)
        print(f"{args.split} {mode} {name} {method.name}: {right}/{len(items)}")
    config = {"task": task(args), "mode": mode, "prompt": "open", "max_new_tokens": args.max_new_tokens,
              "hint_tokens": args.hint_tokens, "dtype": "float32", "threads": torch.get_num_threads(),
              "batch_size": 1} | settings  # fmt: skip
    report = build_report(results, config)
    protocol = split_protocol(args, f"{mode}/{name}", list(results))
    save_report(with_protocol(report, protocol), args.results / args.split / mode / name)


def run_baselines(args: argparse.Namespace) -> None:
    receiver, sharer = load_lm(args.models / RECEIVER), load_lm(args.models / SHARER)
    for mode in args.modes:
        scoring = Scoring(mode, args.max_new_tokens, "open")
        methods: list[Method] = [Direct(name, lm, scoring) for name, lm in (("receiver", receiver), ("sharer", sharer))
                                 if name in args.methods]  # fmt: skip
        if "t2t" in args.methods:
            methods.append(TextToText(receiver, sharer, scoring, args.hint_tokens))
        settings: dict[str, Any] = {}
        if "routing" in args.methods and mode == "likelihood":  # it routes by both models' choice likelihoods
            routing = Routing(receiver, sharer, scoring)
            routing.fit(snippets.snippet_items(args.task_seed, "train", ROUTING_FIT, args.difficulty))
            methods.append(routing)
            settings["routing"] = f"fitted on {ROUTING_FIT} training-split programs"
        score(args, methods, mode, "baselines", settings)


def run_eval(args: argparse.Namespace) -> None:
    """A run under `--runs` scored on `--split`: a fuser as `c2c`, a trained reader (a plain receiver, `reader`) as
    `t2t_trained`, the sharer writing its hint as in text-to-text."""
    if AutoConfig.from_pretrained(args.runs / args.run).model_type != "c2c":
        reader, sharer = load_lm(args.runs / args.run), load_lm(args.models / SHARER)
        for mode in args.modes:
            scoring = Scoring(mode, args.max_new_tokens, "open")
            score(args, [TrainedTextToText(reader, sharer, scoring, args.hint_tokens)], mode, args.run,
                  {"reader_run": args.run, "lora_rank": READER_RANK})  # fmt: skip
        return
    model = C2CForCausalLM.from_pretrained(args.runs / args.run, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)
    settings = {"fuser_run": args.run, "fuser_params": sum(p.numel() for p in model.fuser.parameters()),
                "sharer": Path(model.config.sharer_name_or_path).name}  # fmt: skip
    for mode in args.modes:
        score(args, [Direct("c2c", LM(model, tokenizer), Scoring(mode, args.max_new_tokens, "open"))], mode, args.run,
              settings)  # fmt: skip


# --------------------------------------------------------------------------- summary


def run_summary(args: argparse.Namespace) -> None:
    """`<results>/<split>-<mode>.{json,md,png}`: the baselines (with `--reader`, that run's trained text-to-text)
    and every `--config`'s fuser runs on one split, each question's outcome, and the intervals over seeds and
    questions, with the share of the receiver-to-sharer gap each configuration closes (`sealed.write_split_summary`;
    a report scored on another machine is carried from the summary already written)."""
    mode = args.modes[0]
    baselines = [m for m in args.methods if m != "routing" or mode == "likelihood"]  # routing ranks likelihoods
    reports = ["baselines"]
    if args.reader:
        baselines.append("t2t_trained")
        reports.append(args.reader)
    title = f"Printed output of `{args.difficulty}` programs: {args.split} split, {mode} mode"
    stem = args.results / f"{args.split}-{mode}"
    configs = parse_configs(args.config)
    controls = [(name, f"control-{name}") for name in configs if f"control-{name}" in configs]  # a fuser - its control
    summary = write_split_summary(
        args.results / args.split / mode, snippets.BENCHMARK, baselines, configs,
        {"selected_on": args.selected_on, "scored_split": args.split}, {"task": task(args), "mode": mode}, stem, {},
        title, gap=("receiver", "sharer"), contrasts=controls, baseline_reports=reports,
    )  # fmt: skip
    lines = []
    for config, row in summary["seeds"].items():
        closed, bounds = row["gap_closed"], row["gap_closed"]["seed_t95"]
        spread = f"t-interval over seeds [{100 * bounds[0]:.0f}, {100 * bounds[1]:.0f}]%" if bounds else "one seed"
        lines.append(f"- {config}: closes {100 * closed['mean']:.0f}% of the receiver-to-sharer gap ({spread}).")
    atomic_write_text(
        stem.with_suffix(".md"), stem.with_suffix(".md").read_text(encoding="utf-8") + "\n".join(lines) + "\n"
    )
    print(stem.with_suffix(".md").read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("fuser", "reader", "baselines", "eval", "summary"))
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "c2c-real-models")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "real-cpu" / "capability")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "real-cpu" / "capability")
    parser.add_argument("--difficulty", choices=sorted(snippets.DIFFICULTIES), default="basic")
    parser.add_argument("--task-seed", type=int, default=0, help="snippet_items' seed (every split)")
    parser.add_argument("--train-size", type=int, default=4000, help="training programs")
    parser.add_argument("--validation-size", type=int, default=200)
    parser.add_argument("--test-size", type=int, default=400)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--selected-on", default="validation")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["likelihood"])
    parser.add_argument("--methods", nargs="+", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--hint-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--control", action="store_true", help="the receiver as its own sharer")
    parser.add_argument("--fusion", default="projection", choices=("gated", "weighted", "projection"))
    parser.add_argument("--layer-map", default="top7", help="terminal, proportional or top<k> (sealed.layer_map)")
    parser.add_argument("--token-alignment", default="span", choices=("longest", "first", "span"))
    parser.add_argument("--fuser-hidden-size", type=int, default=64)
    parser.add_argument("--fuser-dropout", type=float, default=0.3)
    parser.add_argument("--gate-init-logit", type=float, default=4.0)
    parser.add_argument("--fuser-steps", type=int, default=600)
    parser.add_argument("--fuser-batch-size", type=int, default=8)
    parser.add_argument("--fuser-lr", type=float, default=1e-3)
    parser.add_argument("--fuser-seed", type=int, default=0)
    parser.add_argument("--save-steps", type=int, default=100)
    parser.add_argument("--run", help="eval: the fuser run's folder name under --runs")
    parser.add_argument("--config", nargs="*", default=[], help="summary: NAME=RUN,RUN,... (one run per fuser seed)")
    parser.add_argument("--reader", help="summary: the trained text-to-text reader's run, a baseline (t2t_trained)")
    args = parser.parse_args(argv)
    if args.stage == "eval" and not args.run:
        parser.error("eval needs --run, the fuser's folder name under --runs")
    if args.stage == "summary" and len(args.modes) != 1:
        parser.error(f"summary takes one mode, got --modes {' '.join(args.modes)}")
    torch.set_num_threads(args.threads)
    stages = {"fuser": train_fuser, "reader": train_reader, "baselines": run_baselines, "eval": run_eval,
              "summary": run_summary}  # fmt: skip
    stages[args.stage](args)


if __name__ == "__main__":
    main()
