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
from ..evaluation import UNSEALED_PROTOCOL, build_report, markdown_table, save_report
from ..modeling_c2c import C2CForCausalLM

BENCHMARK = "heldout"  # the one question set the demo evaluates: facts of people only the sharer knows
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
    """The demo's goals, read from the report's summaries: the receiver alone near chance, C2C accurate, at least as
    accurate as text-to-text and at most half its latency."""
    summary = {method: by_benchmark[BENCHMARK] for method, by_benchmark in report["results"].items()}
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
    # The demo's settings were chosen on these held-out people: there is no sealed test split (yet), and the protocol
    # says so rather than calling the held-out figures a test.
    protocol = {**UNSEALED_PROTOCOL, "seed": config["demo"]["seed"], "splits": config["world"]}
    report = build_report(results, config, protocol)
    report["config"]["targets"] = demo_targets(report)
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


def demo_markdown(table: str, config: Mapping[str, Any]) -> str:
    """`demo.md`: the harness table, the world and models, the targets, timings and the reloaded model's answers."""
    models = config["models"]
    lines = [
        table.replace("# C2C evaluation", "# C2C demo: knowledge transfer on a CPU"),
        f"Held-out people (known to the sharer only), one 4-way question per fact; world "
        f"{config['world']}; seed {config['demo']['seed']}, {'quick' if config['demo']['quick'] else 'full'} run.",
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
        "The saved C2C model, reloaded with `AutoModelForCausalLM.from_pretrained`, answering held-out questions "
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
    print("  reloaded C2C (AutoModelForCausalLM.from_pretrained) answering held-out questions with generate:")
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
