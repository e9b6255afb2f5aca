"""The runner's report: the machine and models measured, and `perf.json` / `perf.md` (every section as a table, every
target with its bound and verdict)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel

from c2c_hf import kv_shape

from .bench import Bench
from .shapes import FUSERS, REFERENCE


def describe_machine(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    return {
        "cpu": models[0] if models else platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "fuser_dtype": "float32",
        "device": args.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def describe_models(bench: Bench) -> dict[str, Any]:
    def base(model: PreTrainedModel) -> dict[str, Any]:
        config = model.config
        layers, kv_heads, head_dim = kv_shape(config)
        return {
            "type": config.model_type, "name": model.name_or_path or None, "params_m": model.num_parameters() / 1e6,
            "layers": layers, "hidden": config.hidden_size, "kv_heads": kv_heads, "head_dim": head_dim,
            "vocab": config.vocab_size,
        }  # fmt: skip

    return {
        "receiver": base(bench.pair.receiver),
        "sharer": base(bench.pair.sharer),
        "token_map": hasattr(bench.any_model.fuser, "token_map"),
        "fusers": {
            name: {**FUSERS[name], "params_m": sum(p.numel() for p in model.fuser.parameters()) / 1e6}
            for name, model in bench.models.items()
        },
    }


def format_value(metric: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    if metric.endswith("_s"):
        return f"{value * 1e3:.1f} ms"
    if metric.endswith("_mib"):
        return f"{value:.1f} MiB"
    if "_over_" in metric:
        return f"{value:.2f}x"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def section_table(section: str, by_fuser: dict[str, dict[str, Any]]) -> str:
    """Markdown table of one section: a row per metric, a column per fuser size."""
    fusers = list(by_fuser)
    lines = [f"### {section}", "", "| metric | " + " | ".join(f"fuser {f}" for f in fusers) + " |",
             "|---" * (len(fusers) + 1) + "|"]  # fmt: skip
    for metric in by_fuser[fusers[0]]:
        lines.append(f"| {metric} | " + " | ".join(format_value(metric, by_fuser[f][metric]) for f in fusers) + " |")
    return "\n".join(lines) + "\n"


def targets_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| shape set | fuser | section | ratio | value | target | |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        bound = row["bound"] if isinstance(row["bound"], bool) else f"{row['bound']:.3g}"
        lines.append(
            f"| {row['shape_set']} | {row['fuser']} | {row['section']} | {row['metric']} | "
            f"{format_value(row['metric'], row['value'])} | {row['op']} {bound} | {'met' if row['met'] else 'MISSED'} |"
        )
    return "\n".join(lines) + "\n"


def models_line(models: dict[str, Any]) -> str:
    def base(m: dict[str, Any]) -> str:
        return (f"{m['name'] or m['type']} {m['params_m']:.1f}M ({m['layers']} layers, hidden {m['hidden']}, KV "
                f"{m['kv_heads']}x{m['head_dim']}, vocab {m['vocab']})")  # fmt: skip

    fusers = ", ".join(
        f"{name} (hidden {f['fuser_hidden_size']}) {f['params_m']:.1f}M" for name, f in models["fusers"].items()
    )
    token_map = "; receiver -> sharer token map" if models["token_map"] else ""
    return f"Receiver {base(models['receiver'])}; sharer {base(models['sharer'])}; fusers {fusers}{token_map}."


def markdown_report(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    device = machine["gpu"] or f"{machine['cpu']} ({machine['usable_cores']} usable cores)"
    lines = [
        "# C2C performance",
        "",
        f"{device}; torch {machine['torch']}, transformers {machine['transformers']}, torch threads "
        f"{machine['torch_threads']}, bases in {machine['dtype']} (fuser float32) on {machine['device']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}.",
        "",
        f"Prompt {settings['prompt_tokens']} tokens; decode: {settings['decode_steps']} steps of each model on the "
        f"prompt's cache; batch rows generate {settings['new_tokens']} tokens; e2e answers "
        f"{settings['answer_tokens']} tokens after hints of "
        f"{' and '.join(map(str, settings['hint_tokens']))} tokens; "
        f"training batch {settings['train_batch_size']} x ({settings['prompt_tokens']} + "
        f"{settings['response_tokens']}) tokens. The timed calls of a section are interleaved; medians of "
        f"{settings['repeats']} calls after {settings['warmup']} warm-up calls. Memory: {report['memory_method']}",
        "",
        "## Targets",
        "",
        targets_table(report["targets"]),
    ]
    for shape, result in report["results"].items():
        lines += [f"## {shape}", "", models_line(result["models"]), ""]
        if shape in REFERENCE:
            lines += [f"The authors' code (another run): {REFERENCE[shape]}", ""]
        lines += [section_table(section, by_fuser) for section, by_fuser in result["sections"].items()]
    return "\n".join(lines)


def write_report(report: dict[str, Any], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "perf.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "perf.md").write_text(markdown_report(report))
