"""Private-knowledge transfer between real pretrained models on a CPU: the experiment's stages.

The sharer (Qwen2.5-Coder-0.5B-Instruct) learns facts about invented people (`c2c_hf.demo.world`) through a LoRA adapter;
the receiver (SmolLM2-135M-Instruct) cannot know them. A fuser is trained on questions about one group of people and
evaluated on questions about held-out people (the sharer knows both groups):

    python experiments/real_cpu/knowledge.py sharer              # LoRA on the sharer, merged copy in runs/
    python experiments/real_cpu/knowledge.py check               # does the sharer alone state the held-out facts?
    python experiments/real_cpu/knowledge.py fuser --fusion gated     # (ablations: --fusion weighted | projection)
    python experiments/real_cpu/knowledge.py eval --fusion gated      # all methods -> docs/results/real-cpu/knowledge/
    python experiments/real_cpu/knowledge.py eval --fusion weighted --methods c2c   # adds to the rows already there
    python experiments/real_cpu/knowledge.py baselines           # every method but C2C, no fuser needed
    python experiments/real_cpu/knowledge.py summary                  # the ablation table and plot
    python experiments/real_cpu/knowledge.py sharer --sharer recall   # + a LoRA that recalls facts at the name
    python experiments/real_cpu/knowledge.py fuser --sharer recall --layer-map top2 ...
    python experiments/real_cpu/knowledge.py sharer --sharer dense    # or: one LoRA that learns and recalls the facts
    python experiments/real_cpu/knowledge.py fuser --token-alignment span ...   # the sharer reads its own tokenization
    python experiments/real_cpu/knowledge.py segmentation --prompt open ...      # reports split by how names are split
    python experiments/real_cpu/knowledge.py seeds --seed-tags TAG TAG-seed1 ... # one fusion's mean over seeds
    python experiments/real_cpu/knowledge.py sealed --split test --config NAME=RUN,RUN,RUN ...  # the sealed summary

The sharer stages live in `knowledge_sharer.py`, the summaries in `knowledge_reports.py`, what they all share (the
world, the folders, the common arguments) in `knowledge_setup.py`; this file holds the fuser and evaluation stages
and the command line. The fuser stage runs the frozen sharer once per training question (`SharerCacheMemo`: later
epochs reuse its KV), checkpoints every `--save-steps` and resumes from its last checkpoint when run again.

Every stage is deterministic for `--seed`; models come from `../shared/tools/get-real-models` (`--models`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from c2c_hf import C2CForCausalLM, build_features
from c2c_hf.analysis import gate_map, plot_gates
from c2c_hf.data import MCItem, format_prompt
from c2c_hf.demo import FactInPrompt, TrainedTextToText, train_hint_reader
from c2c_hf.demo.world import ATTRIBUTES, Entity, World
from c2c_hf.evaluation import (
    LM,
    MEASUREMENT_PROTOCOL,
    Routing,
    Scoring,
    build_methods,
    build_report,
    evaluate,
    load_report,
    markdown_table,
    merge_reports,
    result_metadata,
    save_report,
)

sys.path.insert(0, str(Path(__file__).parent))  # this folder's scripts
from knowledge_reports import sealed_summary, seed_mean, segmentation, summarize
from knowledge_setup import (
    METHODS,
    RECEIVER,
    SPLITS,
    add_location_arguments,
    add_world_arguments,
    experiment_dirs,
    load_world,
    split_benchmark,
    split_fuser_people,
    split_items,
    split_root,
    tagged,
    test_protocol,
)
from knowledge_sharer import check_sharer, train_sharer
from sealed import layer_map, train_fuser_resumably, with_protocol

ROUTING_FIT_QUESTIONS = 64  # the routing baseline's classifier: questions about fuser-training people

# --------------------------------------------------------------------------- the fuser


def fuser_rows(
    world: World, people: list[Entity], per_fact: int, seed: int, prompt: str, answer: str
) -> datasets.Dataset:
    """Questions about `people` as chat rows. `prompt="choices"`: the harness's multiple-choice prompt, answered
    with the right choice's text (`answer="text"`, as the demo's models answer) or its letter (`"letter"`);
    `prompt="open"`: the bare question, answered with the fact's canonical statement ("Trenkai lives in Dublin.")."""
    def row(item: MCItem) -> dict:
        user = item.question if prompt == "open" else format_prompt(item)
        reply = fuser_reply(world, item, prompt, answer)
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}

    return datasets.Dataset.from_list([row(item) for item in fuser_questions(world, people, per_fact, seed)])


