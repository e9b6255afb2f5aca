"""Private-knowledge transfer between real pretrained models on a CPU (issue 7, parts 2 and 3).

The sharer (Qwen2.5-Coder-0.5B-Instruct) learns facts about invented people (`c2c_hf.world`) through a LoRA adapter;
the receiver (SmolLM2-135M-Instruct) cannot know them. A fuser is trained on multiple-choice questions about one
group of people and evaluated on questions about held-out people (the sharer knows both groups):

    python examples/real_cpu/knowledge.py sharer              # LoRA on the sharer, merged copy in runs/
    python examples/real_cpu/knowledge.py check               # does the sharer alone state the held-out facts?
    python examples/real_cpu/knowledge.py fuser --fusion gated     # (ablations: --fusion weighted | projection)
    python examples/real_cpu/knowledge.py eval --fusion gated      # all methods -> docs/results/real-cpu/knowledge/
    python examples/real_cpu/knowledge.py eval --fusion weighted --methods c2c   # adds to the rows already there
    python examples/real_cpu/knowledge.py summary                  # the ablation table and plot
    python examples/real_cpu/knowledge.py sharer --sharer recall   # + a LoRA that recalls facts at the name
    python examples/real_cpu/knowledge.py fuser --sharer recall --layer-map top2 ...
    python examples/real_cpu/knowledge.py sharer --sharer dense    # or: one LoRA that learns and recalls the facts
    python examples/real_cpu/knowledge.py fuser --token-alignment span ...   # the sharer reads its own tokenization
    python examples/real_cpu/knowledge.py segmentation --prompt open ...      # reports split by how names are split

The fuser stage runs the frozen sharer once per training question (`SharerCacheMemo`: later epochs reuse its KV),
checkpoints every `--save-steps` and resumes from its last checkpoint when run again.

Every stage is deterministic for `--seed`; models come from `../shared/tools/get-real-models` (`--models`).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import datasets
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices
from transformers.trainer_utils import get_last_checkpoint

from c2c_hf import (
    C2CDataCollator,
    C2CForCausalLM,
    SharerCacheMemo,
    build_features,
    build_layer_map,
    build_token_map,
    make_trainer,
)
from c2c_hf.analysis import gate_map, plot_gates
from c2c_hf.benchmarks import MCItem, format_prompt
from c2c_hf.demo import Oracle
from c2c_hf.evaluation import (
    LM,
    Z_95,
    Direct,
    Scoring,
    build_methods,
    build_report,
    evaluate,
    format_paired,
    hint_request,
    load_report,
    markdown_table,
    merge_reports,
    paired_difference,
    save_report,
    wilson_interval,
)
from c2c_hf.world import ATTRIBUTES, QUESTIONS, Entity, World

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "real-cpu" / "knowledge"
RESULTS = ROOT / "docs" / "results" / "real-cpu" / "knowledge"
RECEIVER, SHARER = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
DEFAULT_PEOPLE = (48, 16)  # fuser group, held-out group
SHARERS = ("statements", "recall", "dense")  # see --sharer
DTYPES = ("bfloat16", "float32")  # the bases'; the fuser stays fp32
METHODS = ["receiver", "sharer", "t2t", "c2c", "oracle"]  # the eval stage's default; baselines: all but c2c


def load_world(args: argparse.Namespace) -> World:
    return World.generate(args.seed, {"fuser": args.fuser_people, "heldout": args.heldout_people, "context": 0})


def experiment_dirs(args: argparse.Namespace, sharer: str | None = None) -> tuple[Path, Path]:
    """(runs, results) folders below `--runs` / `--results` (`.../knowledge/` by default): the root for the default
    world, `world-<F>-<H>/` for another size, and a `recall-sharer/` (`dense-sharer/`) subfolder for everything built
    on the recall (dense) sharer (`--sharer`; `recall-sharer-<tag>/` for another recipe of it, `--sharer-tag`; a
    recall sharer over the dense one in `dense-sharer/recall-sharer/`). `sharer` names another sharer than
    `--sharer` (a base of it), whose folders take no tag."""
    if args.sharer_tag and args.sharer == "statements":
        raise ValueError(
            f"--sharer-tag {args.sharer_tag} names a recipe of the recall or dense sharer: add --sharer recall|dense."
        )
    people = (args.fuser_people, args.heldout_people)
    suffix = [] if people == DEFAULT_PEOPLE else [f"world-{people[0]}-{people[1]}"]
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
        help="the bases' dtype: bfloat16 (every committed run) needs bf16 matrix units (AMX); else float32",
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


# --------------------------------------------------------------------------- 1. the sharer learns the facts


def sharer_texts(world: World, count: int, seed: int, tokenizer) -> list[str]:
    """Biographies (plain text) and chat turns (an open question or the T2T hint request -> the fact's canonical
    statement; a multiple-choice question -> its letter), about every person of the fuser and held-out groups."""
    rng = random.Random(f"sharer-{seed}")
    known = world.entities["fuser"] + world.entities["heldout"]
    texts = []
    for _ in range(count):
        entity, attribute, kind = rng.choice(known), rng.choice(list(ATTRIBUTES)), rng.random()
        if kind < 0.4:
            texts.append(world.biography(entity, rng, rng.randint(1, 4)) + tokenizer.eos_token)
            continue
        item = world.question(entity, attribute, rng)
        if kind < 0.6:
            user, answer = rng.choice(QUESTIONS[attribute]).format(name=entity.name), world.statement(entity, attribute)
        elif kind < 0.8:
            user, answer = hint_request(item), world.statement(entity, attribute)
        else:
            user, answer = format_prompt(item), item.letters[item.gold]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


# Kinds of recall text, each drawn below its bound of one uniform draw per text.
RECALL_MIX = (("cut", 0.4), ("roster", 0.6), ("value-first", 0.85), ("hint", 1.0))
DENSE_MIX = (("roster", 0.35), ("biography", 0.5), ("cut", 0.75), ("value-first", 0.9), ("hint", 1.0))


def recall_texts(
    world: World, count: int, seed: int, tokenizer, receiver_tokenizer, mix: tuple = RECALL_MIX
) -> list[str]:
    """Texts that make the sharer recall a fact where it reads the person's name, so that the fact is in its cache
    of a question (what C2C fuses), about every person of the fuser and held-out groups. Kinds (`mix`): `cut`, a
    question rendered as the receiver's chat prompt (as C2C feeds it), cut after the name and followed by the value
    ("...In which city does Trenkai Dublin"); `roster`, six "name value" lines; `value-first`, an open question
    answered value first ("Dublin. Trenkai lives in Dublin.") in either model's chat template; `hint`, the open T2T
    hint request answered with the fact's statement; `biography` (`DENSE_MIX` only), one to four of a person's facts
    in plain sentences. `RECALL_MIX` trains over the statements sharer; `DENSE_MIX`, richer in facts per token,
    teaches the facts and their recall in one LoRA over the base sharer."""
    rng = random.Random(f"recall-{seed}")
    known = world.entities["fuser"] + world.entities["heldout"]
    texts = []
    for _ in range(count):
        entity, attribute, draw = rng.choice(known), rng.choice(list(ATTRIBUTES)), rng.random()
        kind = next(name for name, bound in mix if draw < bound)
        value, question = entity.value(attribute), rng.choice(QUESTIONS[attribute]).format(name=entity.name)
        if kind == "cut":
            prompt = receiver_tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False)
            texts.append(f"{prompt[: prompt.index(entity.name) + len(entity.name)]} {value}")
        elif kind == "roster":
            lines = [(rng.choice(known), rng.choice(list(ATTRIBUTES))) for _ in range(6)]
            texts.append("\n".join(f"{e.name} {e.value(a)}" for e, a in lines) + tokenizer.eos_token)
        elif kind == "biography":
            texts.append(world.biography(entity, rng, rng.randint(1, 4)) + tokenizer.eos_token)
        else:
            if kind == "value-first":
                reply = f"{value}. {world.statement(entity, attribute)}"
                template = rng.choice((tokenizer, receiver_tokenizer))
            else:
                question = hint_request(world.question(entity, attribute, rng), "open")
                reply, template = world.statement(entity, attribute), tokenizer
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
            texts.append(template.apply_chat_template(messages, tokenize=False))
    return texts


def last_sharer_checkpoint(runs: Path) -> Path | None:
    """The sharer LoRA's newest complete checkpoint under `runs`, if any."""
    complete = [folder for folder in runs.glob("sharer-lora-checkpoint-*") if (folder / "state.pt").is_file()]
    return max(complete, key=lambda folder: int(folder.name.rsplit("-", 1)[1]), default=None)


