"""The analysed prompts: `Example` (receiver token ids, how to score an answer) and how to build it from texts,
multiple-choice items or a jsonl file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from ..data import MCItem, format_prompt
from ..evaluation.lm import LM


@dataclass
class Example:
    """One analysed prompt, in receiver token ids.

    Free-form answers are scored by answer loss and first-answer-token accuracy; multiple-choice items (no answer
    tokens, `choice_token_ids` and `gold` set) by the largest choice-letter logit at the answer position.
    """

    prompt_ids: torch.Tensor  # (L,), L >= 2: positions [0, L-1) form the prompt cache
    answer_ids: torch.Tensor  # (M,); empty for multiple choice
    context_ids: torch.Tensor | None = None  # (C,): the richer context of the enrichment oracle
    choice_token_ids: list[list[int]] | None = None  # per choice letter, the token ids that spell it
    gold: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_ids.dim() != 1 or len(self.prompt_ids) < 2:
            raise ValueError(
                f"An example needs a 1-D prompt of at least 2 tokens, got shape {tuple(self.prompt_ids.shape)}."
            )
        if len(self.answer_ids) == 0 and self.choice_token_ids is None:
            raise ValueError("An example needs answer tokens, or choice_token_ids and gold (multiple choice).")

    @property
    def is_choice(self) -> bool:
        return self.choice_token_ids is not None

    def to(self, device: torch.device) -> Example:
        context = None if self.context_ids is None else self.context_ids.to(device)
        return replace(
            self, prompt_ids=self.prompt_ids.to(device), answer_ids=self.answer_ids.to(device), context_ids=context
        )

    def score(self, logits: torch.Tensor) -> dict[str, Any]:
        """Score the logits `(1 + M, V)` of `[last prompt token, answer...]`: `correct` (0/1) and `loss` or `scores`."""
        if self.is_choice:
            scores = torch.stack([logits[0, ids].max() for ids in self.choice_token_ids])  # (num_choices,)
            prediction = int(scores.argmax())
            return {"correct": float(prediction == self.gold), "prediction": prediction, "scores": scores.tolist()}
        answer_logits = logits[: len(self.answer_ids)].float()  # (M, V): position j predicts answer token j
        return {
            "correct": float(answer_logits[0].argmax() == self.answer_ids[0]),
            "loss": float(F.cross_entropy(answer_logits, self.answer_ids)),
        }


def summarize(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy (and answer loss, for free-form answers) of per-example scores."""
    summary: dict[str, Any] = {"n": len(scores), "accuracy": sum(s["correct"] for s in scores) / max(len(scores), 1)}
    if scores and "loss" in scores[0]:
        summary["loss"] = sum(s["loss"] for s in scores) / len(scores)
    return summary


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def example_from_texts(row: dict[str, str], tokenizer: PreTrainedTokenizerBase, chat_template: bool = False) -> Example:
    """An `Example` from `{"prompt", "answer", "context"?}` texts, tokenized as written (no special tokens added).

    `chat_template=True` renders the prompt as a user message in the tokenizer's chat template (as `c2c-hf eval`
    does); the context, if any, still goes in front of the whole rendered prompt.
    """
    prompt = LM(None, tokenizer).render(row["prompt"]) if chat_template else row["prompt"]
    context = row.get("context")
    return Example(
        _encode(tokenizer, prompt),
        _encode(tokenizer, row["answer"]),
        None if not context else _encode(tokenizer, context),
    )


def example_from_item(item: MCItem, tokenizer: PreTrainedTokenizerBase) -> Example:
    """A multiple-choice `Example`: the item's prompt in the chat template, scored by choice-letter logits."""
    lm = LM(None, tokenizer)  # LM's prompt rendering and letter tokens need only the tokenizer
    ids = torch.tensor(lm.prompt_token_ids([format_prompt(item)])[0], dtype=torch.long)
    return Example(ids, ids.new_empty(0), choice_token_ids=lm.letter_token_ids[: len(item.choices)], gold=item.gold)


def load_examples(path: str | Path, tokenizer: PreTrainedTokenizerBase, chat_template: bool = False) -> list[Example]:
    """Examples from a jsonl file of `{"prompt", "answer", "context"?}` rows."""
    with open(path, encoding="utf-8") as f:
        return [example_from_texts(json.loads(line), tokenizer, chat_template) for line in f if line.strip()]


def as_examples(
    rows: Iterable[Example | MCItem | dict], tokenizer: PreTrainedTokenizerBase | None = None
) -> list[Example]:
    """`Example`s from examples, multiple-choice items or text rows (the last two need the receiver's tokenizer)."""
    examples = []
    for row in rows:
        if isinstance(row, Example):
            examples.append(row)
            continue
        if tokenizer is None:
            raise ValueError(
                f"A tokenizer is needed to analyse {type(row).__name__} rows; pass Example objects otherwise."
            )
        examples.append(
            example_from_item(row, tokenizer) if isinstance(row, MCItem) else example_from_texts(row, tokenizer)
        )
    return examples


__all__ = ["Example", "as_examples", "example_from_item", "example_from_texts", "load_examples", "summarize"]