def fuser_questions(world: World, people: list[Entity], per_fact: int, seed: int) -> list[MCItem]:
    """The fuser's training questions: `per_fact` about every fact of `people`, shuffled (seeded)."""
    rng = random.Random(f"fuser-{seed}")
    items = [world.question(e, a, rng, tag=f"#{k}") for e in people for a in ATTRIBUTES for k in range(per_fact)]
    random.Random(seed).shuffle(items)
    return items


def fuser_reply(world: World, item: MCItem, prompt: str, answer: str) -> str:
    """What the fuser's data answers `item` with (see `fuser_rows`)."""
    if prompt == "open":
        return world.fact_hint(item)
    return item.choices[item.gold] if answer == "text" else item.letters[item.gold]


def train_reader(args: argparse.Namespace) -> None:
    """The trained text-to-text baseline (`c2c_hf.demo.train_hint_reader`): a rank-8 LoRA of the receiver, merged,
    trained to answer the fuser's training questions from the sharer's written hints, with the fuser's data (the
    same questions and replies), steps, batch size and learning rate -> `t2t-reader-<run>` beside the fusers."""
    world, (runs, _) = load_world(args), experiment_dirs(args)
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    receiver = AutoModelForCausalLM.from_pretrained(args.models / RECEIVER, dtype=args.dtype)
    sharer = LM(AutoModelForCausalLM.from_pretrained(runs / "sharer-private", dtype=args.dtype).eval(),
                AutoTokenizer.from_pretrained(runs / "sharer-private"))  # fmt: skip
    people, _ = split_fuser_people(world, args.validation_people)
    items = fuser_questions(world, people, args.questions_per_fact, args.seed)
    out = runs / f"t2t-reader-{run_name(args)}"
    with tempfile.TemporaryDirectory() as workdir:
        reader = train_hint_reader(
            receiver, receiver_tokenizer, sharer, items, steps=args.fuser_steps, batch_size=args.fuser_batch_size,
            lr=args.fuser_lr, rank=8, hint_tokens=args.hint_tokens, seed=args.seed, workdir=workdir,
            prompt=args.prompt, answer=lambda item: fuser_reply(world, item, args.prompt, args.fuser_answer),
            hint_batch_size=8,
        )  # fmt: skip
    reader.save_pretrained(out)
    receiver_tokenizer.save_pretrained(out)
    print(f"trained text-to-text reader -> {out}")


def run_name(args: argparse.Namespace) -> str:
    """`gated`, `gated-letter`, `open-gated-h64`...: the fuser's folder under runs/ and its report's under docs/."""
    parts = (["open"] if args.prompt == "open" else []) + [args.fusion]
    parts += ["letter"] if args.prompt == "choices" and args.fuser_answer == "letter" else []
    return "-".join(parts + ([args.tag] if args.tag else []))


def train_fuser(args: argparse.Namespace) -> None:
    world, (runs, _) = load_world(args), experiment_dirs(args)
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    sharer_path = runs / "sharer-private"
    fuser_seed = args.seed if args.fuser_seed is None else args.fuser_seed
    torch.manual_seed(fuser_seed)
    receiver = AutoModelForCausalLM.from_pretrained(args.models / RECEIVER, dtype=args.dtype)
    sharer = AutoModelForCausalLM.from_pretrained(sharer_path, dtype=args.dtype)
    layers = layer_map(args.layer_map, receiver.config.num_hidden_layers, sharer.config.num_hidden_layers)
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, receiver_tokenizer, AutoTokenizer.from_pretrained(sharer_path),
        token_alignment=args.token_alignment,
        fuser_hidden_size=args.fuser_hidden_size, fuser_num_blocks=3, fuser_dropout=args.fuser_dropout, fusion=args.fusion,
        layer_map=layers, gate_init_logit=args.gate_init_logit,
    )  # fmt: skip
    people, _ = split_fuser_people(world, args.validation_people)
    rows = fuser_rows(world, people, args.questions_per_fact, args.seed, args.prompt, args.fuser_answer)
    features, stats = build_features(rows, receiver_tokenizer, max_length=256)
    print(f"fuser data: {stats}")
    out = runs / f"c2c-{run_name(args)}"
    train_fuser_resumably(
        model, receiver_tokenizer, features, out, steps=args.fuser_steps, batch_size=args.fuser_batch_size,
        lr=args.fuser_lr, save_steps=args.save_steps, seed=fuser_seed, save_total_limit=None,
    )  # fmt: skip
    print(f"C2C ({args.fusion}) -> {out}")