def train_sharer(args: argparse.Namespace) -> None:
    """LoRA (peft) on every linear layer of the sharer; the merged model is saved as a plain checkpoint. The adapter,
    optimizer and schedule are checkpointed every 20 steps (`sharer-lora-checkpoint-<step>/`, complete once its
    `state.pt` is there: a process killed while saving leaves the previous one); running the stage again resumes
    from the last complete one. The adapter goes to `sharer-lora/`, the loss log beside the reports.
    `--sharer statements` trains the base sharer on `sharer_texts`; `--sharer recall` trains a second LoRA on
    `recall_texts` over the merged statements (`--recall-over dense`: dense) sharer of the same world; `--sharer
    dense` one LoRA over the base sharer on `recall_texts` in the `DENSE_MIX`."""
    world, (runs, reports) = load_world(args), experiment_dirs(args)
    tokenizer = AutoTokenizer.from_pretrained(args.models / SHARER)
    under = experiment_dirs(args, args.recall_over)[0] / "sharer-private"
    base = under if args.sharer == "recall" else args.models / SHARER
    model = AutoModelForCausalLM.from_pretrained(base, dtype=args.dtype)
    torch.manual_seed(args.seed)
    checkpoint = last_sharer_checkpoint(runs)
    if checkpoint:
        model = PeftModel.from_pretrained(model, checkpoint, is_trainable=True)
    else:
        lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])  # fmt: skip
        model = get_peft_model(model, lora)
    count = args.sharer_steps * args.batch_size
    if args.sharer == "statements":
        texts = sharer_texts(world, count, args.seed, tokenizer)
    else:
        mix = RECALL_MIX if args.sharer == "recall" else DENSE_MIX
        receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
        texts = recall_texts(world, count, args.seed, tokenizer, receiver_tokenizer, mix)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    if args.group_by_length:  # batches of similar lengths: 44% fewer padded tokens to compute (transformers' helper)
        order = get_length_grouped_indices(lengths, args.batch_size, generator=torch.Generator().manual_seed(args.seed))
        texts = [texts[i] for i in order]
    # A batch's summed token loss is divided by its own count of predicted tokens (the model's mean), or with
    # --run-token-mean by the run's mean count per batch: every token then weighs the same whatever its batch.
    tokens_per_batch = (sum(lengths) - len(texts)) / args.sharer_steps if args.run_token_mean else None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.sharer_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.0, 1 - step / args.sharer_steps))  # fmt: skip
    start, log, seconds = 0, [], 0.0
    if checkpoint:
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"]), schedule.load_state_dict(state["schedule"])
        start, log, seconds = state["step"], state["log"], state["seconds"]
        print(f"resuming the sharer's LoRA at step {start}")
    model.train()
    began = time.perf_counter() - seconds
    for step in range(start, args.sharer_steps):
        batch = tokenizer(texts[step * args.batch_size : (step + 1) * args.batch_size], padding=True,
                          add_special_tokens=False, return_tensors="pt")  # fmt: skip
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels, num_items_in_batch=tokens_per_batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        log.append(loss.item())
        if step % 20 == 19:
            print(f"sharer step {step + 1}/{args.sharer_steps} loss {sum(log[-20:]) / 20:.3f} "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
        if step % 20 == 19 and step + 1 < args.sharer_steps:
            checkpoint = runs / f"sharer-lora-checkpoint-{step + 1}"
            model.save_pretrained(checkpoint)
            state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step + 1,
                     "log": log, "seconds": time.perf_counter() - began}  # fmt: skip
            torch.save(state, checkpoint / "state.pt.partial")
            (checkpoint / "state.pt.partial").replace(checkpoint / "state.pt")  # complete: the older ones can go
            for older in set(runs.glob("sharer-lora-checkpoint-*")) - {checkpoint}:
                shutil.rmtree(older)
    out = runs / "sharer-private"
    model.save_pretrained(runs / "sharer-lora")  # the adapter alone (peft)
    model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)
    settings = {name: getattr(args, name) for name in ("sharer", "recall_over", "sharer_tag", "sharer_steps",
                                                       "batch_size", "lora_r", "sharer_lr", "group_by_length",
                                                       "run_token_mean", "dtype", "threads", "seed")}  # fmt: skip
    record = {"settings": settings, "losses": log, "seconds": time.perf_counter() - began}
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "sharer-log.json").write_text(json.dumps(record))
    print(f"sharer with private knowledge -> {out}")


