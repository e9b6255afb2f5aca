"""How a question is asked and its answer read: the prompts (`question_prompt`, and text-to-text's `hint_request`
and `hinted_prompt`), `Scoring` (mode and prompt style), `Prediction` (one answer), and `respond` (an LM's answers
read as a `Scoring` says).

Three modes: `"generate"` (the paper's protocol: greedy decoding of up to `max_new_tokens`, the answer letter found
by `extract_choice`), `"logits"` (the choice letter whose token has the largest logit at the answer position, no
decoding) and `"likelihood"` (the choice whose text, as the reply, has the largest log-likelihood per character:
lm-eval's multiple-choice scoring, `acc_norm`; C2C scores each choice from the fused prompt cache). Two prompts:
`"choices"` (`format_prompt`: the question, lettered choices and an answer instruction) or `"open"` (the bare
question; a generated answer counts when it names exactly one choice's text, the right one, as in
`match_choice_text`), for models too small to answer lettered questions (the choices are never shown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import MCItem, format_prompt
from .lm import LM
from .tasks import extract_choice, match_choice_text

MODES = ("generate", "logits", "likelihood")
PROMPTS = ("choices", "open")
HINT_INSTRUCTION = (
    "Read the multiple-choice question below and write a short hint: the background knowledge and reasoning "
    "that help to answer it. Do not state which letter is correct."
)
OPEN_HINT_INSTRUCTION = (
    "Read the question below and write a short hint: the background knowledge and reasoning that help to answer it."
)


def question_prompt(item: MCItem, prompt: str = "choices") -> str:
    """What every method is asked: `format_prompt(item)` (`"choices"`) or the bare question (`"open"`)."""
    if prompt not in PROMPTS:
        raise ValueError(f"Unknown prompt {prompt!r}: use one of {PROMPTS}.")
    return item.question if prompt == "open" else format_prompt(item)


def hint_request(item: MCItem, prompt: str = "choices") -> str:
    """The sharer's T2T task: the question and its choices (the shared prompt minus its answer instruction), or the
    bare question (`"open"`)."""
    if prompt == "open":
        return f"{OPEN_HINT_INSTRUCTION}\n\n{question_prompt(item, prompt)}"
    question_and_choices = format_prompt(item).rsplit("\n\n", 1)[0]
    return f"{HINT_INSTRUCTION}\n\n{question_and_choices}"


def hinted_prompt(item: MCItem, hint: str, prompt: str = "choices") -> str:
    """The receiver's T2T question: the sharer's hint, then the question as every method asks it."""
    return f"Hint: {hint}\n\n{question_prompt(item, prompt)}"


# --------------------------------------------------------------------------- predictions and scoring


@dataclass
class Prediction:
    """One answer: the chosen choice index (None if no letter was found), the output text and its token count.

    `latency` (seconds) is set by the harness; `details` holds method-specific records (T2T hint, routing route).
    """

    item: MCItem
    predicted: int | None
    text: str
    tokens: int
    details: dict[str, Any] = field(default_factory=dict)
    latency: float = 0.0

    @property
    def correct(self) -> bool:
        return self.predicted == self.item.gold

    def to_dict(self) -> dict[str, Any]:
        letters = self.item.letters
        return {
            "id": self.item.id,
            "gold": letters[self.item.gold],
            "predicted": None if self.predicted is None else letters[self.predicted],
            "correct": self.correct,
            "text": self.text,
            "tokens": self.tokens,
            "latency": self.latency,
            **self.details,
        }


@dataclass(frozen=True)
class Scoring:
    """How a question is asked and its answer read: `mode` `"generate"` (greedy, up to `max_new_tokens`),
    `"logits"` (the largest letter logit) or `"likelihood"` (the choice text most likely as the reply, per character:
    lm-eval's multiple-choice scoring, for models too small to answer with a letter); `prompt` `"choices"` (lettered,
    generated answers read by `extract_choice`) or `"open"` (the bare question, generated answers read by the one
    choice text they name)."""

    mode: str = "generate"
    max_new_tokens: int = 64
    prompt: str = "choices"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown scoring mode {self.mode!r}: use one of {MODES}.")
        if self.prompt not in PROMPTS:
            raise ValueError(f"Unknown prompt {self.prompt!r}: use one of {PROMPTS}.")
        if self.prompt == "open" and self.mode == "logits":
            raise ValueError("Open prompts show no letters to score: use mode 'generate' with prompt 'open'.")

    def question(self, item: MCItem) -> str:
        return question_prompt(item, self.prompt)

    def read(self, item: MCItem, text: str) -> int | None:
        """The choice a generated answer names, or None."""
        if self.prompt == "open":
            return match_choice_text(text, item.choices)
        return extract_choice(text, len(item.choices), item.choices)


def prediction_from_scores(item: MCItem, scores: torch.Tensor) -> Prediction:
    """Logits and likelihood modes: the choice with the largest score (no tokens generated)."""
    choice = int(scores.argmax())
    return Prediction(item, choice, item.letters[choice], 0)


def respond(lm: LM, items: Sequence[MCItem], user_texts: Sequence[str], scoring: Scoring) -> list[Prediction]:
    """`lm`'s answers to `user_texts` (one per item), read as `scoring` says."""
    if scoring.mode != "generate":
        return [prediction_from_scores(item, s) for item, s in zip(items, lm.scores(user_texts, items, scoring.mode))]
    outputs = lm.generate(user_texts, scoring.max_new_tokens)
    return [Prediction(item, scoring.read(item, text), text, tokens) for item, (text, tokens) in zip(items, outputs)]
