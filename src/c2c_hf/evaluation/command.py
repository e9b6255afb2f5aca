"""`c2c-hf eval`: load a C2C checkpoint (or the two bases), evaluate the methods on the benchmarks, write the report
and print its table; `--merge` joins finished reports instead."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.trainer_utils import get_last_checkpoint

from ..cli_flags import accept_both_spellings
from ..loading import check_checkpoint_location
from ..modeling_c2c import C2CForCausalLM
from .methods import METHODS, Routing, build_methods, evaluate
from .reports import markdown_table, merge_report_dirs, write_report
from .scoring import MODES, PROMPTS, Scoring
from .tasks import BENCHMARKS, load_benchmark

# `--receiver/--sharer` baselines never run the fuser; a minimal placeholder fuser keeps the wrapper cheap.
PLACEHOLDER_FUSER = {"fuser_hidden_size": 8, "fuser_num_blocks": 2}


def load_models(
    model: str | None = None,
    receiver: str | None = None,
    sharer: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
) -> tuple[C2CForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerBase]:
    """A C2C model (from a checkpoint, or `receiver` + `sharer` with an untrained placeholder fuser) in eval mode on
    `device`, with the tokenizers of the bases its config names (one object when both name the same repo)."""
    load_kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if model is not None:
        check_checkpoint_location(model)
        if Path(model).is_dir() and not (Path(model) / "config.json").exists():
            last = get_last_checkpoint(model)
            raise ValueError(
                f"{model} holds no saved model (no config.json): "
                + (f"pass a Trainer checkpoint in it, the last is {last}, " if last else "")
                + "or let training finish, which saves the model there."
            )
        c2c = AutoModelForCausalLM.from_pretrained(model, **load_kwargs)
        if not isinstance(c2c, C2CForCausalLM):
            raise ValueError(f"{model} is not a C2C checkpoint (it loads as {type(c2c).__name__}).")
    elif receiver is not None and sharer is not None:
        bases = [AutoModelForCausalLM.from_pretrained(name, **load_kwargs) for name in (receiver, sharer)]
        c2c = C2CForCausalLM.from_base_models(*bases, **PLACEHOLDER_FUSER)
    else:
        raise ValueError("Give a C2C checkpoint (model=...) or both receiver=... and sharer=....")
    config = c2c.config
    receiver_id = (config.receiver_name_or_path, config.receiver_revision)
    sharer_id = (config.sharer_name_or_path, config.sharer_revision)
    for role, (name, _) in (("receiver", receiver_id), ("sharer", sharer_id)):
        if not name:
            raise ValueError(f"The C2C config names no {role} (`{role}_name_or_path`), so its tokenizer is unknown.")
    load_tokenizer = functools.cache(lambda name, revision: AutoTokenizer.from_pretrained(name, revision=revision))
    receiver_tokenizer, sharer_tokenizer = load_tokenizer(*receiver_id), load_tokenizer(*sharer_id)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return c2c.to(device).eval(), receiver_tokenizer, sharer_tokenizer


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count of items, tokens or questions)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {value}")
    return value


def _parse_paths(pairs: Sequence[str]) -> dict[str, str]:
    paths = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in BENCHMARKS:
            raise ValueError(f"--benchmark-paths takes name=path with a name in {BENCHMARKS}, got {pair!r}.")
        paths[name] = path
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2c-hf eval",
        description="Compare receiver, sharer, text-to-text (t2t), query-level routing and C2C on multiple-choice "
        "benchmarks: accuracy with 95% Wilson intervals and latency per question.",
    )
    models = parser.add_argument_group("models (a C2C checkpoint, or --receiver and --sharer for the baselines only)")
    models.add_argument("--model", help="C2C checkpoint directory or Hub id; bases and tokenizers come from its config")
    models.add_argument("--receiver", help="receiver id/path (without --model: baselines, no c2c)")
    models.add_argument("--sharer", help="sharer id/path (without --model: baselines, no c2c)")
    models.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    models.add_argument("--device", help="default: cuda if available, else cpu")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--benchmarks", nargs="+", choices=BENCHMARKS, default=["arc_challenge", "openbookqa", "mmlu_redux", "ceval"]
    )
    data.add_argument(
        "--benchmark-paths", nargs="*", default=[], metavar="NAME=PATH", help="local files (default: the Hub)"
    )
    data.add_argument("--limit", type=positive_int, help="evaluate a deterministic subset of this many items per benchmark")
    data.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    run = parser.add_argument_group("evaluation")
    run.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        help="default: all (without c2c when no --model, without routing for --prompt open unless --mode likelihood)",
    )
    run.add_argument(
        "--mode",
        default="generate",
        choices=MODES,
        help="generate: greedy answer, read for a letter or choice text; logits: the largest letter logit; "
        "likelihood: the choice text most likely as the reply, per character (lm-eval's acc_norm)",
    )
    run.add_argument(
        "--prompt",
        default="choices",
        choices=PROMPTS,
        help="choices: lettered multiple choice; open: "
        "the bare question, right when the answer names the right choice's text and no other",
    )
    run.add_argument("--max-new-tokens", type=positive_int, default=64)
    run.add_argument("--hint-tokens", type=positive_int, default=256, help="token budget of the sharer's t2t hint")
    run.add_argument("--batch-size", type=positive_int, default=1, help="questions per batch (left padding); the paper uses 1")
    run.add_argument("--routing-fit-benchmark", choices=BENCHMARKS, help="fit the router on this benchmark's items "
                     "(items also evaluated are excluded); without it the router routes by confidence")
    run.add_argument("--routing-fit-split", help="Hub split of the routing-fit benchmark")
    run.add_argument("--routing-fit-limit", type=positive_int, default=200, help="at most this many routing-fit items")
    run.add_argument("--output", required=True, help="output directory")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="REPORT_DIR",
        help="instead of evaluating: merge finished reports (folders with results.json, same model and settings, "
        "e.g. one per method) into one table under --output",
    )
    return accept_both_spellings(parser)


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf eval ...`: load, evaluate every method on every benchmark, write the report, print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge:
        if args.model or args.receiver or args.sharer:
            parser.error("--merge reads finished reports and evaluates nothing: give it without models")
        try:
            print(markdown_table(merge_report_dirs(args.merge, args.output)))
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        return
    if args.model is None and (args.receiver is None or args.sharer is None):
        parser.error("give --model (a C2C checkpoint) or both --receiver and --sharer")
    if args.model is not None and (args.receiver or args.sharer):
        parser.error("--receiver/--sharer come from the --model checkpoint's config; give one or the other")
    routes = args.prompt == "choices" or args.mode == "likelihood"  # routing needs letters or likelihoods
    default_methods = [m for m in METHODS if (m != "c2c" or args.model) and (m != "routing" or routes)]
    methods = args.methods or default_methods
    if "c2c" in methods and args.model is None:
        parser.error(
            "method c2c needs a trained fuser: pass --model <C2C checkpoint> (an untrained fuser is meaningless)"
        )
    try:
        scoring = Scoring(args.mode, args.max_new_tokens, args.prompt)
    except ValueError as error:
        parser.error(str(error))
    if "routing" in methods and not routes:
        parser.error(
            "routing reads letter confidences or choice likelihoods: drop it from --methods, use --prompt choices "
            "or --mode likelihood"
        )
    try:
        paths = _parse_paths(args.benchmark_paths)
    except ValueError as error:
        parser.error(str(error))

    benchmarks = {
        name: load_benchmark(name, paths.get(name), limit=args.limit, seed=args.seed) for name in args.benchmarks
    }
    for name, items in benchmarks.items():
        if not items:
            parser.error(f"benchmark {name} has no items (from {paths.get(name) or 'the Hub'}): nothing to evaluate")
    model, receiver_tokenizer, sharer_tokenizer = load_models(
        args.model, args.receiver, args.sharer, args.dtype, args.device
    )
    built = build_methods(model, receiver_tokenizer, sharer_tokenizer, methods, scoring, args.hint_tokens)
    config = {
        **vars(args),
        "receiver": model.config.receiver_name_or_path,  # the bases evaluated, also when they come from --model
        "sharer": model.config.sharer_name_or_path,
        "methods": methods,
        "device": str(model.device),
        "latency": "wall clock per batch / batch size",
    }
    routing = next((m for m in built if isinstance(m, Routing)), None)
    if routing is not None and args.routing_fit_benchmark:
        evaluated = {item.id for items in benchmarks.values() for item in items}
        fit_name = args.routing_fit_benchmark
        pool = load_benchmark(fit_name, paths.get(fit_name), split=args.routing_fit_split)
        fit_items = [item for item in pool if item.id not in evaluated][: args.routing_fit_limit]
        config["routing_fit"] = {"items": len(fit_items), "informative": routing.fit(fit_items, args.batch_size)}

    results = evaluate(built, benchmarks, args.batch_size)
    print(markdown_table(write_report(results, args.output, config)))