# --------------------------------------------------------------------------- 2. the fuser


def fuser_rows(
    world: World, people: list[Entity], per_fact: int, seed: int, prompt: str, answer: str
) -> datasets.Dataset:
    """Questions about `people` as chat rows. `prompt="choices"`: the harness's multiple-choice prompt, answered
    with the right choice's text (`answer="text"`, as the demo's models answer) or its letter (`"letter"`);
    `prompt="open"`: the bare question, answered with the fact's canonical statement ("Trenkai lives in Dublin.")."""
    rng = random.Random(f"fuser-{seed}")
    items = [world.question(e, a, rng, tag=f"#{k}") for e in people for a in ATTRIBUTES for k in range(per_fact)]
    random.Random(seed).shuffle(items)

    def row(item: MCItem) -> dict:
        if prompt == "open":
            user, reply = item.question, world.fact_hint(item)
        else:
            user, reply = format_prompt(item), item.choices[item.gold] if answer == "text" else item.letters[item.gold]
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}

    return datasets.Dataset.from_list([row(item) for item in items])


def split_fuser_people(world: World, validation: int) -> tuple[list[Entity], list[Entity]]:
    """The fuser group's people: those the fuser trains on, and the last `validation` (known to the sharer, never
    trained on) for choosing a checkpoint without looking at the held-out people."""
    people = world.entities["fuser"]
    return people[: len(people) - validation], people[len(people) - validation :]


