"""`c2c-hf demo`: watch C2C transfer knowledge between two small models trained from scratch on the CPU.

    c2c-hf demo [--output DIR] [--seed S] [--quick] [--threads N]

A knowledge world of invented people with four attributes each (`c2c_hf.world`), and two models that know
different things, with different architectures, depths, head shapes and tokenizers:

- the **sharer** (Llama-like, 4 layers, 8 heads x 16, byte-pair tokenizer) learns the facts of the fuser-training
  and held-out people from paraphrased statements, answers multiple-choice questions about them, and writes a hint
  on request (everything it knows about the person);
- the **receiver** (Qwen3-like, 3 layers, 4 heads x 32 with 2 KV heads, word-level tokenizer) learns the 4-way
  multiple-choice format through the chat template and to answer from facts given in its prompt ("Hint: ..." then
  the question, about context-only names whose facts are drawn afresh for every example). It never sees a fact of
  a fuser-training or held-out person.

Both models answer with the text of the correct choice; the harness's answer extraction maps it to its letter
(binding a value to its letter is a circuit these tiny models do not form within a CPU budget of minutes).

A fuser is trained with the project's training path (`build_features` + `C2CDataCollator` + `make_trainer`) on
questions about the fuser-training people, then the project's evaluation harness compares, on questions about
**held-out people** (known to the sharer only): receiver alone, sharer alone, text-to-text (the sharer's hint in the
receiver's prompt), routing, C2C, and an oracle (the receiver given the one relevant fact in its prompt). The token
map between the two tokenizers is built by `from_base_models(..., receiver_tokenizer, sharer_tokenizer)`. Every
receiver layer is fused with sharer layer 0: this sharer keeps its facts in the name tokens' layer-0 keys and values
(a linear probe reads a person's city from them for ~96% of held-out people, ~40-50% from layers 1-3); in our
tuning runs the default "terminal" map ([1, 2, 3]) left C2C near chance on held-out people (25%) where [0, 0, 0]
reached 40% with the same budget, and [0, 1, 2] 51% where [0, 0, 0] reached 65%. The C2C model is saved with `save_pretrained` (with the
receiver tokenizer), reloaded with `AutoModelForCausalLM.from_pretrained` and asked questions with `generate`.

Outputs in `--output` (default `./c2c-demo`): `results.md` / `results.json` / `accuracy_latency.png` (the harness
report), `gates.png` (gate openings per receiver layer, K and V), `demo.md` (table, targets, timings, examples),
and the models: `receiver/`, `sharer/` (bases with their tokenizers) and `c2c/` (fuser, config, receiver tokenizer).
Deterministic for a given seed and thread count (latencies aside).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from .benchmarks import MCItem, format_prompt
from .data import C2CDataCollator, build_features
from .evaluation import (
    LM,
    METHODS,
    Method,
    Prediction,
    Routing,
    Scoring,
    build_methods,
    evaluate,
    hint_request,
    hinted_prompt,
    markdown_table,
    respond,
    write_report,
)
from .modeling_c2c import C2CForCausalLM
from .training import make_trainer
from .world import ATTRIBUTES, STATEMENTS, World

# ChatML-style markers, shared by both tokenizers (special tokens: they map by string in the token alignment).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IM_START, IM_END, PAD, UNK = "<|im_start|>", "<|im_end|>", "<pad>", "<unk>"


# --------------------------------------------------------------------------- configuration


@dataclass
class DemoConfig:
    """Sizes and schedules of one demo run (`full()` or `quick_config()`)."""

    seed: int = 0
    quick: bool = False
    # world: people per role (see c2c_hf.world)
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
    # fuser: every receiver layer reads sharer layer 0, where the sharer keeps its facts (see `run_demo`)
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


# --------------------------------------------------------------------------- tokenizers


def _wrap(backend, chat_template: str = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=IM_END, pad_token=PAD, unk_token=UNK, chat_template=chat_template,
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


def tokenizer_corpus(world: World) -> list[str]:
    """Every kind of text the demo writes: statements, questions, the MC prompt, the hint request, the chat roles."""
    rng = random.Random(world.seed)
    item = world.question(world.entities["context"][0] if world.entities["context"] else world.entities["heldout"][0],
                          "city", rng)  # fmt: skip
    # The prompt words recur in every example: repeated, so that byte-pair merges make them whole tokens too.
    return world.vocabulary_text() + [hint_request(item), hinted_prompt(item, "x"), "system user assistant"] * 50


def train_tokenizers(world: World, sharer_vocab_size: int) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """The receiver's word-level tokenizer and the sharer's byte-pair (BPE) tokenizer, trained on the world's text.

    Different vocabularies (sizes, ids, piece spellings) and special-token ids: C2C aligns them with a token map.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = tokenizer_corpus(world)
    receiver = Tokenizer(models.WordLevel(unk_token=UNK))
    receiver.pre_tokenizer = pre_tokenizers.Whitespace()
    receiver.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=[PAD, UNK, IM_START, IM_END], show_progress=False)
    )
    sharer = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix="</w>"))
    sharer.pre_tokenizer = pre_tokenizers.Whitespace()
    sharer.decoder = decoders.BPEDecoder(suffix="</w>")
    sharer.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=sharer_vocab_size, special_tokens=[UNK, IM_START, IM_END, PAD], end_of_word_suffix="</w>",
            show_progress=False,
        ),
    )  # fmt: skip
    return _wrap(receiver), _wrap(_canonical_ids(sharer, [UNK, IM_START, IM_END, PAD]))