# --------------------------------------------------------------------------- evaluation


def report_dir(args: argparse.Namespace, results: Path) -> Path:
    """`gated/`, `letter-answers/gated/`, `open/gated-h64/`...: where a fuser's evaluation report goes (below
    `split_root`)."""
    results = split_root(args.split, results)
    if args.prompt == "open":
        output = results / "open" / args.fusion
    else:
        output = results / (args.fusion if args.fuser_answer == "text" else f"letter-answers/{args.fusion}")
    return output.with_name(tagged(output.name, args.tag))


def earlier_rows(output: Path, methods: list[str]) -> dict | None:
    """The report already in `output` less the methods about to be evaluated again (None when nothing is left), so
    that evaluating some methods adds rows to the table instead of replacing it."""
    if not (output / "results.json").is_file():
        return None
    earlier = load_report(output)
    kept = {method: rows for method, rows in earlier["results"].items() if method not in methods}
    if kept:
        print(f"keeping the earlier rows of {', '.join(kept)} from {output}")
    return {**earlier, "results": kept} if kept else None


def evaluate_heldout(args: argparse.Namespace, model: C2CForCausalLM, output: Path, config: dict) -> None:
    """`args.methods` over `model` on the questions of `--split` (test: the held-out people, benchmark `heldout`;
    validation: the fuser group's validation people) -> the report in `output`, its config updated with `config`
    (rows of other methods already there are kept). A test scoring is logged (`record_test_scoring`) and its report
    states its protocol: where the configuration was chosen (`--selected-on`) and how often it was scored."""
    world, receiver_tokenizer = load_world(args), AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)
    sharer_tokenizer = AutoTokenizer.from_pretrained(model.config.sharer_name_or_path)
    scoring = Scoring("generate", args.max_new_tokens, args.prompt)
    names = [m for m in args.methods if m not in (FactInPrompt.name, TrainedTextToText.name, Routing.name)]
    methods = build_methods(model, receiver_tokenizer, sharer_tokenizer, names, scoring, args.hint_tokens)
    if Routing.name in args.methods:  # routes by both models' choice likelihoods (open questions have no letters)
        routing = Routing(LM(model.receiver, receiver_tokenizer), LM(model.sharer, sharer_tokenizer),
                          Scoring("likelihood", args.max_new_tokens, args.prompt))  # fmt: skip
        people, _ = split_fuser_people(world, args.validation_people)
        routing.fit(fuser_questions(world, people, 1, args.seed)[:ROUTING_FIT_QUESTIONS])  # fuser-training people
        methods.append(routing)
    if TrainedTextToText.name in args.methods:
        reader_path = experiment_dirs(args)[0] / f"t2t-reader-{run_name(args)}"
        reader = AutoModelForCausalLM.from_pretrained(reader_path, dtype=args.dtype).eval()
        methods.append(TrainedTextToText(LM(reader, receiver_tokenizer), LM(model.sharer, sharer_tokenizer), scoring,
                                         args.hint_tokens))  # fmt: skip
    if FactInPrompt.name in args.methods:
        methods.append(FactInPrompt(LM(model.receiver, receiver_tokenizer), world, scoring))
    items = split_items(world, args.split, args.seed, args.validation_people)
    results = evaluate(methods, {split_benchmark(args.split): items}, batch_size=1)
    config = {
        "task": "private knowledge: held-out invented people, known to the sharer (LoRA) only; 2 questions per fact",
        "world": {role: len(people) for role, people in world.entities.items()}, "seed": args.seed,
        "prompt": args.prompt, "mode": "generate", "max_new_tokens": args.max_new_tokens,
        "hint_tokens": args.hint_tokens, "dtype": f"{args.dtype} bases", "threads": torch.get_num_threads(),
        "batch_size": 1,
    } | config  # fmt: skip
    if Routing.name in args.methods:
        config["routing"] = f"likelihood mode, fitted on {ROUTING_FIT_QUESTIONS} questions about fuser-training people"
    report = build_report(results, config)
    earlier = earlier_rows(output, args.methods)
    if earlier is not None:
        report = merge_reports([earlier, report])
    name = str(output.relative_to(args.results.resolve()))
    report = with_protocol(report, test_protocol(args, world, name, [m.name for m in methods], list(report["results"])))
    save_report(report, output)
    print(markdown_table(report))


