"""The trained text-to-text baseline: the receiver fine-tuned (LoRA) to read the sharer's written hints.

Plain text-to-text asks a receiver that was never trained on the sharer's hints to read them; C2C's fuser, in
contrast, is trained on the task. To compare like with like, this baseline gets what the fuser gets: the same
questions about the fuser-training people and the same number of optimiser steps and batch size (with the fuser's
"until learnt" schedule: the same rule, probe size and cap), spent on a LoRA of the receiver reading the sharer's hint
before each question. No C2C paper reports this baseline.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence

import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import MCItem
from ..evaluation import LM, TextToText, hint_request, hinted_prompt
from .bases import answer_text, encode_chat, pretrain
from .schedule import DecayWhenLearnt, answer_accuracy

# Every linear map of the receiver's attention and MLP blocks (the Qwen3/Llama module names).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainedTextToText(TextToText):
    """Text-to-text with the hint-trained receiver (`train_hint_reader`): the sharer writes, the tuned receiver reads."""

    name = "t2t_trained"


def sharer_hints(
    sharer: LM, items: Sequence[MCItem], max_new_tokens: int, batch_size: int = 64, prompt: str = "choices"
) -> dict[str, str]:
    """The sharer's greedy hint for each item's question (its text-to-text request for `prompt`), by item id."""
    hints = {}
    for start in range(0, len(items), batch_size):
        batch = list(items[start : start + batch_size])
        with torch.no_grad():
            written = sharer.generate([hint_request(item, prompt) for item in batch], max_new_tokens)
        hints.update({item.id: text for item, (text, _) in zip(batch, written)})
    return hints


def _fact_key(item: MCItem) -> str:
    """`person/attribute` of a world question id (`person/attribute/phrasing#k`)."""
    return "/".join(item.id.split("/")[:2])


def train_hint_reader(
    receiver: PreTrainedModel,
    receiver_tokenizer: PreTrainedTokenizerBase,
    sharer: LM,
    items: Sequence[MCItem],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    rank: int,
    hint_tokens: int,
    seed: int,
    workdir: str,
    progress: bool = True,
    until_learnt: Callable[[Callable[[], float]], DecayWhenLearnt] | None = None,
    probe_questions: int = 64,
    prompt: str = "choices",
    answer: Callable[[MCItem], str] = answer_text,
    hint_batch_size: int = 64,
    hint_key: Callable[[MCItem], str] = _fact_key,
) -> PreTrainedModel:
    """A copy of `receiver` with a rank-`rank` LoRA trained (then merged) to answer `items` from the sharer's hints.

    The sharer writes one hint per `hint_key` (by default a world fact, `person/attribute` of the question id: the
    first question on it, as it writes a person's whole profile whatever the question's phrasing; `lambda item:
    item.id` for a hint per question) and every question with that key is read with it; `steps` x `batch_size`
    examples are drawn from the questions in a seeded shuffle, and trained with the demo's pretraining loop (loss on
    the answer only).
    `until_learnt` (the fuser's rule, given a probe) makes the schedule the fuser's "until learnt" one, probed on the
    first `probe_questions` of `items` read with their hints; `steps` is then its cap. `prompt` ("choices" or
    "open") and `answer` (the reply trained on) follow the fuser's data: the demo's answer the choice's text.
    """
    first_per_key: dict[str, MCItem] = {}
    for item in items:
        first_per_key.setdefault(hint_key(item), item)
    hints = sharer_hints(sharer, list(first_per_key.values()), hint_tokens, hint_batch_size, prompt)
    rng = random.Random(f"hint-reader-{seed}")
    drawn = [items[i % len(items)] for i in range(steps * batch_size)]
    rng.shuffle(drawn)
    examples = [
        encode_chat(receiver_tokenizer, hinted_prompt(item, hints[first_per_key[hint_key(item)].id], prompt),
                    answer(item), prompt_weight=0.0)
        for item in drawn
    ]  # fmt: skip
    torch.manual_seed(seed)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
    tuned = get_peft_model(copy.deepcopy(receiver), lora)
    schedule = None
    if until_learnt is not None:
        probe = list(items[:probe_questions])
        texts = [hinted_prompt(item, hints[first_per_key[hint_key(item)].id], prompt) for item in probe]
        reader = LM(tuned, receiver_tokenizer)
        schedule = until_learnt(lambda: answer_accuracy(reader, probe, texts, 8, prompt))
    pretrain(tuned, examples, steps=steps, batch_size=batch_size, lr=lr, pad_token_id=receiver_tokenizer.pad_token_id,
             seed=seed, workdir=workdir, progress=progress, until_learnt=schedule)  # fmt: skip
    return tuned.merge_and_unload().eval()


__all__ = ["LORA_TARGETS", "TrainedTextToText", "sharer_hints", "train_hint_reader"]
