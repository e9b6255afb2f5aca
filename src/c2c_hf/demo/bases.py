"""The demo's two base models, trained from scratch: their tokenizers, architectures, training texts and pretraining.

The receiver (Qwen3-like, word-level tokenizer) and the sharer (Llama-like, byte-pair tokenizer) differ in
vocabulary, depth and head shapes, so C2C has to align tokens and project KV caches between them. What each learns
is decided here: the sharer learns the facts of the fuser-training, validation and test people; the receiver learns the
multiple-choice format, the country of every city, and to answer from facts stated in its prompt (including the
two-hop country questions), and never sees a fact of those people.
Pretraining is the stock `transformers.Trainer` with a per-token weighted next-token loss.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Trainer,
    TrainingArguments,
)

from ..data import MCItem, format_prompt
from ..evaluation import hint_request, hinted_prompt
from .schedule import DecayWhenLearnt
from .world import ATTRIBUTES, COUNTRY_STATEMENTS, SHARER_ROLES, STATEMENTS, World

# ChatML-style markers, shared by both tokenizers (special tokens: they map by string in the token alignment).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IM_START, IM_END, PAD, UNK = "<|im_start|>", "<|im_end|>", "<pad>", "<unk>"


# --------------------------------------------------------------------------- tokenizers


def _wrap(backend, chat_template: str = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=IM_END, pad_token=PAD, unk_token=UNK, chat_template=chat_template,
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


def tokenizer_corpus(world: World) -> list[str]:
    """Every kind of text the demo writes: statements, questions, the MC prompt, the hint request, the chat roles."""
    rng = random.Random(world.seed)
    item = world.question(world.entities["context"][0] if world.entities["context"] else world.entities["test"][0],
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


def _build(config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


# --------------------------------------------------------------------------- pretraining texts


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
    tokenizer: PreTrainedTokenizerFast,
    user: str,
    answer: str,
    prompt_weight: float,
    heavy: dict[int, float] | None = None,
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
    world: World,
    tokenizer,
    count: int,
    seed: int,
    bio_share: float = 0.5,
    mc_share: float = 0.3,
    value_weight: float = 1.0,
    prompt_weight: float = 1.0,
) -> list[Example]:
    """What the sharer learns, about every person but the context-only names: statements (biographies of 1-4 facts,
    two people per sequence), multiple-choice questions (answer: the choice's text) and hint requests (answer:
    everything it knows about the person, `World.profile`). `value_weight` weights the loss on attribute values
    (in statements, answers and hints) and on the person's name in hints."""
    rng = random.Random(f"sharer-data-{seed}")
    known = [e for role in SHARER_ROLES for e in world.entities[role]]
    heavy = {i: value_weight for i in value_token_ids(tokenizer)}
    examples = []
    for _ in range(count):
        kind = rng.random()
        entity = rng.choice(known)
        if kind < bio_share:
            other = rng.choice(known)
            text = (
                world.biography(entity, rng, rng.randint(1, 4)) + " " + world.biography(other, rng, rng.randint(1, 4))
            )
            examples.append(encode_text(tokenizer, text, heavy))
        else:
            item = world.question(entity, rng.choice(world.attributes), rng)
            if kind < bio_share + mc_share:
                examples.append(encode_chat(tokenizer, format_prompt(item), answer_text(item), prompt_weight, heavy))
            else:  # the hint names the person four times: a wrong name derails it, so names weigh as values do
                name_ids = tokenizer(entity.name, add_special_tokens=False)["input_ids"]
                hint_heavy = {**heavy, **{i: value_weight for i in name_ids}}
                examples.append(
                    encode_chat(tokenizer, hint_request(item), world.profile(entity), prompt_weight, hint_heavy)
                )
    return examples


def receiver_examples(
    world: World,
    tokenizer,
    count: int,
    seed: int,
    multi_fact_share: float = 0.5,
    country_share: float = 0.25,
    curriculum_length: int | None = None,
) -> list[Example]:
    """What the receiver learns: the multiple-choice format and answering from a hint in its prompt, about
    context-only names whose facts are drawn afresh for every example (so that only reading works). It never sees a
    fact of a fuser, validation or test person. A curriculum over the first `curriculum_length` examples (default:
    all): the hint is the fact alone for the first 30%; then, with a share growing to `multi_fact_share` at 60%, the
    fact among other facts of the person.

    A `country_share` of the examples teaches its own knowledge, the country of every city (`World.country_of`:
    statements and questions, half of them), and the two-hop reading a country question needs: the hint states the
    person's city, the answer is that city's country."""
    rng = random.Random(f"receiver-data-{seed}")
    length = max((curriculum_length or count) - 1, 1)
    examples = []
    for index in range(count):
        text, item = receiver_text(world, rng, min(index / length, 1.0), multi_fact_share, country_share)
        examples.append(encode_text(tokenizer, text) if item is None else
                        encode_chat(tokenizer, text, answer_text(item), prompt_weight=0.1))  # fmt: skip
    return examples


