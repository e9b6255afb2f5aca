"""One demo run: world -> tokenizers and base models -> fuser -> evaluation -> save and reload -> report.

Its settings are `DemoConfig`; why every receiver layer reads sharer layer 0 is in the package docstring.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments

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
from ..training import make_trainer
from .bases import (
    answer_text,
    build_receiver,
    build_sharer,
    pretrain,
    receiver_examples,
    sharer_examples,
    train_tokenizers,
)
from .report import BENCHMARK, claim_output_folder, describe_models, parameter_count, write_demo_report
from .world import ATTRIBUTES, World


@dataclass
class DemoConfig:
    """Sizes and schedules of one demo run (`full()` or `quick_config()`)."""

    seed: int = 0
    quick: bool = False
    # world: people per role (see c2c_hf.demo.world)
    fuser_entities: int = 192
    heldout_entities: int = 48
    context_entities: int = 128
    # tokenizers
    sharer_vocab_size: int = 2000  # byte-pair merges stop earlier, once every word of the world is one token
    # base models (AdamW, warm-up + cosine); the sharer's loss weighs attribute values in statements x5
    sharer_steps: int = 900
    sharer_lr: float = 3e-3
    sharer_value_weight: float = 5.0
    receiver_steps: int = 500
    receiver_lr: float = 3e-3
    receiver_multi_fact_share: float = 0.6
    base_batch_size: int = 32
    # fuser: every receiver layer reads sharer layer 0, where the sharer keeps its facts (package docstring)
    layer_map: list[int] = field(default_factory=lambda: [0, 0, 0])
    fuser_hidden_size: int = 64
    fuser_num_blocks: int = 2
    fuser_dropout: float = 0.2
    fuser_steps: int = 1500
    fuser_lr: float = 3e-3
    fuser_batch_size: int = 32
    fuser_questions_per_fact: int = 12
    # evaluation
    routing_fit_items: int = 64
    max_new_tokens: int = 8
    hint_tokens: int = 48

    @classmethod
    def full(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed)

    @classmethod
    def quick_config(cls, seed: int = 0) -> DemoConfig:
        return cls(
            seed=seed, quick=True, fuser_entities=32, heldout_entities=16, context_entities=48,
            sharer_steps=340, receiver_steps=270, fuser_steps=240, routing_fit_items=32,
        )  # fmt: skip

    def world_sizes(self) -> dict[str, int]:
        return {"fuser": self.fuser_entities, "heldout": self.heldout_entities, "context": self.context_entities}


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


def fuser_dataset(world: World, questions_per_fact: int, seed: int) -> datasets.Dataset:
    """Chat rows about the fuser's people, each fact asked several ways: the harness's multiple-choice prompt
    (`format_prompt`) as the user turn, the correct choice's text as the answer (what the receiver answers)."""
    rng = random.Random(f"fuser-data-{seed}")
    items = world.questions("fuser", rng, per_fact=questions_per_fact)
    rng.shuffle(items)
    return datasets.Dataset.from_list([
        {"messages": [{"role": "user", "content": format_prompt(i)}, {"role": "assistant", "content": answer_text(i)}]}
        for i in items
    ])  # fmt: skip


