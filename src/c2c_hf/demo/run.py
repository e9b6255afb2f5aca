"""One demo run: world -> tokenizers and base models -> fuser -> evaluation -> save and reload -> report.

Its settings are `DemoConfig`; why every receiver layer reads sharer layer 0 is in the package docstring.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
)

from ..analysis import gate_map
from ..atomic import atomic_folder
from ..data import C2CDataCollator, MCItem, build_features, format_prompt
from ..evaluation import (
    LM,
    METHODS,
    Method,
    Prediction,
    Routing,
    Scoring,
    build_methods,
    evaluate,
    hinted_prompt,
    respond,
)
from ..modeling_c2c import C2CForCausalLM
from ..training import SharerCacheMemo, make_trainer
from .bases import (
    answer_text,
    build_receiver,
    build_sharer,
    pretrain,
    receiver_examples,
    receiver_probe,
    sharer_examples,
    train_tokenizers,
)
from .config import UNTIL_LEARNT, DemoConfig
from .hint_reader import TrainedTextToText, train_hint_reader
from .report import TASKS, claim_output_folder, describe_models, parameter_count, write_demo_report
from .schedule import answer_accuracy
from .world import ATTRIBUTES, World


class Stopwatch:
    """Wall-clock seconds per stage."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.began = time.perf_counter()

    def stage(self, name: str, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = function()
        self.times[name] = round(time.perf_counter() - start, 2)
        return result

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.began, 2)


# --------------------------------------------------------------------------- fuser training