def run_eval(args: argparse.Namespace) -> None:
    """A fuser's evaluation (`--methods`, all five by default) -> its report folder (see `report_dir`), with its
    gates and dynamic weights on the same prompts."""
    runs, reports = experiment_dirs(args)
    output, path = report_dir(args, reports), runs / f"c2c-{run_name(args)}"
    model = C2CForCausalLM.from_pretrained(path, dtype=args.dtype).eval()
    fuser = {"params": sum(p.numel() for p in model.fuser.parameters()),
             "open_gates_kv": model.fuser.open_gates().sum(0).tolist()}  # fmt: skip
    settings = {"fusion": args.fusion, "fuser_answer": args.fuser_answer, "fuser": fuser,
                "dtype": f"{args.dtype} bases, fp32 fuser"}  # fmt: skip
    if args.fuser_seed is not None:
        settings["fuser_seed"] = args.fuser_seed
    evaluate_heldout(args, model, output, settings)
    if args.fusion != "projection":  # which layers' gates are open, and the dynamic weights, on the same prompts
        scoring = Scoring("generate", args.max_new_tokens, args.prompt)
        items = split_items(load_world(args), args.split, args.seed, args.validation_people)
        questions = [scoring.question(item) for item in items]
        ids, mask = LM(model, AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)).encode(questions)
        gates = gate_map(model, ids, mask)
        gates = {**result_metadata(MEASUREMENT_PROTOCOL), **gates}  # a measurement of the fuser scored beside it
        (output / "gates.json").write_text(json.dumps(gates, indent=1) + "\n")
        plot_gates(gates, output / "gates.png")