def train_fuser(
    model: C2CForCausalLM, receiver_tokenizer, dataset: datasets.Dataset, config: DemoConfig, workdir: str
) -> list[float]:
    """The project's training path: `build_features` + `C2CDataCollator` + `make_trainer` (stock Trainer)."""
    features, _ = build_features(dataset, receiver_tokenizer, max_length=256)
    args = TrainingArguments(
        output_dir=workdir, max_steps=config.fuser_steps, per_device_train_batch_size=config.fuser_batch_size,
        learning_rate=config.fuser_lr, weight_decay=0.01, warmup_steps=max(1, config.fuser_steps // 10),
        lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=max(1, config.fuser_steps // 4),
        save_strategy="no", report_to="none", use_cpu=True, seed=config.seed, data_seed=config.seed,
        dataloader_num_workers=0, disable_tqdm=False,
    )  # fmt: skip
    trainer = make_trainer(model, args, features, C2CDataCollator(pad_token_id=receiver_tokenizer.pad_token_id))
    trainer.train()
    model.eval()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


# --------------------------------------------------------------------------- evaluation


def heldout_questions(world: World, seed: int) -> list[MCItem]:
    """The demo's evaluation items: one question on every fact of every held-out person (seeded phrasing, order)."""
    return world.questions("heldout", random.Random(f"eval-{seed}"))


class Oracle(Method):
    """The receiver given the fact in its prompt (the T2T prompt with the true fact as the hint): an upper bound."""

    name = "oracle"

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


def run_demo(config: DemoConfig, output: str | Path) -> dict[str, Any]:
    """Build the world, train both bases and the fuser, evaluate every method, save/reload; returns the report."""
    output = Path(output).resolve()
    claim_output_folder(output)
    clock = Stopwatch()
    seed, batch = config.seed, config.base_batch_size
    print(f"C2C demo ({'quick' if config.quick else 'full'}, seed {seed}) -> {output}")

    world = clock.stage("world", lambda: World.generate(seed, config.world_sizes()))
    receiver_tokenizer, sharer_tokenizer = clock.stage(
        "tokenizers", lambda: train_tokenizers(world, config.sharer_vocab_size)
    )
    receiver = build_receiver(receiver_tokenizer, seed + 1)
    sharer = build_sharer(sharer_tokenizer, seed + 2)
    print(
        f"world: {sum(len(v) for v in world.entities.values())} invented people "
        f"({', '.join(f'{k} {len(v)}' for k, v in world.entities.items())}), {len(ATTRIBUTES)} attributes | "
        f"receiver: Qwen3 {parameter_count(receiver) / 1e6:.2f}M, word-level vocab {len(receiver_tokenizer)} | "
        f"sharer: Llama {parameter_count(sharer) / 1e6:.2f}M, BPE vocab {len(sharer_tokenizer)}"
    )

    with tempfile.TemporaryDirectory() as workdir:
        print("1/4 sharer learns the facts")
        sharer_data = sharer_examples(
            world, sharer_tokenizer, config.sharer_steps * batch, seed, value_weight=config.sharer_value_weight,
            prompt_weight=0.2,
        )  # fmt: skip
        sharer_losses = clock.stage("sharer pretraining", lambda: pretrain(
            sharer, sharer_data, steps=config.sharer_steps, batch_size=batch, lr=config.sharer_lr,
            pad_token_id=sharer_tokenizer.pad_token_id, seed=seed, workdir=workdir,
        ))  # fmt: skip
        print("2/4 receiver learns the format and reading")
        receiver_data = receiver_examples(
            world, receiver_tokenizer, config.receiver_steps * batch, seed, config.receiver_multi_fact_share
        )
        receiver_losses = clock.stage("receiver pretraining", lambda: pretrain(
            receiver, receiver_data, steps=config.receiver_steps, batch_size=batch, lr=config.receiver_lr,
            pad_token_id=receiver_tokenizer.pad_token_id, seed=seed, workdir=workdir,
        ))  # fmt: skip
        receiver = _save_base(receiver, receiver_tokenizer, output / "receiver")
        sharer = _save_base(sharer, sharer_tokenizer, output / "sharer")

        torch.manual_seed(seed + 3)
        model = C2CForCausalLM.from_base_models(
            receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment="longest",
            layer_map=list(config.layer_map), fuser_hidden_size=config.fuser_hidden_size,
            fuser_num_blocks=config.fuser_num_blocks, fuser_dropout=config.fuser_dropout,
        )  # fmt: skip
        print(f"3/4 fuser learns to read the sharer's cache: {parameter_count(model.fuser) / 1e6:.2f}M params, layer map "
              f"{model.fuser.layer_map}, token map coverage {model.config.token_alignment_coverage:.1%}")  # fmt: skip
        fuser_losses = clock.stage("fuser training", lambda: train_fuser(
            model, receiver_tokenizer, fuser_dataset(world, config.fuser_questions_per_fact, seed), config, workdir,
        ))  # fmt: skip

    # Evaluation: held-out people only (the sharer knows them; the receiver and the fuser never saw their facts).
    print("4/4 evaluation on held-out people")
    heldout = heldout_questions(world, seed)
    scoring = Scoring("generate", config.max_new_tokens)
    methods = build_methods(model, receiver_tokenizer, sharer_tokenizer, METHODS, scoring, config.hint_tokens)
    methods.append(Oracle(LM(model.receiver, receiver_tokenizer), world, scoring))
    routing = next(m for m in methods if isinstance(m, Routing))
    fit_items = world.questions("fuser", random.Random(f"routing-{seed}"))[: config.routing_fit_items]
    informative = clock.stage("routing fit", lambda: routing.fit(fit_items))
    results = clock.stage("evaluation", lambda: evaluate(methods, {BENCHMARK: heldout}, batch_size=1))

    # Save, reload with the Auto class, answer three held-out questions with generate.
    def save_and_reload() -> C2CForCausalLM:
        # The tokenizer first: the model's (atomic) save keeps it, and the model card then loads it from this folder.
        with atomic_folder(output / "c2c") as folder:
            receiver_tokenizer.save_pretrained(folder)
        model.save_pretrained(output / "c2c")
        return AutoModelForCausalLM.from_pretrained(output / "c2c").eval()

    reloaded = clock.stage("save + reload", save_and_reload)
    examples = [answer_example(reloaded, model, receiver_tokenizer, item) for item in heldout[:3]]
    gates = gate_map(model, *LM(model, receiver_tokenizer).encode([format_prompt(item) for item in heldout]))

    report_config = {
        "demo": asdict(config),
        "world": {role: len(entities) for role, entities in world.entities.items()},
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "evaluated": "held-out people: known to the sharer only; 1 question per fact",
        "mode": scoring.mode, "batch_size": 1, "max_new_tokens": config.max_new_tokens,
        "hint_tokens": config.hint_tokens,
        "models": describe_models(model, receiver_tokenizer, sharer_tokenizer),
        "gate_map": gates,
        "routing_fit": {"items": len(fit_items), "informative": informative},
        "losses": {"sharer_last": _tail(sharer_losses), "receiver_last": _tail(receiver_losses),
                   "fuser_logged": fuser_losses},
        "timings_s": {**clock.times, "total": clock.total},
        "threads": torch.get_num_threads(),
        "examples": examples,
        "latency": "wall clock per question (batch size 1), CPU",
    }  # fmt: skip
    return write_demo_report(results, output, report_config)


__all__ = [
    "DemoConfig",
    "Oracle",
    "Stopwatch",
    "answer_example",
    "fuser_dataset",
    "heldout_questions",
    "run_demo",
    "train_fuser",
]
