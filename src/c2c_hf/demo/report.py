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
from ..evaluation import build_report, markdown_table, save_report
from ..modeling_c2c import C2CForCausalLM

# The demo's question sets: facts of people only the sharer knows. Settings are chosen on validation; the targets
# and the reported figures are on test, scored once per configuration.
VALIDATION, TEST = "validation", "test"
SPLITS = (VALIDATION, TEST)


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
    """The demo's goals on the test split, read from the report's summaries: the receiver alone near chance, C2C
    accurate, at least as accurate as text-to-text and at most half its latency."""
    summary = {method: by_benchmark[TEST] for method, by_benchmark in report["results"].items()}
    accuracy = {method: s["accuracy"] for method, s in summary.items()}
    latency = {method: s["latency_median_s"] for method, s in summary.items()}
    return {
        "receiver_alone_le_35pct": accuracy["receiver"] <= 0.35,
        "c2c_ge_80pct": accuracy["c2c"] >= 0.80,
        "c2c_ge_t2t": accuracy["c2c"] >= accuracy["t2t"],
        "c2c_latency_le_half_t2t": latency["c2c"] <= 0.5 * latency["t2t"],
    }


def write_demo_report(
    results: Mapping[str, Mapping[str, Sequence[Any]]], output: Path, config: dict[str, Any]
) -> dict[str, Any]:
    """Write `results.json` / `results.md` / `accuracy_latency.png` (the harness's, with `config` and the targets),
    `gates.png` (the gate map `config["gate_map"]`) and `demo.md` to `output`, print the summary; returns the report."""
    protocol = {"selected_on": VALIDATION, "test_evaluations": 1, "seed": config["demo"]["seed"],
                "splits": config["world"]}  # fmt: skip
    report = build_report(results, config, protocol)
    report["config"]["targets"] = demo_targets(report)
    save_report(report, output)
    plot_gates(config["gate_map"], output / "gates.png")
    table = markdown_table(report)
    (output / "demo.md").write_text(demo_markdown(table, report["config"]), encoding="utf-8")
    print_summary(table, report["config"], output)
    return report


def _example_line(example: Mapping[str, Any]) -> str:
    return (
        f"{example['question']} {example['choices']} -> C2C {example['c2c_answer']!r}, receiver alone "
        f"{example['receiver_answer']!r}, gold {example['gold']}"
    )


def demo_markdown(table: str, config: Mapping[str, Any]) -> str:
    """`demo.md`: the harness table, the world and models, the targets, timings and the reloaded model's answers."""
    models = config["models"]
    lines = [
        table.replace("# C2C evaluation", "# C2C demo: knowledge transfer on a CPU"),
        f"Validation and test people (known to the sharer only; settings chosen on validation, targets on test), "
        f"one 4-way question per fact; world {config['world']}; seed {config['demo']['seed']}, {'quick' if config['demo']['quick'] else 'full'} run.",
        "",
        f"- receiver: {models['receiver']['arch']}, {models['receiver']['params']:,} params, KV (layers, heads, dim) "
        f"{tuple(models['receiver']['kv'])}, {models['receiver']['tokenizer']}",
        f"- sharer: {models['sharer']['arch']}, {models['sharer']['params']:,} params, KV {tuple(models['sharer']['kv'])}, "
        f"{models['sharer']['tokenizer']}",
        f"- fuser: {models['fuser']['params']:,} params, layer map {models['fuser']['layer_map']}, token map coverage "
        f"{models['fuser']['token_map_coverage']:.1%}",
        "",
        "Targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in config["targets"].items()),
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in config["timings_s"].items()),
        "",
        "The saved C2C model, reloaded with `AutoModelForCausalLM.from_pretrained`, answering test questions "
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
        print(f"  target {name}: {'met' if met else 'MISSED'}")
    print("  reloaded C2C (AutoModelForCausalLM.from_pretrained) answering test questions with generate:")
    for example in config["examples"]:
        print(f"    {_example_line(example)}")
    print(f"  time: {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    print(f"  outputs: {output}")


__all__ = [
    "demo_markdown",
    "demo_targets",
    "describe_models",
    "parameter_count",
    "print_summary",
    "write_demo_report",
]
