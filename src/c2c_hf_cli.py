"""The `c2c-hf` console entry: the list of sub-commands and the dispatch to them, importing nothing heavy.

It lives outside the `c2c_hf` package on purpose: importing `c2c_hf` loads torch and transformers and registers the
Auto classes (seconds), which `c2c-hf`, `c2c-hf --help` and a mistyped command do not need. A sub-command's module
(and with it the package) is imported only when that sub-command runs. `python -m c2c_hf.cli` is the same entry.
"""

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
USAGE = "usage: c2c-hf <command> [options]   (c2c-hf <command> --help for its options)"


def main(argv: list[str] | None = None) -> None:
    """Run `c2c-hf <command> ARGS`: print the command list for no command or `-h`/`--help`; exit with status 2 and
    the list for an unknown command; otherwise import the command's module and hand it the remaining arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        module_name, _ = COMMANDS[argv[0]]
        importlib.import_module(module_name).main(argv[1:])
        return
    listing = "\n".join(f"  {name:<15} {description}" for name, (_, description) in COMMANDS.items())
    text = f"{USAGE}\n\ncommands:\n{listing}"
    if argv and argv[0] not in ("-h", "--help"):
        print(text, file=sys.stderr)
        print(f"c2c-hf: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        raise SystemExit(2)
    print(text)


if __name__ == "__main__":
    main()
