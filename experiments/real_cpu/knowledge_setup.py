"""What every stage and probe of the private-knowledge experiment agrees on: the world of invented people, the
bases, the folders of an experiment's models and reports, and the command-line arguments that set them.

Used by `knowledge.py` (the stages), `knowledge_sharer.py`, `knowledge_reports.py`, `probe_checkpoint.py`,
`probe_sharer_kv.py` and `analysis_real.py`.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from sealed import record_test_scoring

from c2c_hf.data import MCItem
from c2c_hf.demo.world import Entity, World

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "real-cpu" / "knowledge"
RESULTS = ROOT / "docs" / "results" / "real-cpu" / "knowledge"
RECEIVER, SHARER = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
DEFAULT_PEOPLE = (48, 16)  # fuser group, held-out group
SHARERS = ("statements", "recall", "dense")  # see --sharer
DTYPES = ("bfloat16", "float32")  # the bases'; the fuser stays fp32
WORLD_IDENTITY = ("world_seed", "world", "config")  # a test scoring's identity: these people, this configuration
METHODS = ["receiver", "sharer", "t2t", "c2c", "fact_in_prompt"]  # the eval stage's default; baselines: all but c2c


def load_world(args: argparse.Namespace) -> World:
    return World.generate(args.seed, {"fuser": args.fuser_people, "test": args.heldout_people, "context": 0})


def experiment_dirs(args: argparse.Namespace, sharer: str | None = None) -> tuple[Path, Path]:
    """(runs, results) folders below `--runs` / `--results` (`.../knowledge/` by default): the root for the default
    world, `seed-<S>/` for another world seed (other people), `world-<F>-<H>/` for another size, and a
    `recall-sharer/` (`dense-sharer/`) subfolder for everything built on the recall (dense) sharer (`--sharer`;
    `recall-sharer-<tag>/` for another recipe of it, `--sharer-tag`; a
    recall sharer over the dense one in `dense-sharer/recall-sharer/`). `sharer` names another sharer than
    `--sharer` (a base of it), whose folders take no tag."""
    if args.sharer_tag and args.sharer == "statements":
        raise ValueError(
            f"--sharer-tag {args.sharer_tag} names a recipe of the recall or dense sharer: add --sharer recall|dense."
        )
    people = (args.fuser_people, args.heldout_people)
    suffix = [f"seed-{args.seed}"] if args.seed else []
    suffix += [] if people == DEFAULT_PEOPLE else [f"world-{people[0]}-{people[1]}"]
    tag, sharer = (args.sharer_tag, args.sharer) if sharer is None else (None, sharer)
    if sharer == "recall" and args.recall_over == "dense":
        suffix += ["dense-sharer"]
    if sharer != "statements":
        suffix += [f"{sharer}-sharer-{tag}" if tag else f"{sharer}-sharer"]
    return args.runs.resolve().joinpath(*suffix), args.results.resolve().joinpath(*suffix)


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """What every knowledge script must agree on: the world (seed, group sizes, validation people) and the bases'
    dtype."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fuser-people", type=int, default=DEFAULT_PEOPLE[0], help="people whose facts train the fuser"
    )
    parser.add_argument(
        "--heldout-people", type=int, default=DEFAULT_PEOPLE[1], help="people the evaluation asks about"
    )
    parser.add_argument("--validation-people", type=int, default=8, help="fuser-group people kept out of training")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="bfloat16",
        help="the bases' dtype: bfloat16 (the first runs) needs bf16 matrix units (AMX); else float32 (the rebuild)",
    )  # fmt: skip


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """Where an experiment's files are: the base models, the sharer, the roots of its models (never committed) and
    of its reports (see `experiment_dirs`)."""
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "c2c-real-models")
    parser.add_argument(
        "--sharer", choices=SHARERS, default="statements",
        help="statements: the LoRA sharer; recall: + a LoRA that recalls facts at the name (see recall_texts); "
        "dense: one LoRA over the base on texts denser in facts (DENSE_MIX)",
    )  # fmt: skip
    parser.add_argument(
        "--recall-over", choices=("statements", "dense"), default="statements",
        help="the sharer the recall LoRA is trained over (merged)",
    )  # fmt: skip
    parser.add_argument(
        "--sharer-tag", help="suffix of the recall or dense sharer's folders, for another recipe of it (e.g. 900)"
    )
    parser.add_argument("--runs", type=Path, default=RUNS, help="root of the trained sharers and fusers")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="root of the reports (another one for a rebuilt sharer)"
    )


def split_fuser_people(world: World, validation: int) -> tuple[list[Entity], list[Entity]]:
    """The fuser group's people: those the fuser trains on, and the last `validation` (known to the sharer, never
    trained on) for choosing a checkpoint without looking at the held-out people."""
    people = world.entities["fuser"]
    return people[: len(people) - validation], people[len(people) - validation :]


def tagged(name: str, tag: str | None) -> str:
    """`name-tag`, or `name` for an untagged run: the folders and files of run `tag`."""
    return f"{name}-{tag}" if tag else name


def heldout_items(world: World, seed: int) -> list[MCItem]:
    """The test questions: two per fact of every held-out person (no fuser ever sees their facts)."""
    return world.questions("test", random.Random(f"eval-{seed}"), per_fact=2)


SPLITS = ("validation", "test")  # the scored splits: choices on validation, test scored once per configuration


def split_root(split: str, results: Path) -> Path:
    """Where the reports of `split` go: the results folder for test, its `validation/` subfolder for validation."""
    return results / "validation" if split == "validation" else results


def split_benchmark(split: str) -> str:
    """The benchmark name of `split` in a report: `heldout` for the test people (as every earlier report has it)."""
    return "heldout" if split == "test" else split


def split_items(world: World, split: str, seed: int, validation_people: int) -> list[MCItem]:
    """The questions a `split` is scored on: `test`, `heldout_items`; `validation`, two per fact of the fuser group's
    last `validation_people` (known to the sharer, never trained on by a fuser), asked as the test questions are."""
    if split == "test":
        return heldout_items(world, seed)
    if split != "validation":
        raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
    _, people = split_fuser_people(world, validation_people)
    if not people:
        raise ValueError("The validation split is empty: pass --validation-people N (N >= 1).")
    rng = random.Random(f"validation-{seed}")
    return [world.question(person, attribute, rng, tag=f"#{k}") for person in people for attribute in world.attributes
            for k in range(2)]  # fmt: skip


def test_protocol(
    args: argparse.Namespace, world: World, config: str, scored: list[str], reported: list[str] | None = None
) -> dict:
    """The protocol of a report of `--split` on `config`: where it was chosen (`--selected-on`) and, for the test
    people, how often each of its `reported` methods (default: the `scored` ones) has been scored on them for
    `config`, this scoring of `scored` included (`record_test_scoring` on the committed
    `<--results>/test-scorings.jsonl`); `test_evaluations` is the most of these."""
    from c2c_hf.evaluation.environment import environment

    protocol = {"scored_split": args.split, "selected_on": args.selected_on}
    if args.split == "test":
        entry = {"world_seed": args.seed, "world": {role: len(p) for role, p in world.entities.items()},
                 "config": config, "methods": list(scored), "selected_on": args.selected_on,
                 "git_commit": environment().get("git_commit")}  # fmt: skip
        counts = record_test_scoring(args.results.resolve() / "test-scorings.jsonl", entry, WORLD_IDENTITY)
        per_method = {method: counts.get(method, 0) for method in (reported or scored)}
        protocol |= {"test_evaluations": max(per_method.values()), "test_evaluations_per_method": per_method}
    return protocol
