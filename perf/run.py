"""Performance runner: C2C's cost against what its arithmetic requires, measured side by side in one run.

    python -m perf.run                                      # every section; shape sets small, paper, real
    python -m perf.run --shapes small --fuser small --repeats 3 --output /tmp/perf
    python -m perf.run --shapes tiny --fuser tiny --sections train --train-batch-size 4 \\
        --prompt-tokens 192 --response-tokens 64 --repeats 10 --warmup 2   # one training step (fwd + bwd + AdamW)
    bash perf/gpu.sh OUT_DIR                                # bf16 on a CUDA GPU, under 5 minutes

Sections (`--sections`, `perf/sections.py`), run for each shape set (`--shapes`, `perf/shapes.py`) with one C2C
model per fuser size (`--fuser`). The timed calls of a section are interleaved round-robin, so that load changes on a shared
machine hit them alike; each figure is the median of `--repeats` calls after `--warmup` calls.

- ttft: time to first token at batch 1 (one prefill forward): the receiver alone; both plain prefills (receiver over
  the prompt, sharer over the positions C2C fuses); the fuser alone on random KV of exactly the shapes C2C fuses
  (every receiver layer); C2C.
- decode: time of one decode step at batch 1 (one token on the prompt's cache): receiver alone vs C2C on its fused
  cache, the models' steps alternating one by one.
- e2e: one multiple-choice answer at batch 1 through `c2c_hf.evaluation` (prompts, chat templates, greedy answer of
  exactly `--answer-tokens` tokens): text-to-text with a sharer hint of exactly each `--hint-tokens` size, and C2C.
- batch: C2C greedy throughput at batch 1, 4 and 8 (left-padded prompts of different lengths), of whole `generate`
  calls and of their decode steps (the target's: a prefill is compute-bound, batching cannot speed it up), and
  whether every padded row's greedy output equals the same prompt's batch-1 output.
- memory: peak working memory (above the weights) of C2C generation vs the receiver's generation and the sharer's
  prefill (see `perf.bench.MEMORY_METHOD`).
- span: span alignment (`SpanAligner.align_row`) of rows up to 8,000 tokens, canonical ids vs ids that are not the
  text's own tokenization, in both directions of the pair's tokenizers (or of two stand-ins trained here, when the
  pair shares one); see `perf/span.py`.
- train: one fuser training forward + backward vs its parts timed alone (receiver forward + backward, sharer
  forward, fuser forward + backward) and vs the two plain forwards; the AdamW step is timed apart. It runs last
  because it updates the fusers.

Writes `perf.json` and `perf.md` under `--output` after each shape set, prints each section's table, and prints
every target ratio (`performance_targets`) next to its bound with met / missed.
"""

from __future__ import annotations

import argparse
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from c2c_hf import C2CForCausalLM
from c2c_hf.evaluation import MEASUREMENT_PROTOCOL, result_metadata

from .bench import MEMORY_METHOD, Bench
from .report import describe_machine, describe_models, models_line, section_table, targets_table, write_report
from .sections import BATCH_SIZES, SECTION_FUNCTIONS, SECTIONS
from .shapes import AUTHORS_TRAIN_RATIO, FUSERS, SHAPE_SETS, load_pair
from .span import SPAN_LENGTHS


@dataclass(frozen=True)
class Target:
    """A bound on one metric of one section, for every shape set or only those in `shapes`."""

    section: str
    metric: str
    op: str  # "<=", ">=" or "=="
    bound: float | bool
    shapes: tuple[str, ...] | None = None

    def met(self, value: float | bool) -> bool:
        return {"<=": operator.le, ">=": operator.ge, "==": operator.eq}[self.op](value, self.bound)


def performance_targets(hint_tokens: Sequence[int]) -> list[Target]:
    """What C2C should cost against its arithmetic, per section; the text-to-text target uses the longest hint (256
    tokens by default)."""
    return [
        Target("ttft", "c2c_over_plain_plus_fuser", "<=", 1.1),
        Target("decode", "c2c_over_receiver", "<=", 1.02),
        Target("e2e", f"t2t_hint{max(hint_tokens)}_over_c2c", ">=", 3.0),
        Target("batch", f"decode_{BATCH_SIZES[-1]}_over_1", ">=", 4.0),  # prefill (compute-bound) cannot batch
        Target("batch", "rows_equal", "==", True),
        Target("span", f"noncanonical_{SPAN_LENGTHS[-1]}_s", "<=", 0.5),  # linear in the row's length
        Target("span", f"reverse_noncanonical_{SPAN_LENGTHS[-1]}_s", "<=", 0.5),
        Target("train", "step_over_parts", "<=", 1.2),
        Target("train", "step_over_plain_forwards", "<=", AUTHORS_TRAIN_RATIO / 2, shapes=("small",)),
    ]