def receiver_text(
    world: World, rng: random.Random, progress: float, multi_fact_share: float, country_share: float
) -> tuple[str, MCItem | None]:
    """One receiver training text at curriculum `progress` (0..1): `(statement, None)` or `(user turn, question)`."""
    entity = world.random_entity(rng.choice(world.names("context")), rng)
    country = rng.random() < country_share
    attribute = "city" if country else rng.choice(world.attributes)
    if country and rng.random() < 0.5:  # the receiver's own knowledge: a city's country
        city = entity.value("city")
        if rng.random() < 0.5:
            return world.country_statement(city, rng.randrange(len(COUNTRY_STATEMENTS))), None
        item = world.city_country_question(city, rng)
        return format_prompt(item), item
    item = world.country_question(entity, rng) if country else world.question(entity, attribute, rng)
    if rng.random() >= multi_fact_share * min(max((progress - 0.3) / 0.3, 0.0), 1.0):
        hint = world.statement(entity, attribute, rng.randrange(len(STATEMENTS[attribute])))
    else:
        others = [a for a in world.attributes if a != attribute]
        chosen = [attribute, *rng.sample(others, rng.randint(min(1, len(others)), len(others)))]
        rng.shuffle(chosen)
        hint = " ".join(world.statement(entity, a, rng.randrange(len(STATEMENTS[a]))) for a in chosen)
    return hinted_prompt(item, hint), item


def receiver_probe(
    world: World, count: int, seed: int, multi_fact_share: float, country_share: float
) -> tuple[list[MCItem], list[str]]:
    """`count` questions drawn as the receiver's last training examples are (context-only names, facts drawn afresh,
    the curriculum's final mix), with their user turns: what its schedule probes (training data, no scored person)."""
    rng = random.Random(f"receiver-probe-{seed}")
    items, texts = [], []
    while len(items) < count:
        text, item = receiver_text(world, rng, 1.0, multi_fact_share, country_share)
        if item is not None:
            items.append(item)
            texts.append(text)
    return items, texts


# --------------------------------------------------------------------------- pretraining


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


@dataclass
class WeightedLMCollator:
    """Right-pads `Example`s into a causal-LM batch: `input_ids` and `attention_mask` `(B, L)`, and as `labels` the
    pair `(input_ids, weights)` that `WeightedLMLoss` reads (padding weighs 0)."""

    pad_token_id: int

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        ids = pad_sequence([torch.tensor(e.ids) for e in examples], batch_first=True, padding_value=self.pad_token_id)
        weights = pad_sequence([torch.tensor(e.weights) for e in examples], batch_first=True)  # (B, L), 0 at padding
        mask = pad_sequence([torch.ones(len(e.ids), dtype=torch.long) for e in examples], batch_first=True)
        return {"input_ids": ids, "attention_mask": mask, "labels": (ids, weights)}


class WeightedLMLoss:
    """The Trainer's `compute_loss_func`: next-token cross-entropy weighted per predicted token,
    `sum(w * loss) / sum(w)` over the batch. Keeps every step's loss in `step_losses` (one call per step: no
    gradient accumulation)."""

    def __init__(self) -> None:
        self.step_losses: list[float] = []

    def __call__(
        self, outputs: Any, labels: tuple[torch.Tensor, torch.Tensor], num_items_in_batch: Any = None
    ) -> torch.Tensor:  # `num_items_in_batch` unused: the weights normalise the loss
        ids, weights = labels  # (B, L) each
        logits = outputs.logits[:, :-1]  # (B, L-1, V)
        token_loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        token_weights = weights[:, 1:].flatten()
        loss = (token_loss * token_weights).sum() / token_weights.sum()
        self.step_losses.append(loss.item())
        return loss


def pretrain(
    model: PreTrainedModel,
    examples: Sequence[Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    pad_token_id: int,
    seed: int,
    workdir: str,
    progress: bool = True,
    until_learnt: DecayWhenLearnt | None = None,
) -> list[float]:
    """Train a base model from scratch on `examples` with the stock `Trainer`, one pass in `length_buckets` order
    (AdamW with weight decay on every parameter, warm-up times cosine decay over `steps`, gradients clipped at norm
    1, the weighted next-token loss); returns the loss of every step. With `until_learnt`, its schedule replaces the
    cosine (constant until its probe passes, then decay; `steps` is then its `max_steps`). `progress=False` hides
    the progress bar and loss logs (a run in a background process)."""
    order = [index for batch in length_buckets(len(examples), [len(e.ids) for e in examples], batch_size, seed)
             for index in batch]  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        until_learnt.factor if until_learnt is not None else
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))),
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=workdir, max_steps=steps, per_device_train_batch_size=batch_size, max_grad_norm=1.0,
        train_sampling_strategy="sequential", logging_steps=max(1, steps // 4) if progress else steps + 1,
        save_strategy="no", report_to="none",
        use_cpu=True, seed=seed, dataloader_num_workers=0, disable_tqdm=not progress,
    )  # fmt: skip
    loss = WeightedLMLoss()
    trainer = Trainer(
        model=model, args=args, train_dataset=[examples[i] for i in order],
        data_collator=WeightedLMCollator(pad_token_id), compute_loss_func=loss, optimizers=(optimizer, schedule),
        callbacks=[until_learnt] if until_learnt is not None else None,
    )  # fmt: skip
    trainer.train()
    model.eval()
    return loss.step_losses


__all__ = [
    "CHAT_TEMPLATE",
    "Example",
    "WeightedLMCollator",
    "WeightedLMLoss",
    "answer_text",
    "build_receiver",
    "build_sharer",
    "encode_chat",
    "encode_text",
    "length_buckets",
    "pretrain",
    "receiver_examples",
    "receiver_probe",
    "receiver_text",
    "sharer_examples",
    "train_tokenizers",
    "value_token_ids",
]