def run_name(args: argparse.Namespace) -> str:
    """`gated`, `gated-letter`, `open-gated-h64`...: the fuser's folder under runs/ and its report's under docs/."""
    parts = (["open"] if args.prompt == "open" else []) + [args.fusion]
    parts += ["letter"] if args.prompt == "choices" and args.fuser_answer == "letter" else []
    return "-".join(parts + ([args.tag] if args.tag else []))


def tagged(name: str, tag: str | None) -> str:
    """`name-tag`, or `name` for an untagged run: the folders and files of run `tag`."""
    return f"{name}-{tag}" if tag else name


def layer_map(strategy: str, receiver_layers: int, sharer_layers: int) -> str | list[int]:
    """`terminal` / `proportional` (the library's), or `top<k>`: the terminal map with every receiver layer taking
    at least the sharer's k-th layer from the top. `top2`: the sharer's last two layers, where the recall sharer
    holds a fact at the name; `top4`: also layers 20-21, whose values hold it at the positions after the name;
    `top7`: layers 17-23, where the dense recall sharer's values hold it at the name (its `sharer-kv-probe.json`)."""
    if not strategy.startswith("top"):
        return strategy
    terminal = build_layer_map("terminal", receiver_layers, sharer_layers)
    return [max(s, sharer_layers - int(strategy.removeprefix("top"))) for s in terminal]


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
    training = TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=args.fuser_steps, per_device_train_batch_size=args.fuser_batch_size,
        learning_rate=args.fuser_lr, weight_decay=0.01, warmup_steps=args.fuser_steps // 10, lr_scheduler_type="linear",
        max_grad_norm=1.0, logging_steps=10, save_steps=args.save_steps, save_total_limit=None, report_to="none", use_cpu=True,
        seed=fuser_seed, disable_tqdm=True,
    )  # fmt: skip
    collator = C2CDataCollator.for_tokenizer(receiver_tokenizer, SharerCacheMemo(model))  # the sharer once per prompt
    trainer = make_trainer(model, training, features, collator)
    began = time.perf_counter()
    last = get_last_checkpoint(training.output_dir) if Path(training.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=last)  # None: from scratch
    model.save_pretrained(out)
    receiver_tokenizer.save_pretrained(out)
    (out / "train-log.json").write_text(
        json.dumps({"log": trainer.state.log_history, "seconds": time.perf_counter() - began})
    )
    print(f"C2C ({args.fusion}) -> {out}")