def run_baselines(args: argparse.Namespace) -> None:
    """The methods without a fuser (`--methods`, default receiver, sharer, t2t, fact_in_prompt) -> `open/baselines/`:
    they depend on the sharer only, so they run in any session, before or after its fusers."""
    runs, reports = experiment_dirs(args)
    if "c2c" in args.methods:
        raise ValueError("The baselines stage evaluates no fuser: drop c2c from --methods (the eval stage runs it).")
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    receiver = AutoModelForCausalLM.from_pretrained(args.models / RECEIVER, dtype=args.dtype)
    sharer = AutoModelForCausalLM.from_pretrained(runs / "sharer-private", dtype=args.dtype)
    sharer_tokenizer = AutoTokenizer.from_pretrained(runs / "sharer-private")
    model = C2CForCausalLM.from_base_models(receiver, sharer, receiver_tokenizer, sharer_tokenizer)  # fuser unused
    output = split_root(args.split, reports) / ("open" if args.prompt == "open" else "") / "baselines"
    evaluate_heldout(args, model, output, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = ("sharer", "check", "fuser", "reader", "eval", "baselines", "summary", "segmentation", "seeds", "sealed")
    parser.add_argument("stage", choices=stages)
    add_world_arguments(parser)
    add_location_arguments(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the sharer's LoRA batch")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument(
        "--group-by-length", action="store_true",
        help="the sharer's LoRA batches hold texts of similar lengths (the fp32 rebuild; the bf16 runs trained without)",
    )  # fmt: skip
    parser.add_argument(
        "--run-token-mean", action="store_true",
        help="the sharer's LoRA loss: summed over a batch's tokens, divided by the run's mean tokens per batch "
        "(every token weighs the same, as in ungrouped batches) instead of by the batch's own token count",
    )  # fmt: skip
    parser.add_argument(
        "--store-adapters", type=Path,
        help="sharer: keep the trained adapter (float16) below this root, and rebuild the sharer from it when it is there",
    )  # fmt: skip
    parser.add_argument("--sharer-steps", type=int, default=200)
    parser.add_argument("--sharer-lr", type=float, default=1.5e-3)
    parser.add_argument("--fusion", default="gated", choices=("gated", "weighted", "projection"))
    parser.add_argument(
        "--prompt",
        choices=("open", "choices"),
        default="open",
        help="open: bare questions, answers read by the value they name; choices: lettered prompt",
    )
    parser.add_argument("--layer-map", choices=("terminal", "proportional", "top2", "top4", "top7"), default="terminal")
    parser.add_argument(
        "--token-alignment",
        choices=("longest", "span"),
        default="longest",
        help="the fuser's token alignment: one sharer token per receiver token (the method's), or "
        "the sharer reading the prompt in its own tokenization",
    )
    parser.add_argument("--fuser-hidden-size", type=int, default=256)
    parser.add_argument("--fuser-dropout", type=float, default=0.1)
    parser.add_argument(
        "--gate-init-logit", type=float, default=1.0, help="gated fusion: the gates' initial logit (library default)"
    )
    parser.add_argument("--save-steps", type=int, default=100)
    parser.add_argument("--fuser-steps", type=int, default=200)
    parser.add_argument("--fuser-lr", type=float, default=1e-3)
    parser.add_argument("--fuser-batch-size", type=int, default=8)
    parser.add_argument(
        "--fuser-seed", type=int, help="the fuser's init, dropout and batch order (default --seed; the world and the "
        "training questions stay --seed's); give it a --tag of its own, and the same flags to eval"
    )  # fmt: skip
    parser.add_argument(
        "--fuser-answer", choices=("text", "letter"), default="text", help="the fuser's training target"
    )
    parser.add_argument("--questions-per-fact", type=int, default=8)
    parser.add_argument("--tag", help="suffix of this run's folders (e.g. a longer schedule: --tag long)")
    parser.add_argument("--seed-tags", nargs="+", help="seeds: the runs (tags) of one fusion trained with other seeds")
    parser.add_argument(
        "--config", nargs="+", default=[],
        help="sealed: NAME=RUN,RUN,... (report folders under open/, one fuser seed each), one per configuration",
    )  # fmt: skip
    parser.add_argument("--compare-tag", help="summary: also pair each fusion with its run of this tag")
    parser.add_argument("--methods", nargs="+", help="eval: default all five; baselines: all but c2c")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hint-tokens", type=int, default=256)
    parser.add_argument(
        "--split", choices=SPLITS, default="test",
        help="eval/baselines: the people scored; choose on validation, score test once per configuration",
    )  # fmt: skip
    parser.add_argument(
        "--selected-on", choices=SPLITS,
        help="eval/baselines: where this configuration was chosen, recorded in the report's protocol (the sealed runs: "
        "validation; not stated in the earlier runs, whose settings were chosen on the test people)",
    )  # fmt: skip
    args = parser.parse_args()
    baselines = ["receiver", "sharer", "t2t", "t2t_trained", "routing", "fact_in_prompt"]
    args.methods = args.methods or {"eval": METHODS, "baselines": [m for m in METHODS if m != "c2c"],
                                    "sealed": baselines}.get(args.stage)  # fmt: skip
    torch.set_num_threads(args.threads)
    experiment_dirs(args)[0].mkdir(parents=True, exist_ok=True)
    stages = {"sharer": train_sharer, "check": check_sharer, "fuser": train_fuser, "reader": train_reader, "eval": run_eval,
              "baselines": run_baselines, "summary": summarize, "segmentation": segmentation,
              "seeds": seed_mean, "sealed": sealed_summary}  # fmt: skip
    stages[args.stage](args)


if __name__ == "__main__":
    main()
