"""What the demo writes and prints: the harness report with the demo's settings, its targets, `demo.md`, `gates.png`.

The accuracy table, its statistics and `accuracy_latency.png` are the evaluation harness's (`build_report`,
`save_report`, `markdown_table`); the gate figure is the analysis package's gate map (`gate_map`, `plot_gates`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..analysis import plot_gates
from ..atomic import atomic_file, atomic_write_text
from ..evaluation import build_report, markdown_table, save_report
from ..modeling_c2c import C2CForCausalLM

# Written first into every folder the demo writes: it marks a folder the demo may write into again. Folders written
# before the marker existed are known by their `demo.md`.
OUTPUT_MARKER = ".c2c-demo-output"


def claim_output_folder(output: Path) -> None:
    """Create and mark the demo's output folder, refusing a non-empty folder that is not an earlier demo output (no
    `OUTPUT_MARKER`, no `demo.md`): the demo would overwrite files of the user's there."""
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(
            f"The demo output {output} is a file: give a folder (new, empty or an earlier demo output)."
        )
    entries = sorted(entry.name for entry in output.iterdir()) if output.is_dir() else []
    if entries and OUTPUT_MARKER not in entries and "demo.md" not in entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise FileExistsError(
            f"The demo output folder {output} is not empty ({shown}) and is not an earlier c2c-hf demo output (it has "
            f"no {OUTPUT_MARKER} or demo.md): the demo would overwrite files there. Give a new or empty folder "
            "(--output), or an earlier demo output folder."
        )
    atomic_write_text(output / OUTPUT_MARKER, "Written by c2c-hf demo: it may write into this folder again.\n")


# The demo's question sets: facts of people only the sharer knows. Settings are chosen on validation; the targets
# and the reported figures are on test, scored once per configuration.
VALIDATION, TEST = "validation", "test"
SPLITS = (VALIDATION, TEST)
TASKS = ("transfer", "complementary")  # scored as "<task>-<split>" (see `c2c_hf.demo.run.demo_questions`)


def parameter_count(module: torch.nn.Module) -> int:
    """Parameters of `module` (a tied weight counted once)."""
    return sum(p.numel() for p in module.parameters())


def describe_models(
    model: C2CForCausalLM, receiver_tokenizer: PreTrainedTokenizerBase, sharer_tokenizer: PreTrainedTokenizerBase
) -> dict[str, dict[str, Any]]:
    """The report's record of the three models: architecture, parameters, KV shape, tokenizer; the fuser's width,
    layer map, token-map coverage and gate logits `(receiver layers, 2)` (K, V)."""
    config = model.config
    return {
        "receiver": {"arch": "Qwen3", "params": parameter_count(model.receiver), "kv": list(config.receiver_kv_shape),
                     "tokenizer": f"word-level, {len(receiver_tokenizer)} tokens"},
        "sharer": {"arch": "Llama", "params": parameter_count(model.sharer), "kv": list(config.sharer_kv_shape),
                   "tokenizer": f"BPE, {len(sharer_tokenizer)} tokens"},
        "fuser": {"params": parameter_count(model.fuser), "hidden": config.fuser_hidden_size,
                  "layer_map": model.fuser.layer_map, "token_map_coverage": config.token_alignment_coverage,
                  "gate_logits_kv": model.fuser.gate_logits().tolist()},
    }  # fmt: skip


def demo_targets(report: Mapping[str, Any]) -> dict[str, bool]:
    """One run's goals on its last scored split (test when scored), read from the report's summaries. Transfer: C2C
    at least 50 points above the receiver alone (30 in a quick run), above text-to-text, at most half its latency.
    Complementary: C2C at least 30 points above the best of receiver, sharer and routing, and not below text-to-text."""
    split = report["config"]["demo"]["splits"][-1]
    accuracy = {task: {m: r[f"{task}-{split}"]["accuracy"] for m, r in report["results"].items()}
                for task in TASKS}  # fmt: skip
    latency = {m: r[f"transfer-{split}"]["latency_median_s"] for m, r in report["results"].items()}
    transfer, complementary = accuracy["transfer"], accuracy["complementary"]
    margin = 30 if report["config"]["demo"]["quick"] else 50
    best_single = max(complementary[m] for m in ("receiver", "sharer", "routing"))
    return {
        f"transfer_c2c_ge_receiver_plus_{margin}pts": transfer["c2c"] >= transfer["receiver"] + margin / 100,
        "transfer_c2c_above_t2t": transfer["c2c"] > transfer["t2t"],
        "transfer_c2c_latency_le_half_t2t": latency["c2c"] <= 0.5 * latency["t2t"],
        "complementary_c2c_ge_best_single_plus_30pts": complementary["c2c"] >= best_single + 0.30,
        "complementary_c2c_ge_t2t": complementary["c2c"] >= complementary["t2t"],
    }