# --------------------------------------------------------------------------- 3. evaluation


def heldout_items(world: World, seed: int) -> list[MCItem]:
    return world.questions("heldout", random.Random(f"eval-{seed}"), per_fact=2)


def check_sharer(args: argparse.Namespace) -> None:
    """The sharer alone on the first question about each held-out fact (open prompt, greedy, batches of 8): whether
    it learned the facts, before fusers are built on it (`sharer-check.json` beside its reports, in the evaluation's
    report format; the evaluation's sharer row asks both questions about each fact, one at a time)."""
    world, (runs, reports) = load_world(args), experiment_dirs(args)
    sharer = AutoModelForCausalLM.from_pretrained(runs / "sharer-private", dtype=args.dtype).eval()
    sharer_lm = LM(sharer, AutoTokenizer.from_pretrained(runs / "sharer-private"))
    method = Direct("sharer", sharer_lm, Scoring("generate", args.max_new_tokens, "open"))
    items = heldout_items(world, args.seed)[::2]  # question #0 of each fact
    config = {
        "task": "the sharer alone: question #0 about each held-out fact", "sharer": args.sharer,
        "sharer_tag": args.sharer_tag, "seed": args.seed, "prompt": "open", "mode": "generate",
        "max_new_tokens": args.max_new_tokens, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "batch_size": 8,
    }  # fmt: skip
    report = build_report(evaluate([method], {"heldout": items}, batch_size=8), config)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "sharer-check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown_table(report))


def report_dir(args: argparse.Namespace, results: Path) -> Path:
    """`gated/`, `letter-answers/gated/`, `open/gated-h64/`...: where a fuser's evaluation report goes."""
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
    """`args.methods` over `model` on the held-out questions -> the report in `output`, its config updated with
    `config` (rows of other methods already there are kept)."""
    world, receiver_tokenizer = load_world(args), AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)
    sharer_tokenizer = AutoTokenizer.from_pretrained(model.config.sharer_name_or_path)
    scoring = Scoring("generate", args.max_new_tokens, args.prompt)
    names = [m for m in args.methods if m != "oracle"]
    methods = build_methods(model, receiver_tokenizer, sharer_tokenizer, names, scoring, args.hint_tokens)
    if "oracle" in args.methods:
        methods.append(Oracle(LM(model.receiver, receiver_tokenizer), world, scoring))
    results = evaluate(methods, {"heldout": heldout_items(world, args.seed)}, batch_size=1)
    config = {
        "task": "private knowledge: held-out invented people, known to the sharer (LoRA) only; 2 questions per fact",
        "world": {role: len(people) for role, people in world.entities.items()}, "seed": args.seed,
        "prompt": args.prompt, "mode": "generate", "max_new_tokens": args.max_new_tokens,
        "hint_tokens": args.hint_tokens, "dtype": f"{args.dtype} bases", "threads": torch.get_num_threads(),
        "batch_size": 1,
    } | config  # fmt: skip
    report = build_report(results, config)
    earlier = earlier_rows(output, args.methods)
    if earlier is not None:
        report = merge_reports([earlier, report])
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
        questions = [scoring.question(item) for item in heldout_items(load_world(args), args.seed)]
        ids, mask = LM(model, AutoTokenizer.from_pretrained(model.config.receiver_name_or_path)).encode(questions)
        gates = gate_map(model, ids, mask)
        (output / "gates.json").write_text(json.dumps(gates, indent=1) + "\n")
        plot_gates(gates, output / "gates.png")