def _canonical_ids(tokenizer, specials: list[str]):
    """The same byte-pair tokenizer with its ids in a canonical order (specials, then by length and spelling).

    `BpeTrainer` breaks frequency ties in a different order in every process, which permutes the ids (the vocabulary
    and merges are the same); the embeddings would then start differently and runs would not repeat.
    """
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    ordered = specials + sorted((t for t in vocab if t not in specials), key=lambda t: (len(t), t))
    data["model"]["vocab"] = {token: index for index, token in enumerate(ordered)}
    for added in data["added_tokens"]:
        added["id"] = data["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(data))


# --------------------------------------------------------------------------- base models


def _round_up(n: int, multiple: int = 64) -> int:
    return multiple * math.ceil(n / multiple)


def build_receiver(tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """Qwen3-like receiver: 3 layers, hidden 128, 4 query heads, 2 KV heads x 32 (q/k norms), tied embeddings."""
    config = Qwen3Config(
        vocab_size=_round_up(len(tokenizer)), hidden_size=128, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )  # fmt: skip
    return _build(config, tokenizer, seed)


def build_sharer(tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """Llama-like sharer: 4 layers, hidden 128, 8 query heads, 4 KV heads x 16, untied embeddings."""
    config = LlamaConfig(
        vocab_size=_round_up(len(tokenizer)), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    return _build(config, tokenizer, seed)


def _build(config, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


# --------------------------------------------------------------------------- pretraining data


@dataclass
class Example:
    """A training sequence for a base model: token ids and a per-token loss weight (for predicting that token)."""

    ids: list[int]
    weights: list[float]


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str, heavy: dict[int, float] | None = None) -> Example:
    """Plain text then the end-of-sequence token; `heavy` maps token ids to a loss weight other than 1."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    heavy = heavy or {}
    return Example(ids, [heavy.get(i, 1.0) for i in ids])


def encode_chat(
    tokenizer: PreTrainedTokenizerFast, user: str, answer: str, prompt_weight: float, heavy: dict[int, float] | None = None
) -> Example:
    """The chat (user turn, assistant answer) in the tokenizer's template; the answer has loss weight 1 (or `heavy`'s
    weight for the token ids it maps)."""
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    heavy = heavy or {}
    weights = [prompt_weight] * len(prompt_ids) + [heavy.get(i, 1.0) for i in answer_ids]
    return Example(prompt_ids + answer_ids, weights)


def letter(item: MCItem) -> str:
    return item.letters[item.gold]


def answer_text(item: MCItem) -> str:
    """What the demo's models answer: the text of the correct choice (the harness maps it to its letter)."""
    return item.choices[item.gold]


def value_token_ids(tokenizer: PreTrainedTokenizerFast) -> set[int]:
    """Ids of the attribute values (each one token in both tokenizers)."""
    ids = set()
    for values in ATTRIBUTES.values():
        for value in values:
            pieces = tokenizer(value, add_special_tokens=False)["input_ids"]
            ids.update(pieces[-1:] if len(pieces) == 1 else [])
    return ids


def sharer_examples(
    world: World, tokenizer, count: int, seed: int, bio_share: float = 0.5, mc_share: float = 0.3,
    value_weight: float = 1.0, prompt_weight: float = 1.0,
) -> list[Example]:
    """What the sharer learns, about every person but the context-only names: statements (biographies of 1-4 facts,
    two people per sequence), multiple-choice questions (answer: the choice's text) and hint requests (answer:
    everything it knows about the person, `World.profile`). `value_weight` weights the loss on attribute values
    (in statements, answers and hints) and on the person's name in hints."""
    rng = random.Random(f"sharer-data-{seed}")
    known = [e for role in ("fuser", "heldout") for e in world.entities[role]]
    heavy = {i: value_weight for i in value_token_ids(tokenizer)}
    examples = []
    for _ in range(count):
        kind = rng.random()
        entity = rng.choice(known)
        if kind < bio_share:
            other = rng.choice(known)
            text = world.biography(entity, rng, rng.randint(1, 4)) + " " + world.biography(other, rng, rng.randint(1, 4))
            examples.append(encode_text(tokenizer, text, heavy))
        else:
            item = world.question(entity, rng.choice(list(ATTRIBUTES)), rng)
            if kind < bio_share + mc_share:
                examples.append(encode_chat(tokenizer, format_prompt(item), answer_text(item), prompt_weight, heavy))
            else:  # the hint names the person four times: a wrong name derails it, so names weigh as values do
                name_ids = tokenizer(entity.name, add_special_tokens=False)["input_ids"]
                hint_heavy = {**heavy, **{i: value_weight for i in name_ids}}
                examples.append(
                    encode_chat(tokenizer, hint_request(item), world.profile(entity), prompt_weight, hint_heavy)
                )
    return examples


def receiver_examples(world: World, tokenizer, count: int, seed: int, multi_fact_share: float = 0.5) -> list[Example]:
    """What the receiver learns: the multiple-choice format and answering from a hint in its prompt, about
    context-only names whose facts are drawn afresh for every example (so that only reading works). It never sees a
    fact of a fuser or held-out person. A curriculum: the hint is the fact alone for the first 30% of the examples;
    then, with a share growing to `multi_fact_share` at 60%, the fact among other facts of the person."""
    rng = random.Random(f"receiver-data-{seed}")
    context_names = world.names("context")
    examples = []
    for index in range(count):
        progress = index / max(count - 1, 1)
        entity = world.random_entity(rng.choice(context_names), rng)
        attribute = rng.choice(list(ATTRIBUTES))
        item = world.question(entity, attribute, rng)
        if rng.random() >= multi_fact_share * min(max((progress - 0.3) / 0.3, 0.0), 1.0):
            hint = world.statement(entity, attribute, rng.randrange(len(STATEMENTS[attribute])))
        else:
            others = [a for a in ATTRIBUTES if a != attribute]
            chosen = [attribute, *rng.sample(others, rng.randint(1, 3))]
            rng.shuffle(chosen)
            hint = " ".join(world.statement(entity, a, rng.randrange(len(STATEMENTS[a]))) for a in chosen)
        examples.append(encode_chat(tokenizer, hinted_prompt(item, hint), answer_text(item), prompt_weight=0.1))
    return examples


def length_buckets(count: int, lengths: Sequence[int], batch_size: int, seed: int, window: int = 16) -> list[list[int]]:
    """Batches of example indices: each window of `window` batches (in order, so a curriculum holds) is sorted by
    length and cut into batches, whose order inside the window is shuffled. Less padding, same examples."""
    rng = random.Random(f"buckets-{seed}")
    batches = []
    for start in range(0, count, batch_size * window):
        chunk = sorted(range(start, min(start + batch_size * window, count)), key=lambda i: lengths[i])
        group = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(group)
        batches += group
    return batches


def pretrain(
    model: PreTrainedModel,
    examples: Sequence[Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    pad_id: int,
    seed: int,
    desc: str,
) -> list[float]:
    """Train a base model from scratch on `examples` (AdamW, warm-up then cosine decay, weighted next-token loss)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    batches = length_buckets(len(examples), [len(e.ids) for e in examples], batch_size, seed)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        batch = [examples[i] for i in batches[step % len(batches)]]
        width = max(len(e.ids) for e in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        weights = torch.zeros((len(batch), width))
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, example in enumerate(batch):
            ids[row, : len(example.ids)] = torch.tensor(example.ids)
            weights[row, : len(example.ids)] = torch.tensor(example.weights)
            mask[row, : len(example.ids)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, L-1, V)
        token_loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        w = weights[:, 1:].flatten()
        loss = (token_loss * w).sum() / w.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses


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
def fit_router(routing: Routing, items: Sequence[MCItem], scoring: Scoring) -> int:
    """Fit the routing baseline's router on fuser-people questions, judging each model by its *generated* answer.

    (`Routing.fit` judges by the letter logits at the answer position; these models answer with the choice's text,
    so its labels would be noise.) Features are the harness's own (`Routing.features`). Returns the informative
    items (exactly one model right); with none the router stays unfitted and routes by confidence.
    """
    features, _, _ = routing.features(items)
    prompts = [format_prompt(item) for item in items]
    receiver_right = torch.tensor([p.correct for p in respond(routing.receiver, items, prompts, scoring)])
    sharer_right = torch.tensor([p.correct for p in respond(routing.sharer, items, prompts, scoring)])
    informative = receiver_right != sharer_right
    if informative.any():
        routing.router.fit(features[informative], sharer_right[informative])
    return int(informative.sum())


def plot_gates(model: C2CForCausalLM, path: str | Path) -> None:
    """Bar chart of the gates per receiver layer: training-time open probability sigmoid(logit), K and V, and
    whether the gate is open at inference (logit > 0)."""
    from matplotlib.figure import Figure

    logits = model.fuser.gate_logits().float()  # (layers, 2)
    probabilities = torch.sigmoid(logits)
    layers = list(range(logits.shape[0]))
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    width = 0.38
    for column, (name, color) in enumerate((("K", "C0"), ("V", "C1"))):
        xs = [x + (column - 0.5) * width for x in layers]
        bars = axes.bar(xs, probabilities[:, column].tolist(), width, label=f"{name} gate", color=color)
        for bar, logit in zip(bars, logits[:, column].tolist()):
            axes.annotate("open" if logit > 0 else "closed", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)  # fmt: skip
    layer_map = model.fuser.layer_map
    axes.set_xticks(layers, [f"receiver {t}\n<- sharer {layer_map[t]}" for t in layers])
    axes.set_ylim(0, 1.12)
    axes.axhline(0.5, color="gray", lw=0.8, ls="--")
    axes.set_ylabel("sigmoid(gate logit)")
    axes.set_title("C2C gates per receiver layer (open at inference iff > 0.5)")
    axes.legend(loc="lower right")
    figure.savefig(path, dpi=150, bbox_inches="tight")


def plot_accuracy_latency(report: dict[str, Any], path: str | Path) -> None:
    """Accuracy vs median latency per method (log latency axis, labels kept apart): the demo's version of the
    harness plot, whose labels overlap when several methods share a point."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    points = sorted(((s["latency_median_s"], 100 * s["accuracy"], method, s["ci95"]) for method, by in
                     report["results"].items() for s in by.values()), key=lambda p: (p[1], p[0]))  # fmt: skip
    for index, (x, y, method, (low, high)) in enumerate(points):
        axes.errorbar(x, y, yerr=[[y - 100 * low], [100 * high - y]], fmt="o", color=f"C{index}", capsize=3)
        axes.annotate(f"{method} {y:.0f}%", (x, y), textcoords="offset points", xytext=(6, -12 + 9 * (index % 3)),
                      fontsize=8, color=f"C{index}")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("median latency per question (s, log scale; batch size 1, CPU)")
    axes.set_ylabel("accuracy on held-out people (%)")
    axes.set_ylim(0, 108)
    axes.set_title("C2C demo: accuracy vs latency")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=150, bbox_inches="tight")


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _save_base(model: PreTrainedModel, tokenizer, path: Path) -> PreTrainedModel:
    """Save a base with its tokenizer and reload it, so that the C2C config names its folder."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).eval()


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


# --------------------------------------------------------------------------- the demo


def run_demo(config: DemoConfig, output: str | Path) -> dict[str, Any]:
    """Build the world, train both bases and the fuser, evaluate every method, save/reload; returns the report."""
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()
    seed = config.seed
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
        f"receiver: Qwen3 {_parameters(receiver) / 1e6:.2f}M, word-level vocab {len(receiver_tokenizer)} | "
        f"sharer: Llama {_parameters(sharer) / 1e6:.2f}M, BPE vocab {len(sharer_tokenizer)}"
    )

    batch = config.base_batch_size
    sharer_data = sharer_examples(
        world, sharer_tokenizer, config.sharer_steps * batch, seed, value_weight=config.sharer_value_weight,
        prompt_weight=0.2,
    )
    sharer_losses = clock.stage("sharer pretraining", lambda: pretrain(
        sharer, sharer_data, steps=config.sharer_steps, batch_size=batch, lr=config.sharer_lr,
        pad_id=sharer_tokenizer.pad_token_id, seed=seed, desc="1/4 sharer learns the facts",
    ))  # fmt: skip
    receiver_data = receiver_examples(
        world, receiver_tokenizer, config.receiver_steps * batch, seed, config.receiver_multi_fact_share
    )
    receiver_losses = clock.stage("receiver pretraining", lambda: pretrain(
        receiver, receiver_data, steps=config.receiver_steps, batch_size=batch, lr=config.receiver_lr,
        pad_id=receiver_tokenizer.pad_token_id, seed=seed, desc="2/4 receiver learns the format and reading",
    ))  # fmt: skip
    receiver = _save_base(receiver, receiver_tokenizer, output / "receiver")
    sharer = _save_base(sharer, sharer_tokenizer, output / "sharer")

    torch.manual_seed(seed + 3)
    model = C2CForCausalLM.from_base_models(
        receiver, sharer, receiver_tokenizer, sharer_tokenizer, token_alignment="longest",
        layer_map=list(config.layer_map), fuser_hidden_size=config.fuser_hidden_size, fuser_num_blocks=config.fuser_num_blocks,
        fuser_dropout=config.fuser_dropout,
    )  # fmt: skip
    print(f"C2C: fuser {_parameters(model.fuser) / 1e6:.2f}M params, layer map {model.fuser.layer_map}, "
          f"token map coverage {model.config.token_alignment_coverage:.1%}")  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        fuser_losses = clock.stage("fuser training", lambda: train_fuser(
            model, receiver_tokenizer, fuser_dataset(world, config.fuser_questions_per_fact, seed), config, workdir,
        ))  # fmt: skip

    # Evaluation: held-out people only (the sharer knows them; the receiver and the fuser never saw their facts).
    heldout = heldout_questions(world, seed)
    scoring = Scoring("generate", config.max_new_tokens)
    methods = build_methods(model, receiver_tokenizer, sharer_tokenizer, METHODS, scoring, config.hint_tokens)
    methods.append(Oracle(LM(model.receiver, receiver_tokenizer), world, scoring))
    routing = next(m for m in methods if isinstance(m, Routing))
    fit_items = world.questions("fuser", random.Random(f"routing-{seed}"))[: config.routing_fit_items]
    informative = clock.stage("routing fit", lambda: fit_router(routing, fit_items, scoring))
    results = clock.stage("evaluation", lambda: evaluate(methods, {"heldout": heldout}, batch_size=1))

    # Save, reload with the Auto class, answer three held-out questions with generate.
    def save_and_reload():
        model.save_pretrained(output / "c2c")
        receiver_tokenizer.save_pretrained(output / "c2c")
        return AutoModelForCausalLM.from_pretrained(output / "c2c").eval()

    reloaded = clock.stage("save + reload", save_and_reload)
    examples = [answer_example(reloaded, model, receiver_tokenizer, item) for item in heldout[:3]]
    plot_gates(model, output / "gates.png")

    summary = {method: by[name] for method, by in results.items() for name in by}
    accuracy = {m: sum(p.correct for p in ps) / len(ps) for m, ps in summary.items()}
    latency = {m: statistics.median(p.latency for p in ps) for m, ps in summary.items()}
    targets = {
        "receiver_alone_le_35pct": accuracy["receiver"] <= 0.35,
        "c2c_ge_80pct": accuracy["c2c"] >= 0.80,
        "c2c_ge_t2t": accuracy["c2c"] >= accuracy["t2t"],
        "c2c_latency_le_half_t2t": latency["c2c"] <= 0.5 * latency["t2t"],
    }
    report_config = {
        "demo": asdict(config),
        "world": {role: len(entities) for role, entities in world.entities.items()},
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "evaluated": "held-out people: known to the sharer only; 1 question per fact",
        "mode": scoring.mode, "batch_size": 1, "max_new_tokens": config.max_new_tokens,
        "hint_tokens": config.hint_tokens,
        "models": {
            "receiver": {"arch": "Qwen3", "params": _parameters(model.receiver), "kv": list(model.config.receiver_kv_shape),
                         "tokenizer": f"word-level, {len(receiver_tokenizer)} tokens"},
            "sharer": {"arch": "Llama", "params": _parameters(model.sharer), "kv": list(model.config.sharer_kv_shape),
                       "tokenizer": f"BPE, {len(sharer_tokenizer)} tokens"},
            "fuser": {"params": _parameters(model.fuser), "hidden": config.fuser_hidden_size,
                      "layer_map": model.fuser.layer_map,
                      "token_map_coverage": model.config.token_alignment_coverage,
                      "gate_logits_kv": model.fuser.gate_logits().tolist()},
        },
        "routing_fit": {"items": len(fit_items), "informative": informative},
        "losses": {"sharer_last": _tail(sharer_losses), "receiver_last": _tail(receiver_losses),
                   "fuser_logged": fuser_losses},
        "timings_s": {**clock.times, "total": clock.total},
        "threads": torch.get_num_threads(),
        "examples": examples,
        "targets": targets,
        "latency": "wall clock per question (batch size 1), CPU",
    }  # fmt: skip
    report = write_report(results, output, report_config)
    plot_accuracy_latency(report, output / "accuracy_latency.png")
    table = markdown_table(report)
    (output / "demo.md").write_text(demo_markdown(table, report_config), encoding="utf-8")
    print()
    print(table)
    for name, ok in targets.items():
        print(f"  target {name}: {'met' if ok else 'MISSED'}")
    print("  reloaded C2C (AutoModelForCausalLM.from_pretrained) answering held-out questions with generate:")
    for example in examples:
        print(f"    {example['question']} {example['choices']} -> C2C {example['c2c_answer']!r}, receiver alone "
              f"{example['receiver_answer']!r}, gold {example['gold']}")  # fmt: skip
    print(f"  time: {report_config['timings_s']['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in clock.times.items())})")
    print(f"  outputs: {output}")
    return report


def _tail(losses: Sequence[float], n: int = 20) -> float:
    tail = list(losses[-n:])
    return round(sum(tail) / max(len(tail), 1), 4)


@torch.no_grad()
def answer_example(reloaded: C2CForCausalLM, model: C2CForCausalLM, tokenizer, item: MCItem) -> dict[str, Any]:
    """The reloaded C2C model answers one question with `generate` (checked against the in-memory model)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": format_prompt(item)}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    output = reloaded.generate(**inputs, max_new_tokens=4, do_sample=False)
    c2c_answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    same = torch.equal(output, model.generate(**inputs, max_new_tokens=4, do_sample=False))
    receiver_output = reloaded.receiver.generate(**inputs, max_new_tokens=4, do_sample=False)
    receiver_answer = tokenizer.decode(receiver_output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return {
        "question": item.question,
        "choices": dict(zip(item.letters, item.choices)),
        "gold": letter(item),
        "c2c_answer": c2c_answer,
        "receiver_answer": receiver_answer.strip(),
        "reloaded_matches_trained": same,
        "prompt": format_prompt(item),
    }


def demo_markdown(table: str, config: dict[str, Any]) -> str:
    models = config["models"]
    lines = [
        table.replace("# C2C evaluation", "# C2C demo: knowledge transfer on a CPU"),
        f"Held-out people (known to the sharer only), one 4-way question per fact; world "
        f"{config['world']}; seed {config['demo']['seed']}, {'quick' if config['demo']['quick'] else 'full'} run.",
        "",
        f"- receiver: {models['receiver']['arch']}, {models['receiver']['params']:,} params, KV (layers, heads, dim) "
        f"{tuple(models['receiver']['kv'])}, {models['receiver']['tokenizer']}",
        f"- sharer: {models['sharer']['arch']}, {models['sharer']['params']:,} params, KV {tuple(models['sharer']['kv'])}, "
        f"{models['sharer']['tokenizer']}",
        f"- fuser: {models['fuser']['params']:,} params, layer map {models['fuser']['layer_map']}, token map coverage "
        f"{models['fuser']['token_map_coverage']:.1%}",
        "",
        "Targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in config["targets"].items()),
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in config["timings_s"].items()),
        "",
        "The saved C2C model, reloaded with `AutoModelForCausalLM.from_pretrained`, answering held-out questions "
        "with `generate`:",
        "",
        *(
            f"- {e['question']} {e['choices']} -> C2C {e['c2c_answer']!r}, receiver alone {e['receiver_answer']!r}, "
            f"gold {e['gold']}"
            for e in config["examples"]
        ),
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2c-hf demo",
        description="Train two small models with different knowledge, tokenizers and architectures on the CPU, a C2C "
        "fuser between them, and compare receiver, sharer, text-to-text, routing, C2C and an oracle on questions "
        "about people only the sharer knows.",
    )
    parser.add_argument("--output", default="c2c-demo", help="output folder (report, plots, models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smaller world and shorter training (about 2 minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (results are reproducible for a given count; 1 is fastest for these "
                        "tiny models on a shared CPU)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    threads, verbosity = torch.get_num_threads(), hf_logging.get_verbosity()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the bases' load/save chatter; progress bars and the report stay
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = DemoConfig.quick_config(args.seed) if args.quick else DemoConfig.full(args.seed)
        run_demo(config, args.output)
    finally:
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)

if __name__ == "__main__":
    main()