def write_demo_report(
    results: Mapping[str, Mapping[str, Sequence[Any]]], output: Path, config: dict[str, Any]
) -> dict[str, Any]:
    """Write `results.json` / `results.md` / `accuracy_latency.png` (the harness's, with `config` and the targets),
    `gates.png` (the gate map `config["gate_map"]`) and `demo.md` to `output`, print the summary; returns the report.

    Protocol: the settings were chosen on validation (runs that score validation only); a run that scores test
    scores it once."""
    splits = config["demo"]["splits"]
    protocol = {"selected_on": VALIDATION, "test_evaluations": int(TEST in splits), "scored_splits": list(splits),
                "seed": config["demo"]["seed"], "splits": config["world"]}  # fmt: skip
    report = build_report(results, config, protocol)
    report["config"]["targets"] = {"split": splits[-1], **demo_targets(report)}
    save_report(report, output)
    with atomic_file(output / "gates.png") as path:
        plot_gates(config["gate_map"], path)
    table = markdown_table(report)
    atomic_write_text(output / "demo.md", demo_markdown(table, report["config"]))
    print_summary(table, report["config"], output)
    return report


def _example_line(example: Mapping[str, Any]) -> str:
    return (
        f"{example['question']} {example['choices']} -> C2C {example['c2c_answer']!r}, receiver alone "
        f"{example['receiver_answer']!r}, gold {example['gold']}"
    )


def _schedule_lines(losses: Mapping[str, Any]) -> list[str]:
    """What the "until learnt" schedules did (nothing for fixed schedules)."""

    def outcome(run: Mapping[str, Any]) -> str:
        last = run["probes"][-1][1] if run["probes"] else None
        state = "learnt" if run["learnt"] else "gave up (stuck)" if run["gave_up"] else "not learnt"
        return f"{state} after {run['steps']} steps (last probe {last:.0%})" if last is not None else state

    lines = []
    if "sharer_schedule" in losses:
        lines.append(f"Sharer until learnt: {outcome(losses['sharer_schedule'])}")
    if "receiver_attempts" in losses:
        lines.append("Receiver until learnt: " + "; ".join(
            f"attempt {i}: {outcome(run)}" for i, run in enumerate(losses["receiver_attempts"], 1)))  # fmt: skip
    if "fuser_schedule" in losses:
        lines.append(f"Fuser until learnt: {outcome(losses['fuser_schedule'])}")
    return ["", *lines] if lines else []


def demo_markdown(table: str, config: Mapping[str, Any]) -> str:
    """`demo.md`: the harness table, the world and models, the targets, timings and the reloaded model's answers."""
    models = config["models"]
    lines = [
        table.replace("# C2C evaluation", "# C2C demo: knowledge transfer on a CPU"),
        f"Scored: {', '.join(config['demo']['splits'])} people (known to the sharer only; settings chosen on "
        f"validation, targets on test). Transfer: {config['evaluated']['transfer']}; complementary: "
        f"{config['evaluated']['complementary']}. World {config['world']}; seed {config['demo']['seed']}, "
        f"{'quick' if config['demo']['quick'] else 'full'} run.",
        "",
        f"- receiver: {models['receiver']['arch']}, {models['receiver']['params']:,} params, KV (layers, heads, dim) "
        f"{tuple(models['receiver']['kv'])}, {models['receiver']['tokenizer']}",
        f"- sharer: {models['sharer']['arch']}, {models['sharer']['params']:,} params, KV {tuple(models['sharer']['kv'])}, "
        f"{models['sharer']['tokenizer']}",
        f"- fuser: {models['fuser']['params']:,} params, layer map {models['fuser']['layer_map']}, token map coverage "
        f"{models['fuser']['token_map_coverage']:.1%}",
        "",
        f"Targets on {config['targets']['split']}: " + ", ".join(
            f"{k} {'met' if v else 'MISSED'}" for k, v in config["targets"].items() if k != "split"),
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in config["timings_s"].items()),
        *_schedule_lines(config["losses"]),
        "",
        "The saved C2C model, reloaded with `AutoModelForCausalLM.from_pretrained`, answering scored questions "
        "with `generate`:",
        "",
        *(f"- {_example_line(example)}" for example in config["examples"]),
        "",
    ]
    return "\n".join(lines)


def print_summary(table: str, config: Mapping[str, Any], output: Path) -> None:
    """The table, the targets, the reloaded model's answers, the timings and the output folder, on stdout."""
    timings = dict(config["timings_s"])
    total = timings.pop("total")
    print()
    print(table)
    for name, met in config["targets"].items():
        if name != "split":
            print(f"  target ({config['targets']['split']}) {name}: {'met' if met else 'MISSED'}")
    print("  reloaded C2C (AutoModelForCausalLM.from_pretrained) answering scored questions with generate:")
    for example in config["examples"]:
        print(f"    {_example_line(example)}")
    print(f"  time: {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    print(f"  outputs: {output}")


__all__ = [
    "OUTPUT_MARKER",
    "claim_output_folder",
    "demo_markdown",
    "demo_targets",
    "describe_models",
    "parameter_count",
    "print_summary",
    "write_demo_report",
]
