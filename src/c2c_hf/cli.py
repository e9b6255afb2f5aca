"""`c2c-hf` command line: one sub-command per job, each parsed by its own module with `HfArgumentParser`."""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module, one-line description); each module exposes `main(argv: list[str]) -> None`.
COMMANDS = {
    "demo": ("c2c_hf.demo.command", "the main job: a knowledge-transfer world that shows C2C working on a CPU (no Hub)"),
    "train": ("c2c_hf.commands.train", "train a fuser with the stock Trainer on a receiver/sharer pair"),
    "eval": ("c2c_hf.evaluation.command", "compare receiver, sharer, text-to-text, routing and C2C on benchmarks"),
    "push": ("c2c_hf.commands.push", "upload a saved C2C checkpoint (fuser, config, code, model card) to the Hub"),
    "lm-eval": ("c2c_hf.integrations.lm_eval", "lm-evaluation-harness's command line with the `c2c` model type"),
    "import-rosetta": ("c2c_hf.integrations.rosetta", "convert a fuser released by the C2C authors into a c2c_hf checkpoint"),
    "analyze": ("c2c_hf.analysis.command", "the paper's analyses (enrichment, transfer, rank, progressive, gates): JSON + PNG"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<15} {description}" for name, (_, description) in COMMANDS.items()]
        print("usage: c2c-hf <command> [options]   (c2c-hf <command> --help for its options)\n\ncommands:")
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"c2c-hf: unknown command {argv[0]!r}")
        return
    module_name, _ = COMMANDS[argv[0]]
    importlib.import_module(module_name).main(argv[1:])


if __name__ == "__main__":
    main()