def check_targets(results: dict[str, Any], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """One row per (shape set, fuser, target) whose section was measured."""
    rows = []
    for shape, result in results.items():
        for target in targets:
            if target.shapes is not None and shape not in target.shapes:
                continue
            for fuser, metrics in result["sections"].get(target.section, {}).items():
                value = metrics[target.metric]
                rows.append({
                    "shape_set": shape, "fuser": fuser, "section": target.section, "metric": target.metric,
                    "value": value, "op": target.op, "bound": target.bound, "met": target.met(value),
                })  # fmt: skip
    return rows


def run_shape_set(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the pair and one C2C model per fuser size, run the selected sections; returns models and sections."""
    started = time.perf_counter()
    pair = load_pair(shape, getattr(torch, args.dtype), torch.device(args.device), args.models)
    models = {}
    for name in args.fuser:
        torch.manual_seed(args.seed)
        models[name] = C2CForCausalLM.from_base_models(
            pair.receiver, pair.sharer, pair.receiver_tokenizer, pair.sharer_tokenizer, **FUSERS[name]
        ).eval()
    bench = Bench(pair, models, args)
    print(
        f"## {shape}: built in {time.perf_counter() - started:.0f} s. {models_line(describe_models(bench))}\n",
        flush=True,
    )
    sections = {}
    for section in (s for s in SECTIONS if s in args.sections):
        started = time.perf_counter()
        sections[section] = SECTION_FUNCTIONS[section](bench)
        print(section_table(section, sections[section]), f"({time.perf_counter() - started:.0f} s)\n", flush=True)
    return {"models": describe_models(bench), "sections": sections}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections for every selected shape set; writes the report after each shape set."""
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    report: dict[str, Any] = {
        **result_metadata(MEASUREMENT_PROTOCOL, args.device),
        "machine": describe_machine(args),
        "settings": settings,
        "memory_method": MEMORY_METHOD[torch.device(args.device).type],
        "results": {},
        "targets": [],
    }
    for shape in args.shapes:
        report["results"][shape] = run_shape_set(shape, args)
        report["targets"] = check_targets(report["results"], performance_targets(args.hint_tokens))
        if args.output:
            write_report(report, args.output)
    print("## Targets\n\n" + targets_table(report["targets"]), flush=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m perf.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", choices=SHAPE_SETS, default=["small", "paper", "real"])
    parser.add_argument(
        "--fuser",
        nargs="+",
        choices=tuple(FUSERS),
        default=["default", "small"],
        help="fuser sizes: default = the paper's (hidden 1024, 3 blocks), small = hidden 256",
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--models",
        type=Path,
        default=Path.home() / ".cache" / "c2c-real-models",
        help="folder with smollm2-135m-instruct and qwen2.5-coder-0.5b-instruct (shape set real)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated by each row in the batch section")
    parser.add_argument(
        "--decode-steps", type=int, default=64, help="timed decode steps of each model (decode section)"
    )
    parser.add_argument("--hint-tokens", type=int, nargs="+", default=[64, 256], help="text-to-text hint lengths")
    parser.add_argument("--answer-tokens", type=int, default=8, help="tokens of every e2e answer")
    parser.add_argument("--response-tokens", type=int, default=64, help="supervised tokens of the training sequence")
    parser.add_argument("--train-batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before them")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="dtype of the bases (the fuser stays float32)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fusers' initialisation")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("docs/results/perf"),
        help="folder for perf.json and perf.md (written after each shape set)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prompt_tokens < 16:
        parser.error("--prompt-tokens must be at least 16 (batch prompts shrink from it by 1/16 steps)")
    counts = (args.repeats, args.decode_steps, args.answer_tokens, args.response_tokens, *args.hint_tokens)
    if min(counts) < 1 or args.new_tokens < 2:
        parser.error(
            "--repeats, --decode-steps, --answer-tokens, --response-tokens and --hint-tokens must be positive, "
            "--new-tokens >= 2"
        )
    return run(args)


if __name__ == "__main__":
    main()