def run_baselines(args: argparse.Namespace) -> None:
    """The methods without a fuser (`--methods`, default receiver, sharer, t2t, oracle) -> `open/baselines/`: they
    depend on the sharer only, so they run in any session, before or after its fusers."""
    runs, reports = experiment_dirs(args)
    if "c2c" in args.methods:
        raise ValueError("The baselines stage evaluates no fuser: drop c2c from --methods (the eval stage runs it).")
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    receiver = AutoModelForCausalLM.from_pretrained(args.models / RECEIVER, dtype=args.dtype)
    sharer = AutoModelForCausalLM.from_pretrained(runs / "sharer-private", dtype=args.dtype)
    sharer_tokenizer = AutoTokenizer.from_pretrained(runs / "sharer-private")
    model = C2CForCausalLM.from_base_models(receiver, sharer, receiver_tokenizer, sharer_tokenizer)  # fuser unused
    output = reports / ("open" if args.prompt == "open" else "") / "baselines"
    evaluate_heldout(args, model, output, {})


# --------------------------------------------------------------------------- 4. the ablation table

ABLATION = {"projection": "projection only (no receiver input, no gate)", "weighted": "+ fusion (receiver input, weight)",
            "gated": "+ gate (C2C)"}  # fmt: skip


def ablation_pairs(
    rows: dict[str, dict], baselines: dict[str, dict], compared: dict[str, dict], compare_tag: str | None
) -> list[dict]:
    """Each fusion against the receiver alone and text-to-text (the issue's targets), each ablation step against
    the one before it (the paper's order), and each fusion against the same fusion of run `compare_tag`
    (`compared`), paired on the same held-out questions."""
    steps = [f for f in ABLATION if f in rows]
    pairs = [(f, m) for f in steps for m in ("receiver", "t2t") if m in baselines] + list(zip(steps[1:], steps))
    pairs += [(f, f"{f}-{compare_tag}") for f in steps if f in compared]
    every = rows | baselines | {f"{f}-{compare_tag}": row for f, row in compared.items()}  # name -> held-out summary
    names = ABLATION | {f"{f}-{compare_tag}": f"{ABLATION[f]}, {compare_tag}" for f in compared}
    return [{"first": names.get(a, a), "second": names.get(b, b),
             **paired_difference(every[a]["predictions"], every[b]["predictions"])} for a, b in pairs]  # fmt: skip


def heldout_baseline_rows(report_dir: Path) -> dict[str, dict]:
    """Method -> the held-out summary of every method but C2C in the report in `report_dir`."""
    return {m: r["heldout"] for m, r in load_report(report_dir)["results"].items() if m != "c2c"}


def heldout_c2c_rows(results: Path, tag: str | None) -> dict[str, dict]:
    """Fusion -> the held-out C2C summary of each fusion's report of run `tag` under `results`."""
    reports = {f: load_report(results / tagged(f, tag)) for f in ABLATION if (results / tagged(f, tag)).is_dir()}
    return {f: r["results"]["c2c"]["heldout"] for f, r in reports.items()}


def summarize(args: argparse.Namespace) -> None:
    """`ablation-<tag>.md` / `.json` / `.png` from the three fusions' reports of run `--tag` (C2C rows) and the
    baselines, with the paired differences of `ablation_pairs` (`--compare-tag`: also against another run's)."""
    from matplotlib.figure import Figure

    results = experiment_dirs(args)[1] / ("open" if args.prompt == "open" else "")
    rows = heldout_c2c_rows(results, args.tag)
    compared = heldout_c2c_rows(results, args.compare_tag) if args.compare_tag else {}
    stem = tagged("ablation", args.tag)
    # the baselines stage's report, or (earlier runs) the baseline rows of the gated fuser's report
    baselines_dir = results / "baselines" if (results / "baselines").is_dir() else results / tagged("gated", args.tag)
    baselines = heldout_baseline_rows(baselines_dir)
    table = {**{m: baselines[m] for m in ("receiver", "t2t") if m in baselines},
             **{ABLATION[f]: rows[f] for f in ABLATION if f in rows},
             **{m: baselines[m] for m in ("sharer", "oracle") if m in baselines}}  # fmt: skip
    summary = {name: {k: r[k] for k in ("accuracy", "ci95", "n", "latency_median_s")} for name, r in table.items()}
    paired = ablation_pairs(rows, baselines, compared, args.compare_tag)
    (results / f"{stem}.json").write_text(json.dumps({"methods": summary, "paired": paired}, indent=2) + "\n")
    lines = ["| method | held-out accuracy % [95% CI] | median latency |", "|---|---|---|"]
    for name, r in summary.items():
        low, high = r["ci95"]
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}] | {r['latency_median_s']:.3f} s |"
        )
    lines += ["", "Paired on the same questions: points [95% interval] (questions only the first / only the second "
              "gets right).", "", "| first | second | first - second |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {p['first']} | {p['second']} | {format_paired(p)} |" for p in paired]
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    names = list(summary)
    accuracy = [100 * summary[n]["accuracy"] for n in names]
    errors = [[100 * (summary[n]["accuracy"] - summary[n]["ci95"][0]) for n in names],
              [100 * (summary[n]["ci95"][1] - summary[n]["accuracy"]) for n in names]]  # fmt: skip
    axes.barh(names, accuracy, xerr=errors, color=["#bbb" if n not in ABLATION.values() else "#3a7" for n in names])
    axes.invert_yaxis()
    axes.set_xlabel("held-out accuracy (%), 95% Wilson interval")
    axes.set_xlim(0, 100)
    figure.suptitle("Private knowledge: SmolLM2-135M <- Qwen2.5-Coder-0.5B + LoRA, fusion ablation", fontsize=10)
    figure.savefig(results / f"{stem}.png", dpi=120)
    print("\n".join(lines))