def fuser_items(world: World, config: DemoConfig) -> list[MCItem]:
    """The fuser's questions: every fact of every fuser-training person, asked `fuser_questions_per_fact` ways, and
    a `fuser_country_share` of country questions about the same people, shuffled (seeded)."""
    rng = random.Random(f"fuser-data-{config.seed}")
    items = world.questions("fuser", rng, per_fact=config.fuser_questions_per_fact)
    countries = round(len(items) * config.fuser_country_share / max(1.0 - config.fuser_country_share, 1e-9))
    per_person = -(-countries // max(len(world.entities["fuser"]), 1))
    items += world.country_questions("fuser", rng, per_person=per_person)[:countries]
    rng.shuffle(items)
    return items


def fuser_dataset(items: Sequence[MCItem]) -> datasets.Dataset:
    """Chat rows: the harness's multiple-choice prompt (`format_prompt`) as the user turn, the correct choice's text
    as the answer (what the receiver answers)."""
    return datasets.Dataset.from_list([
        {"messages": [{"role": "user", "content": format_prompt(i)}, {"role": "assistant", "content": answer_text(i)}]}
        for i in items
    ])  # fmt: skip


def train_fuser(
    model: C2CForCausalLM, receiver_tokenizer, items: Sequence[MCItem], config: DemoConfig, workdir: str
) -> tuple[list[float], dict[str, Any]]:
    """The project's training path: `build_features` + `C2CDataCollator` + `make_trainer` (stock Trainer) on the
    chat rows of `items`. The sharer runs once per distinct prompt (`SharerCacheMemo`): the rows repeat over the
    epochs. With `fuser_schedule="until_learnt"` the rate stays constant until the C2C model answers
    `probe_questions` of `items` (training questions) at `fuser_probe_threshold`. Returns the logged losses and what
    the schedule did."""
    features, _ = build_features(fuser_dataset(items), receiver_tokenizer, max_length=256)
    schedule = None
    if config.fuser_schedule == UNTIL_LEARNT:
        probe = list(items[: config.probe_questions])
        texts = [format_prompt(item) for item in probe]
        schedule = config.until_learnt(
            "fuser", lambda: answer_accuracy(LM(model, receiver_tokenizer), probe, texts, config.max_new_tokens), print
        )
    steps = schedule.max_steps if schedule else config.fuser_steps
    args = TrainingArguments(
        output_dir=workdir, max_steps=steps, per_device_train_batch_size=config.fuser_batch_size,
        learning_rate=config.fuser_lr, weight_decay=0.01, warmup_steps=max(1, config.fuser_steps // 10),
        lr_scheduler_type="linear" if schedule else config.fuser_schedule,
        lr_scheduler_kwargs=_schedule_kwargs(config), max_grad_norm=1.0, logging_steps=max(1, config.fuser_steps // 4),
        save_strategy="no", report_to="none", use_cpu=True, seed=config.seed, data_seed=config.seed,
        dataloader_num_workers=0, disable_tqdm=False,
    )  # fmt: skip
    collator = C2CDataCollator(pad_token_id=receiver_tokenizer.pad_token_id, sharer_caches=SharerCacheMemo(model))
    trainer = make_trainer(model, args, features, collator, callbacks=[schedule] if schedule else [])
    if schedule:  # the Trainer's own optimizer, with the schedule's rate (a scheduler given before `train` is kept)
        trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.create_optimizer(), schedule.factor)
    trainer.train()
    model.eval()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, ({"fuser_schedule": schedule.summary()} if schedule else {})


def _schedule_kwargs(config: DemoConfig) -> dict[str, Any]:
    """The fuser schedule's arguments: warm-up-stable-decay spends its last 20% of steps decaying (cosine) to 0, so a
    fuser that leaves its loss plateau late still trains at the full learning rate (validation: +4.7 and +5.2 points
    over linear decay, experiments/demo_recipe/results/choices.md)."""
    return {"num_decay_steps": config.fuser_steps // 5} if config.fuser_schedule == "warmup_stable_decay" else {}


# --------------------------------------------------------------------------- evaluation


def demo_questions(world: World, config: DemoConfig) -> dict[str, list[MCItem]]:
    """The scored question sets, `"<task>-<split>"` for each task in `TASKS` and split in `config.splits`:
    `transfer`, one question on every fact of every person of the split (a fact only the sharer knows); and
    `complementary`, `country_questions_per_person` country questions on each (the person's city, which only the
    sharer knows, and that city's country, which only the receiver knows). Seeded phrasing, choices and order."""
    questions = {}
    for split in config.splits:
        rng = random.Random(f"eval-{split}-{config.seed}")
        questions[f"transfer-{split}"] = world.questions(split, rng)
        questions[f"complementary-{split}"] = world.country_questions(split, rng, config.country_questions_per_person)
    return questions


def routing_fit_questions(world: World, config: DemoConfig) -> list[MCItem]:
    """The questions the routing baseline's classifier is fitted on: about fuser-training people (seeded)."""
    return world.questions("fuser", random.Random(f"routing-{config.seed}"))[: config.routing_fit_items]


class FactInPrompt(Method):
    """The receiver reading the one fact of the sharer's it needs, stated correctly in its prompt (the text-to-text
    prompt with the true fact as the hint). It measures how well the receiver reads and, for a country question,
    combines a stated fact with its own knowledge; it is not a bound on C2C, which reads the sharer's cache."""

    name = "fact_in_prompt"

    def __init__(self, receiver: LM, world: World, scoring: Scoring):
        self.receiver, self.world, self.scoring = receiver, world, scoring

    def answer(self, items: list[MCItem]) -> list[Prediction]:
        questions = [hinted_prompt(item, self.world.fact_hint(item), self.scoring.prompt) for item in items]
        return respond(self.receiver, items, questions, self.scoring)


@torch.no_grad()
def answer_example(
    reloaded: C2CForCausalLM, model: C2CForCausalLM, tokenizer: PreTrainedTokenizerBase, item: MCItem
) -> dict[str, Any]:
    """The reloaded C2C model answers one question with `generate` (checked against the in-memory model)."""
    text = LM(reloaded, tokenizer).render(format_prompt(item))
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    output = reloaded.generate(**inputs, max_new_tokens=4, do_sample=False)
    c2c_answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    same = torch.equal(output, model.generate(**inputs, max_new_tokens=4, do_sample=False))
    receiver_output = reloaded.receiver.generate(**inputs, max_new_tokens=4, do_sample=False)
    receiver_answer = tokenizer.decode(receiver_output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return {
        "question": item.question,
        "choices": dict(zip(item.letters, item.choices)),
        "gold": item.letters[item.gold],
        "c2c_answer": c2c_answer,
        "receiver_answer": receiver_answer.strip(),
        "reloaded_matches_trained": same,
        "prompt": format_prompt(item),
    }


# --------------------------------------------------------------------------- the run


@dataclass
class Bases:
    """The two trained base models with their tokenizers (saved in `folder/receiver`, `folder/sharer`)."""

    receiver: PreTrainedModel
    sharer: PreTrainedModel
    receiver_tokenizer: PreTrainedTokenizerBase
    sharer_tokenizer: PreTrainedTokenizerBase
    losses: dict[str, float]


def _tail(losses: Sequence[float], n: int = 20) -> float:
    tail = list(losses[-n:])
    return round(sum(tail) / max(len(tail), 1), 4)


def _save_base(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> PreTrainedModel:
    """Save a base with its tokenizer (one atomic folder save) and reload it, so that the C2C config names its
    folder."""
    with atomic_folder(path) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _train_receiver(config: DemoConfig, folder: Path, threads: int, progress: bool) -> tuple[dict[str, float], float]:
    """Train the receiver from scratch and save it in `folder/receiver`; returns its last loss and seconds. A pure
    function of `config` (the world and tokenizers are rebuilt from the seed), so it can run in another process."""
    torch.set_num_threads(threads)
    began = time.perf_counter()
    world = World.generate(config.seed, config.world_sizes(), config.attributes)
    receiver_tokenizer, _ = train_tokenizers(world, config.sharer_vocab_size)
    until_learnt = config.receiver_schedule == UNTIL_LEARNT
    steps = config.receiver_max_steps if until_learnt else config.receiver_steps
    examples = receiver_examples(
        world, receiver_tokenizer, steps * config.base_batch_size, config.seed, config.receiver_multi_fact_share,
        config.receiver_country_share, curriculum_length=config.receiver_steps * config.base_batch_size,
    )  # fmt: skip
    if until_learnt:  # the probe: hinted questions (and its countries) about context-only names, as it is trained on
        items, texts = receiver_probe(world, config.probe_questions, config.seed, config.receiver_multi_fact_share,
                                      config.receiver_country_share)  # fmt: skip
    attempts = []
    for attempt in range(config.receiver_attempts if until_learnt else 1):
        receiver = build_receiver(receiver_tokenizer, config.seed + 1 + 1000 * attempt)
        schedule = None
        if until_learnt:
            lm = LM(receiver, receiver_tokenizer)
            schedule = config.until_learnt(
                "receiver", lambda lm=lm: answer_accuracy(lm, items, texts, config.max_new_tokens),
                print if progress else None, give_up=attempt < config.receiver_attempts - 1,
            )  # fmt: skip
        with tempfile.TemporaryDirectory() as workdir:
            losses = pretrain(
                receiver, examples, steps=steps, batch_size=config.base_batch_size, lr=config.receiver_lr,
                pad_token_id=receiver_tokenizer.pad_token_id, seed=config.seed, workdir=workdir, progress=progress,
                until_learnt=schedule,
            )  # fmt: skip
        if schedule is None:
            break
        attempts.append(schedule.summary())
        if not schedule.gave_up:
            break
    _save_base(receiver, receiver_tokenizer, folder / "receiver")
    summary = {"receiver_attempts": attempts} if until_learnt else {}
    return {"receiver_last": _tail(losses), **summary}, round(time.perf_counter() - began, 2)


def train_t2t_receiver(
    config: DemoConfig, world: World, receiver: PreTrainedModel, receiver_tokenizer, sharer: LM, progress: bool
) -> PreTrainedModel:
    """The trained text-to-text baseline's receiver (`train_hint_reader`) with the fuser's questions and budget: its
    steps, or with the fuser's "until learnt" schedule the same rule and cap."""
    until_learnt = config.fuser_schedule == UNTIL_LEARNT
    with tempfile.TemporaryDirectory() as workdir:
        return train_hint_reader(
            receiver, receiver_tokenizer, sharer, fuser_items(world, config),
            steps=config.fuser_max_steps if until_learnt else config.fuser_steps, batch_size=config.fuser_batch_size,
            lr=config.t2t_lora_lr, rank=config.t2t_lora_rank, hint_tokens=config.hint_tokens, seed=config.seed,
            workdir=workdir, progress=progress, probe_questions=config.probe_questions,
            until_learnt=(lambda probe: config.until_learnt("fuser", probe, print if progress else None, "hint reader"))
            if until_learnt else None,
        )  # fmt: skip


def _train_hint_reader(config: DemoConfig, folder: Path, threads: int, progress: bool) -> float:
    """Train the trained text-to-text baseline's receiver on the saved bases and save it in `folder/t2t_receiver`;
    returns its seconds. A pure function of `config` and the saved bases, so it can run in another process."""
    torch.set_num_threads(threads)
    began = time.perf_counter()
    world = World.generate(config.seed, config.world_sizes(), config.attributes)
    receiver = AutoModelForCausalLM.from_pretrained(folder / "receiver").eval()
    receiver_tokenizer = AutoTokenizer.from_pretrained(folder / "receiver")
    sharer = LM(AutoModelForCausalLM.from_pretrained(folder / "sharer").eval(), AutoTokenizer.from_pretrained(folder / "sharer"))
    reader = train_t2t_receiver(config, world, receiver, receiver_tokenizer, sharer, progress)
    _save_base(reader, receiver_tokenizer, folder / "t2t_receiver")
    return round(time.perf_counter() - began, 2)


def beside(config: DemoConfig, background: functools.partial, foreground: Callable[[], Any]) -> tuple[Any, Any]:
    """`background(config=config, threads=..., progress=...)` (a picklable partial of a module function) in a second process while `foreground()` runs here (`config.workers` >= 2), else one
    after the other; returns both results. Each process runs torch on this process's thread count, so the results
    do not depend on `workers`."""
    threads = torch.get_num_threads()
    if config.workers < 2:
        return background(config=config, threads=threads, progress=True), foreground()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(background, **{"config": config, "threads": threads, "progress": False})
        in_front = foreground()
        return future.result(), in_front


def train_bases(config: DemoConfig, world: World, folder: Path, clock: Stopwatch) -> Bases:
    """Tokenizers, then the sharer (the facts) and, beside it, the receiver (format, reading, countries), trained
    from scratch and saved in `folder/sharer` and `folder/receiver`."""
    seed, batch = config.seed, config.base_batch_size
    receiver_tokenizer, sharer_tokenizer = clock.stage(
        "tokenizers", lambda: train_tokenizers(world, config.sharer_vocab_size)
    )
    sharer = build_sharer(sharer_tokenizer, seed + 2)
    print(
        f"world: {sum(len(v) for v in world.entities.values())} invented people "
        f"({', '.join(f'{k} {len(v)}' for k, v in world.entities.items())}), {len(world.attributes)} attributes | "
        f"receiver: Qwen3, word-level vocab {len(receiver_tokenizer)} | "
        f"sharer: Llama {parameter_count(sharer) / 1e6:.2f}M, BPE vocab {len(sharer_tokenizer)}"
    )
    print(f"1/5 sharer learns the facts{'; beside it, the receiver learns the format, reading and the countries of cities' if config.workers >= 2 else ''}")

    schedule = None
    if config.sharer_schedule == UNTIL_LEARNT:  # probe: questions about fuser-training people (its training facts)
        items = world.questions("fuser", random.Random(f"sharer-probe-{seed}"))[: config.probe_questions]
        texts = [format_prompt(item) for item in items]
        lm = LM(sharer, sharer_tokenizer)
        schedule = config.until_learnt("sharer", lambda: answer_accuracy(lm, items, texts, config.max_new_tokens), print)
    steps = config.sharer_max_steps if schedule else config.sharer_steps

    def train_sharer() -> list[float]:
        examples = sharer_examples(
            world, sharer_tokenizer, steps * batch, seed, value_weight=config.sharer_value_weight, prompt_weight=0.2
        )
        with tempfile.TemporaryDirectory() as workdir:
            return clock.stage("sharer pretraining", lambda: pretrain(
                sharer, examples, steps=steps, batch_size=batch, lr=config.sharer_lr,
                pad_token_id=sharer_tokenizer.pad_token_id, seed=seed, workdir=workdir, until_learnt=schedule,
            ))  # fmt: skip

    (receiver_losses, receiver_seconds), sharer_losses = beside(
        config, functools.partial(_train_receiver, folder=folder), train_sharer
    )
    clock.times["receiver pretraining"] = receiver_seconds
    print(f"2/5 receiver trained ({receiver_seconds:.0f} s{', in parallel' if config.workers >= 2 else ''})")
    return Bases(
        AutoModelForCausalLM.from_pretrained(folder / "receiver").eval(), _save_base(sharer, sharer_tokenizer, folder / "sharer"),
        receiver_tokenizer, sharer_tokenizer,
        {"sharer_last": _tail(sharer_losses), **({"sharer_schedule": schedule.summary()} if schedule else {}),
         **receiver_losses},
    )  # fmt: skip


def build_c2c(config: DemoConfig, bases: Bases) -> C2CForCausalLM:
    """The C2C model over the two bases: token map between their tokenizers, a fresh fuser (seeded)."""
    torch.manual_seed(config.seed + 3)
    return C2CForCausalLM.from_base_models(
        bases.receiver, bases.sharer, bases.receiver_tokenizer, bases.sharer_tokenizer, token_alignment="longest",
        layer_map=list(config.layer_map), fuser_hidden_size=config.fuser_hidden_size,
        fuser_num_blocks=config.fuser_num_blocks, fuser_dropout=config.fuser_dropout,
        fuser_zero_init=config.fuser_zero_init,
    )  # fmt: skip


def trained_text_to_text(
    config: DemoConfig, model: C2CForCausalLM, bases: Bases, hint_reader: PreTrainedModel
) -> TrainedTextToText:
    """The trained text-to-text baseline: the sharer writes its hint, the hint-trained receiver reads it."""
    return TrainedTextToText(LM(hint_reader, bases.receiver_tokenizer), LM(model.sharer, bases.sharer_tokenizer),
                             Scoring("generate", config.max_new_tokens), config.hint_tokens)  # fmt: skip


def demo_methods(
    config: DemoConfig, world: World, model: C2CForCausalLM, bases: Bases, hint_reader: PreTrainedModel | None
) -> list[Method]:
    """Receiver, sharer, text-to-text, routing, C2C (the harness's), the trained text-to-text (when trained) and the
    fact in the receiver's prompt."""
    scoring = Scoring("generate", config.max_new_tokens)
    receiver_tokenizer, sharer_tokenizer = bases.receiver_tokenizer, bases.sharer_tokenizer
    methods = build_methods(model, receiver_tokenizer, sharer_tokenizer, METHODS, scoring, config.hint_tokens)
    if hint_reader is not None:
        methods.append(trained_text_to_text(config, model, bases, hint_reader))
    methods.append(FactInPrompt(LM(model.receiver, receiver_tokenizer), world, scoring))
    return methods


def run_demo(config: DemoConfig, output: str | Path) -> dict[str, Any]:
    """Build the world, train both bases, the fuser and the hint reader, evaluate every method on the configured
    splits, save/reload; returns the report."""
    output = Path(output).resolve()
    claim_output_folder(output)
    clock = Stopwatch()
    seed = config.seed
    print(f"C2C demo ({'quick' if config.quick else 'full'}, seed {seed}, scoring {', '.join(config.splits)}) -> {output}")

    world = clock.stage("world", lambda: World.generate(seed, config.world_sizes(), config.attributes))
    bases = train_bases(config, world, output, clock)
    receiver_tokenizer = bases.receiver_tokenizer
    model = build_c2c(config, bases)
    items = fuser_items(world, config)
    print(f"3/5 fuser learns to read the sharer's cache: {parameter_count(model.fuser) / 1e6:.2f}M params, layer map "
          f"{model.fuser.layer_map}, token map coverage {model.config.token_alignment_coverage:.1%}"
          + ("; beside it, a receiver LoRA learns to read the sharer's written hints (trained text-to-text: same "
             "questions and steps)" if config.trained_t2t else ""))  # fmt: skip

    def train() -> tuple[list[float], dict[str, Any]]:
        with tempfile.TemporaryDirectory() as workdir:
            return clock.stage("fuser training", lambda: train_fuser(model, receiver_tokenizer, items, config, workdir))

    # Evaluation: people the receiver, the fuser and the hint reader never saw facts of (the sharer knows them).
    # Every method but the trained text-to-text is scored as soon as the fuser is trained, while the hint reader
    # may still be training in the second process; the trained text-to-text is scored once it is done.
    questions = demo_questions(world, config)
    methods = demo_methods(config, world, model, bases, None)
    routing = next(m for m in methods if isinstance(m, Routing))
    fit_items = routing_fit_questions(world, config)

    def train_and_evaluate() -> tuple[tuple[list[float], dict[str, Any]], bool, dict]:
        losses = train()
        print(f"4/5 evaluation on {', '.join(config.splits)} people"
              + (" (beside it, the hint reader trains on)" if config.trained_t2t and config.workers >= 2 else ""))
        informative = clock.stage("routing fit", lambda: routing.fit(fit_items))
        return losses, informative, clock.stage("evaluation", lambda: evaluate(methods, questions, batch_size=1))

    if config.trained_t2t:
        reader_seconds, ((fuser_losses, fuser_schedule), informative, results) = beside(
            config, functools.partial(_train_hint_reader, folder=output), train_and_evaluate
        )
        clock.times["hint reader training"] = reader_seconds
        hint_reader = AutoModelForCausalLM.from_pretrained(output / "t2t_receiver").eval()
        print(f"5/5 hint reader trained ({reader_seconds:.0f} s{', in parallel' if config.workers >= 2 else ''}); "
              "evaluating the trained text-to-text")
        reader = trained_text_to_text(config, model, bases, hint_reader)
        reader_results = clock.stage("trained text-to-text evaluation", lambda: evaluate([reader], questions, 1))
        names = list(results)
        names.insert(names.index(FactInPrompt.name), reader.name)  # the report's order: demo_methods'
        merged = {**results, **reader_results}
        results = {name: merged[name] for name in names}
    else:
        (fuser_losses, fuser_schedule), informative, results = train_and_evaluate()
        print("5/5 the C2C model saved, reloaded with AutoModelForCausalLM and asked with generate")

    # Save, reload with the Auto class, answer a few scored questions with generate.
    def save_and_reload() -> C2CForCausalLM:
        # The tokenizer first: the model's (atomic) save keeps it, and the model card then loads it from this folder.
        with atomic_folder(output / "c2c") as folder:
            receiver_tokenizer.save_pretrained(folder)
        model.save_pretrained(output / "c2c")
        return AutoModelForCausalLM.from_pretrained(output / "c2c").eval()

    reloaded = clock.stage("save + reload", save_and_reload)
    split = config.splits[-1]
    shown = questions[f"transfer-{split}"][:2] + questions[f"complementary-{split}"][:1]
    examples = [answer_example(reloaded, model, receiver_tokenizer, item) for item in shown]
    transfer = questions[f"transfer-{split}"]
    gates = gate_map(model, *LM(model, receiver_tokenizer).encode([format_prompt(item) for item in transfer]))

    report_config = {
        "demo": asdict(config),
        "world": {role: len(entities) for role, entities in world.entities.items()},
        "attributes": {k: list(ATTRIBUTES[k]) for k in world.attributes},
        "country_of": world.country_of,
        "fuser_rows": {"questions": len(items), "country_questions": sum(i.subject == "country" for i in items)},
        "evaluated": {
            "transfer": "one question per fact of every person of the split (the fact: known to the sharer only)",
            "complementary": f"{config.country_questions_per_person} country questions per person of the split (the "
                             "person's city: the sharer's only; the city's country: the receiver's only)",
        },
        "mode": "generate", "batch_size": 1, "max_new_tokens": config.max_new_tokens,
        "hint_tokens": config.hint_tokens,
        "models": describe_models(model, receiver_tokenizer, bases.sharer_tokenizer),
        "gate_map": gates,
        "routing_fit": {"items": len(fit_items), "informative": informative},
        "losses": {**bases.losses, "fuser_logged": fuser_losses, **fuser_schedule},
        "timings_s": {**clock.times, "total": clock.total},
        "threads": torch.get_num_threads(),
        "examples": examples,
        "latency": "wall clock per question (batch size 1), CPU",
    }  # fmt: skip
    return write_demo_report(results, output, report_config)


__all__ = [
    "TASKS",
    "Bases",
    "FactInPrompt",
    "Stopwatch",
    "answer_example",
    "build_c2c",
    "demo_methods",
    "demo_questions",
    "fuser_dataset",
    "fuser_items",
    "routing_fit_questions",
    "run_demo",
    "train_bases",
    "train_fuser",
    "train_t2t_receiver",
]