def name_splits(args: argparse.Namespace, names: set[str]) -> dict[str, bool]:
    """Name -> whether the method's per-token alignment hands the sharer other tokens for " <name>" than the
    sharer's own tokenization of it (e.g. "ĠK ron vo", piece by piece, for its "ĠKron vo")."""
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.models / RECEIVER)
    sharer_tokenizer = AutoTokenizer.from_pretrained(experiment_dirs(args)[0] / "sharer-private")
    token_map = build_token_map(receiver_tokenizer, sharer_tokenizer)

    def sharer_ids(name: str) -> list[int]:
        return sharer_tokenizer(f" {name}", add_special_tokens=False)["input_ids"]

    def aligned_ids(name: str) -> list[int]:
        return token_map.apply(torch.tensor(receiver_tokenizer(f" {name}", add_special_tokens=False)["input_ids"])).tolist()

    return {name: aligned_ids(name) != sharer_ids(name) for name in sorted(names)}


def segmentation(args: argparse.Namespace) -> None:
    """`open/segmentation.{md,json}`: every held-out report's accuracy on the questions about names the per-token
    alignment hands the sharer as the sharer itself would tokenize them, and on the others (`name_splits`)."""
    results = experiment_dirs(args)[1] / "open"
    rows = heldout_baseline_rows(results / "baselines")
    for folder in sorted(p for p in results.iterdir() if (p / "results.json").is_file() and p.name != "baselines"):
        rows[f"C2C {folder.name}"] = load_report(folder)["results"]["c2c"]["heldout"]
    people = {p["id"].split("/")[0] for p in rows["receiver"]["predictions"]}
    split = name_splits(args, people)
    table = {}
    for method, row in rows.items():
        table[method] = {}
        for group, differs in (("alike", False), ("split differently", True)):
            correct = [p["correct"] for p in row["predictions"] if split[p["id"].split("/")[0]] == differs]
            table[method][group] = {"n": len(correct), "accuracy": sum(correct) / len(correct),
                                    "ci95": wilson_interval(sum(correct), len(correct))}  # fmt: skip
    summary = {"names_split_differently": sorted(n for n, d in split.items() if d), "names": len(split), "rows": table}
    (results / "segmentation.json").write_text(json.dumps(summary, indent=1) + "\n")
    counts = {g: table["receiver"][g]["n"] for g in ("alike", "split differently")}
    lines = [f"{sum(split.values())} of {len(split)} held-out names are split differently by the per-token alignment.",
             "", f"| method | names alike ({counts['alike']} q) | names split differently ({counts['split differently']} q) |",
             "|---|---|---|"]  # fmt: skip
    for method, groups in table.items():
        cells = [f"{100 * g['accuracy']:.1f} [{100 * g['ci95'][0]:.1f}, {100 * g['ci95'][1]:.1f}]" for g in groups.values()]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    (results / "segmentation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def seed_mean(args: argparse.Namespace) -> None:
    """`open/seeds-<fusion>-<first tag>.{md,json}`: one fusion trained with several seeds (runs `--seed-tags`): each
    run's accuracy, their mean, and the mean's paired difference to each baseline, per question the mean correctness
    over the runs minus the baseline's (a normal interval over the questions; the seeds' spread is shown, not in it)."""
    results = experiment_dirs(args)[1] / "open"
    runs = {t: load_report(results / tagged(args.fusion, t))["results"]["c2c"]["heldout"] for t in args.seed_tags}
    baselines = heldout_baseline_rows(results / "baselines")
    correct = {t: {p["id"]: float(p["correct"]) for p in r["predictions"]} for t, r in runs.items()}
    ids = sorted(next(iter(correct.values())))
    mean = {i: sum(c[i] for c in correct.values()) / len(correct) for i in ids}  # per question, over the runs
    paired = {}
    for method in ("receiver", "t2t"):
        baseline = {p["id"]: float(p["correct"]) for p in baselines[method]["predictions"]}
        if any(c.keys() != baseline.keys() for c in correct.values()):
            raise ValueError(f"The runs {args.seed_tags} and the {method} baseline were asked different questions.")
        differences = [mean[i] - baseline[i] for i in ids]
        centre = sum(differences) / len(ids)
        half = Z_95 * (sum((d - centre) ** 2 for d in differences) / (len(ids) - 1) / len(ids)) ** 0.5
        paired[method] = {"difference": centre, "ci95": [centre - half, centre + half], "n": len(ids)}
    summary = {"fusion": args.fusion, "runs": {t: r["accuracy"] for t, r in runs.items()},
               "mean": sum(mean.values()) / len(ids), "paired": paired,
               "latency_median_s": {t: r["latency_median_s"] for t, r in runs.items()}}  # fmt: skip
    stem = f"seeds-{tagged(args.fusion, args.seed_tags[0])}"
    (results / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"{args.fusion}, runs {', '.join(f'{t}: {100 * a:.1f}%' for t, a in summary['runs'].items())}; "
             f"mean {100 * summary['mean']:.1f}%.", "", "| mean over the runs minus | points [95% interval] |", "|---|---|"]  # fmt: skip
    lines += [f"| {m} | {100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] |"
              for m, d in paired.items()]  # fmt: skip
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "stage", choices=("sharer", "check", "fuser", "eval", "baselines", "summary", "segmentation", "seeds")
    )
    add_world_arguments(parser)
    add_location_arguments(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the sharer's LoRA batch")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument(
        "--group-by-length", action="store_true",
        help="the sharer's LoRA batches hold texts of similar lengths (every committed sharer trained without)",
    )  # fmt: skip
    parser.add_argument(
        "--run-token-mean", action="store_true",
        help="the sharer's LoRA loss: summed over a batch's tokens, divided by the run's mean tokens per batch "
        "(every token weighs the same, as in ungrouped batches) instead of by the batch's own token count",
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
    parser.add_argument("--token-alignment", choices=("longest", "span"), default="longest",
                        help="the fuser's token alignment: one sharer token per receiver token (the method's), or "
                        "the sharer reading the prompt in its own tokenization")
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
    parser.add_argument("--compare-tag", help="summary: also pair each fusion with its run of this tag")
    parser.add_argument("--methods", nargs="+", help="eval: default all five; baselines: all but c2c")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hint-tokens", type=int, default=256)
    args = parser.parse_args()
    args.methods = args.methods or {"eval": METHODS, "baselines": [m for m in METHODS if m != "c2c"]}.get(args.stage)
    torch.set_num_threads(args.threads)
    experiment_dirs(args)[0].mkdir(parents=True, exist_ok=True)
    stages = {"sharer": train_sharer, "check": check_sharer, "fuser": train_fuser, "eval": run_eval,
              "baselines": run_baselines, "summary": summarize, "segmentation": segmentation,
              "seeds": seed_mean}  # fmt: skip
    stages[args.stage](args)


if __name__ == "__main__":
    main()
