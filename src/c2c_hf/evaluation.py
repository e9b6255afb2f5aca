"""The paper's comparison on multiple-choice benchmarks: receiver, sharer, text-to-text, routing and C2C.

Every method answers a batch of `MCItem`s through one interface (`Method.answer`) and is timed by one harness
(`timed_predictions`): wall clock around each batch under `torch.no_grad`, divided evenly among its items, so
latencies are comparable across methods at a given batch size (the paper uses 1). Three scoring modes (`Scoring`):

- `"generate"` (the paper's protocol): greedy decoding of up to `max_new_tokens`; the answer letter is found by
  `extract_choice`;
- `"logits"`: the choice letter whose token has the largest logit at the answer position (no decoding);
- `"likelihood"`: the choice whose text, as the reply, has the largest log-likelihood per character (lm-eval's
  multiple-choice scoring, `acc_norm`; C2C scores each choice from the fused prompt cache).

and two prompts: `"choices"` (`format_prompt`: the question, lettered choices and an answer instruction) or `"open"`
(the bare question; the generated answer counts when it names exactly one choice's text, the right one, as in
`match_choice_text`), for models too small to answer lettered questions (open-answer accuracy; the choices are never
shown). Every prompt goes through one builder, `LM.render`: the question (T2T: preceded by the sharer's hint) as a
user message in the answering model's chat template. C2C answers from the receiver's prompt, the sharer running
inside the model. `write_report` writes `results.json`, `results.md` and `accuracy_latency.png`;
`c2c-hf eval --help` runs it all from the command line.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import string
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_utils import get_last_checkpoint

from .benchmarks import BENCHMARKS, MCItem, extract_choice, format_prompt, load_benchmark, match_choice_text
from .data import left_pad
from .alignment import position_ids_from_mask
from .modeling_c2c import C2CForCausalLM

logger = logging.getLogger(__name__)

METHODS = ("receiver", "sharer", "t2t", "routing", "c2c")
MODES = ("generate", "logits", "likelihood")
PROMPTS = ("choices", "open")
# Extra chat-template variables: answer directly (Qwen3-style templates otherwise open a thinking block;
# templates that do not know the variable ignore it).
CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}
HINT_INSTRUCTION = (
    "Read the multiple-choice question below and write a short hint: the background knowledge and reasoning "
    "that help to answer it. Do not state which letter is correct."
)
OPEN_HINT_INSTRUCTION = (
    "Read the question below and write a short hint: the background knowledge and reasoning that help to answer it."
)
# `--receiver/--sharer` baselines never run the fuser; a minimal placeholder fuser keeps the wrapper cheap.
PLACEHOLDER_FUSER = {"fuser_hidden_size": 8, "fuser_num_blocks": 2}
Z_95 = 1.959963984540054


# --------------------------------------------------------------------------- models and prompts


@dataclass
class LM:
    """A model that answers (a base LM, or the C2C model) with the tokenizer its prompts are written in."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def render(self, user_text: str) -> str:
        """The prompt: `user_text` as a user message in the chat template with generation prompt, or as is."""
        if not self.templated:
            return user_text
        messages = [{"role": "user", "content": user_text}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **CHAT_TEMPLATE_KWARGS
        )

    @property
    def templated(self) -> bool:
        """Whether prompts go through the chat template, which writes its own special tokens and ends with the
        generation prompt (so a reply starts without a leading space)."""
        return bool(self.tokenizer.chat_template)

    def prompt_token_ids(self, user_texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each rendered prompt (special tokens added only where no chat template writes them)."""
        prompts = [self.render(text) for text in user_texts]
        return self.tokenizer(prompts, add_special_tokens=not self.templated)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @functools.cached_property
    def pad_token_id(self) -> int:
        tokenizer = self.tokenizer
        return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)

    @functools.cached_property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids: the generation config's and the tokenizer's."""
        configured = self.model.generation_config.eos_token_id if self.model.generation_config else None
        ids = set(configured if isinstance(configured, list) else [configured]) | {self.tokenizer.eos_token_id}
        return sorted(i for i in ids if i is not None)

    @functools.cached_property
    def letter_token_ids(self) -> list[list[int]]:
        """For each letter A..Z, the tokens that spell it as the next token: the letter alone or after a space."""
        candidates = []
        for letter in string.ascii_uppercase:
            spellings = [self.tokenizer.encode(text, add_special_tokens=False) for text in (letter, " " + letter)]
            single = sorted({ids[0] for ids in spellings if len(ids) == 1})
            candidates.append(single or [spellings[0][0]])
        return candidates

    def encode(self, user_texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded `(input_ids, attention_mask)`, each `(B, L)`, of the rendered prompts."""
        ids, mask = left_pad(self.prompt_token_ids(user_texts), self.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def generate(self, user_texts: Sequence[str], max_new_tokens: int) -> list[tuple[str, int]]:
        """Greedy continuations: `(text, generated tokens including the end-of-sequence token)` per prompt."""
        ids, mask = self.encode(user_texts)
        output = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
        )
        results = []
        for row in output[:, ids.shape[1] :].tolist():
            length = next((i + 1 for i, token in enumerate(row) if token in self.eos_token_ids), len(row))
            results.append((self.tokenizer.decode(row[:length], skip_special_tokens=True).strip(), length))
        return results

    def prompt_pass(self, user_texts: Sequence[str], use_cache: bool = False) -> tuple[Any, torch.Tensor]:
        """One forward over the left-padded rendered prompts (C2C: prefill and fuse), logits kept for the last
        position only: the model's output and the prompts' `(B, P)` attention mask."""
        ids, mask = self.encode(user_texts)
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask, ids.shape[1]),
            logits_to_keep=1,
            use_cache=use_cache,
        )
        return output, mask

    def choice_scores(self, user_texts: Sequence[str], num_choices: Sequence[int]) -> list[torch.Tensor]:
        """Per prompt, the `(num_choices,)` logits of the choice letters at the answer position (the last prompt
        token); a letter's logit is the largest over its spellings (`letter_token_ids`)."""
        logits = self.prompt_pass(user_texts)[0].logits[:, -1].float().cpu()  # (B, V)
        return [
            torch.stack([logits[row, candidates].max() for candidates in self.letter_token_ids[:n]])
            for row, n in enumerate(num_choices)
        ]

    def choice_likelihoods(self, user_texts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Per prompt, the `(num_choices,)` log-likelihoods of each choice's text as the reply to the rendered prompt,
        per character of the choice (lm-eval's `acc_norm`). Each prompt runs once (C2C: prefills and fuses once);
        every choice then continues from a copy of its prompt's cache, all choices in one batch."""
        prompt, mask = self.prompt_pass(user_texts, use_cache=True)  # mask (B, P), left-padded
        first_log_probs = prompt.logits[:, -1].float().log_softmax(-1)  # (B, V): the reply's first token
        answers = [
            self.tokenizer(text if self.templated else " " + text, add_special_tokens=False)["input_ids"]
            for options in choices
            for text in options
        ]
        owners = torch.tensor([row for row, options in enumerate(choices) for _ in options], device=self.device)
        cache = prompt.cache
        cache.batch_select_indices(owners)  # one copy of its prompt's cache per choice: R rows
        width = max(len(answer) for answer in answers)
        answer_ids = torch.full((len(answers), width), self.pad_token_id, dtype=torch.long)  # (R, A), right-padded
        answer_mask = torch.zeros((len(answers), width), dtype=torch.long)
        for row, answer in enumerate(answers):
            answer_ids[row, : len(answer)], answer_mask[row, : len(answer)] = torch.tensor(answer), 1
        answer_ids, answer_mask = answer_ids.to(self.device), answer_mask.to(self.device)
        full_mask = torch.cat([mask[owners], answer_mask], dim=1)  # (R, P + A)
        logits = self.model(
            input_ids=answer_ids,
            attention_mask=full_mask,
            position_ids=position_ids_from_mask(full_mask, width),
            cache=cache,
            use_cache=True,
        ).logits.float()  # (R, A, V): position j predicts answer token j + 1
        log_probs = torch.cat([first_log_probs[owners, None], logits[:, :-1].log_softmax(-1)], dim=1)  # (R, A, V)
        token_log_probs = log_probs.gather(-1, answer_ids.unsqueeze(-1)).squeeze(-1) * answer_mask  # (R, A)
        characters = torch.tensor([len(text) for options in choices for text in options], device=self.device)
        per_character = (token_log_probs.sum(-1) / characters).cpu()  # (R,)
        return list(per_character.split([len(options) for options in choices]))

    def scores(self, user_texts: Sequence[str], items: Sequence[MCItem], mode: str) -> list[torch.Tensor]:
        """Per prompt, a `(num_choices,)` score per choice: choice-text likelihoods (`"likelihood"`) or letter logits
        (any other mode)."""
        if mode == "likelihood":
            return self.choice_likelihoods(user_texts, [item.choices for item in items])
        return self.choice_scores(user_texts, [len(item.choices) for item in items])


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


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); `(0, 1)` for `n == 0`."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The bounds are exactly 0 / 1 at 0 / n correct (no rounding residue).
    return (0.0 if correct == 0 else center - half), (1.0 if correct == n else center + half)


def paired_difference(
    predictions: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]], z: float = Z_95
) -> dict[str, Any]:
    """Accuracy of `predictions` minus that of `baseline` on the same items (report prediction dicts, matched by
    `id`), with the Wald interval of a paired difference (95% by default): two methods asked the same questions
    differ only where one is right and the other wrong, so this interval is narrower than two Wilson intervals.

    Returns `difference`, `ci95`, `n`, `only_this` (items only `predictions` gets right) and `only_baseline`. Raises
    `ValueError` when the two were evaluated on different items."""
    correct = {p["id"]: bool(p["correct"]) for p in predictions}
    baseline_correct = {p["id"]: bool(p["correct"]) for p in baseline}
    if correct.keys() != baseline_correct.keys():
        raise ValueError(
            "Paired comparison needs the same items; item ids only in the predictions: "
            f"{len(correct.keys() - baseline_correct.keys())}, only in the baseline: "
            f"{len(baseline_correct.keys() - correct.keys())}. Evaluate both with the same --limit and --seed."
        )
    n = len(correct)
    only_this = sum(correct[i] and not baseline_correct[i] for i in correct)
    only_baseline = sum(baseline_correct[i] and not correct[i] for i in correct)
    difference = (only_this - only_baseline) / n if n else 0.0
    half = z * math.sqrt(max((only_this + only_baseline) / n - difference**2, 0.0) / n) if n else 0.0
    return {
        "difference": difference,
        "ci95": [difference - half, difference + half],
        "n": n,
        "only_this": only_this,
        "only_baseline": only_baseline,
    }


# --------------------------------------------------------------------------- methods


class Method(ABC):
    """A way to answer multiple-choice questions; `answer` handles one batch and is timed by the harness."""

    name: str

    @abstractmethod
    def answer(self, items: list[MCItem]) -> list[Prediction]:
        """One prediction per item, in order."""


class Direct(Method):
    """One model answers the shared prompt: the receiver, the sharer, or C2C (receiver prompt, sharer inside)."""

    def __init__(self, name: str, lm: LM, scoring: Scoring):
        self.name, self.lm, self.scoring = name, lm, scoring

    def answer(self, items: list[MCItem]) -> list[Prediction]:
        return respond(self.lm, items, [self.scoring.question(item) for item in items], self.scoring)


class TextToText(Method):
    """T2T: the sharer writes a hint (greedy, at most `hint_tokens`), which the receiver reads before the question.

    Records per item the hint, its token count and the exact receiver prompt.
    """

    name = "t2t"

    def __init__(self, receiver: LM, sharer: LM, scoring: Scoring, hint_tokens: int = 256):
        self.receiver, self.sharer, self.scoring, self.hint_tokens = receiver, sharer, scoring, hint_tokens

    def answer(self, items: list[MCItem]) -> list[Prediction]:
        prompt = self.scoring.prompt
        hints = self.sharer.generate([hint_request(item, prompt) for item in items], self.hint_tokens)
        questions = [hinted_prompt(item, hint, prompt) for item, (hint, _) in zip(items, hints)]
        predictions = respond(self.receiver, items, questions, self.scoring)
        for prediction, (hint, hint_tokens), question in zip(predictions, hints, questions):
            receiver_prompt = self.receiver.render(question)
            prediction.details.update(hint=hint, hint_tokens=hint_tokens, receiver_prompt=receiver_prompt)
        return predictions


def confidence_features(scores: torch.Tensor) -> list[float]:
    """`[max letter probability, letter entropy / log(num choices)]` of one model on one question."""
    probabilities = scores.softmax(-1)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum() / math.log(len(scores))
    return [float(probabilities.max()), float(entropy)]


class Router:
    """Query-level router: a logistic regression on both models' confidence that picks the model to ask.

    Features of a question (`Routing.features`): `[p_r, h_r, p_s, h_s]`, each model's maximum choice probability
    `p` and normalised choice entropy `h` (a softmax over its letter logits at the answer position of its own
    prompt, or over its choice likelihoods in likelihood mode). `fit` standardises
    them and trains `P(sharer right | features)` (torch, L2-regularised, LBFGS) on questions where exactly one of the
    two models is right (labels: the sharer is the right one). `route` sends a question to the sharer when that
    probability exceeds 1/2; unfitted, it sends it to the more confident model (`p_s > p_r`).
    """

    def __init__(self, l2: float = 1e-2):
        self.l2 = l2
        self.params: torch.Tensor | None = None  # weights then bias, over standardised features
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, sharer_right: torch.Tensor) -> Router:
        """Fit on `(N, 4)` features and `(N,)` booleans: True where the sharer (not the receiver) is right."""
        features = features.float()
        self.mean = features.mean(0)
        std = features.std(0, unbiased=False)
        self.std = torch.where(std > 1e-6, std, torch.ones_like(std))
        x, y = (features - self.mean) / self.std, sharer_right.float()
        params = torch.zeros(x.shape[1] + 1, requires_grad=True)
        optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(x @ params[:-1] + params[-1], y) + self.l2 * params.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        self.params = params.detach()
        return self

    def sharer_probability(self, features: torch.Tensor) -> torch.Tensor:
        """`(N,)` fitted probability that the sharer is the right model to ask."""
        if self.params is None:
            raise ValueError("The router is not fitted: call fit() first.")
        x = (features.float() - self.mean) / self.std
        return torch.sigmoid(x @ self.params[:-1] + self.params[-1])

    def route(self, features: torch.Tensor) -> torch.Tensor:
        """`(N,)` booleans: True sends the question to the sharer."""
        if self.params is None:
            return features[:, 2] > features[:, 0]
        return self.sharer_probability(features) > 0.5


class Routing(Method):
    """Query-level routing between the receiver and the sharer (see `Router`); records each question's route.

    Its latency includes the routing features (one forward pass of each model). In logits and likelihood modes the
    chosen model's scores from those passes are the answer; in generate mode the chosen model then generates.
    """

    name = "routing"

    def __init__(self, receiver: LM, sharer: LM, scoring: Scoring, router: Router | None = None):
        if scoring.prompt != "choices" and scoring.mode != "likelihood":
            raise ValueError(
                "Routing reads each model's choice-letter confidence: use Scoring(prompt='choices'), or "
                "Scoring(mode='likelihood') to route open questions by choice likelihoods."
            )
        self.receiver, self.sharer, self.scoring = receiver, sharer, scoring
        self.router = router if router is not None else Router()

    def features(self, items: Sequence[MCItem]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """`(N, 4)` router features, and the receiver's and the sharer's choice scores per item: letter logits, or
        choice likelihoods in likelihood mode."""
        questions = [self.scoring.question(item) for item in items]
        receiver_scores = self.receiver.scores(questions, items, self.scoring.mode)
        sharer_scores = self.sharer.scores(questions, items, self.scoring.mode)
        rows = [confidence_features(r) + confidence_features(s) for r, s in zip(receiver_scores, sharer_scores)]
        return torch.tensor(rows), receiver_scores, sharer_scores

    @torch.no_grad()
    def fit(self, items: Sequence[MCItem], batch_size: int = 1) -> int:
        """Fit the router on `items` (each model judged by its choice scores); returns the informative items used
        (those where exactly one model is right). With none, the router stays unfitted (routes by confidence)."""
        features, labels = [], []
        for start in tqdm(range(0, len(items), batch_size), desc="routing fit", unit="batch"):
            batch = items[start : start + batch_size]
            x, receiver_scores, sharer_scores = self.features(batch)
            receiver_right = torch.tensor([int(s.argmax()) == item.gold for s, item in zip(receiver_scores, batch)])
            sharer_right = torch.tensor([int(s.argmax()) == item.gold for s, item in zip(sharer_scores, batch)])
            informative = receiver_right != sharer_right
            features.append(x[informative])
            labels.append(sharer_right[informative])
        x, y = torch.cat(features), torch.cat(labels)
        if len(y) == 0:
            logger.warning("No routing-fit question has exactly one model right: routing by confidence.")
            return 0
        self.router.fit(x, y)
        return len(y)

    def answer(self, items: list[MCItem]) -> list[Prediction]:
        x, receiver_scores, sharer_scores = self.features(items)
        to_sharer = self.router.route(x).tolist()
        if self.scoring.mode != "generate":
            chosen = [s if sharer else r for r, s, sharer in zip(receiver_scores, sharer_scores, to_sharer)]
            predictions = [prediction_from_scores(item, scores) for item, scores in zip(items, chosen)]
        else:  # each model generates for the questions routed to it
            by_row = {}
            for lm, sharer in ((self.receiver, False), (self.sharer, True)):
                group = [(i, item) for i, (item, choice) in enumerate(zip(items, to_sharer)) if choice == sharer]
                if group:
                    rows, questions = zip(*group)
                    answers = respond(lm, questions, [self.scoring.question(item) for item in questions], self.scoring)
                    by_row.update(zip(rows, answers))
            predictions = [by_row[i] for i in range(len(items))]
        for prediction, sharer in zip(predictions, to_sharer):
            prediction.details["route"] = "sharer" if sharer else "receiver"
        return predictions


def build_methods(
    model: C2CForCausalLM,
    receiver_tokenizer: PreTrainedTokenizerBase,
    sharer_tokenizer: PreTrainedTokenizerBase,
    names: Sequence[str] = METHODS,
    scoring: Scoring | None = None,
    hint_tokens: int = 256,
) -> list[Method]:
    """The named methods over a C2C model's receiver and sharer (and the model itself for `"c2c"`)."""
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"Unknown methods {unknown}: choose from {METHODS}.")
    scoring = scoring or Scoring()
    receiver, sharer = LM(model.receiver, receiver_tokenizer), LM(model.sharer, sharer_tokenizer)
    factories = {
        "receiver": lambda: Direct("receiver", receiver, scoring),
        "sharer": lambda: Direct("sharer", sharer, scoring),
        "t2t": lambda: TextToText(receiver, sharer, scoring, hint_tokens),
        "routing": lambda: Routing(receiver, sharer, scoring),
        "c2c": lambda: Direct("c2c", LM(model, receiver_tokenizer), scoring),
    }
    return [factories[name]() for name in names]


# --------------------------------------------------------------------------- harness


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_predictions(
    method: Method, items: Sequence[MCItem], batch_size: int = 1, desc: str | None = None
) -> list[Prediction]:
    """`method`'s predictions on `items` in batches; each item's latency is its batch's wall clock / batch size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    predictions = []
    for start in tqdm(range(0, len(items), batch_size), desc=desc or method.name, unit="batch"):
        batch = list(items[start : start + batch_size])
        _synchronize()
        began = time.perf_counter()
        with torch.no_grad():
            answers = method.answer(batch)
        _synchronize()
        latency = (time.perf_counter() - began) / len(batch)
        for prediction in answers:
            prediction.latency = latency
        predictions += answers
    return predictions


def evaluate(
    methods: Sequence[Method], benchmarks: Mapping[str, Sequence[MCItem]], batch_size: int = 1
) -> dict[str, dict[str, list[Prediction]]]:
    """Predictions per method, then per benchmark."""
    return {
        method.name: {
            name: timed_predictions(method, items, batch_size, desc=f"{method.name}/{name}")
            for name, items in benchmarks.items()
        }
        for method in methods
    }


def summarize(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Accuracy with its 95% Wilson interval, latency median / p90 (seconds per question), mean generated tokens."""
    n, correct = len(predictions), sum(p.correct for p in predictions)
    latencies = np.array([p.latency for p in predictions], dtype=float)
    summary = {
        "accuracy": correct / n if n else 0.0,
        "ci95": list(wilson_interval(correct, n)),
        "n": n,
        "correct": correct,
        "latency_median_s": float(np.median(latencies)) if n else 0.0,
        "latency_p90_s": float(np.percentile(latencies, 90)) if n else 0.0,
        "mean_generated_tokens": float(np.mean([p.tokens for p in predictions])) if n else 0.0,
    }
    hint_tokens = [p.details["hint_tokens"] for p in predictions if "hint_tokens" in p.details]
    if hint_tokens:
        summary["mean_hint_tokens"] = float(np.mean(hint_tokens))
    return summary


# --------------------------------------------------------------------------- report


def write_report(
    results: Mapping[str, Mapping[str, Sequence[Prediction]]], output_dir: str | Path, config: Mapping[str, Any]
) -> dict[str, Any]:
    """Write `results.json`, `results.md` and `accuracy_latency.png` to `output_dir`; returns the JSON content."""
    report = build_report(results, config)
    save_report(report, output_dir)
    return report


def build_report(results: Mapping[str, Mapping[str, Sequence[Prediction]]], config: Mapping[str, Any]) -> dict[str, Any]:
    """A report's JSON content: the config, and per method and benchmark the summary and every prediction."""
    return {
        "config": dict(config),
        "results": {
            method: {
                benchmark: {**summarize(predictions), "predictions": [p.to_dict() for p in predictions]}
                for benchmark, predictions in by_benchmark.items()
            }
            for method, by_benchmark in results.items()
        },
    }


def load_report(report_dir: str | Path) -> dict[str, Any]:
    """The JSON content of the report `save_report` wrote to `report_dir`."""
    return json.loads((Path(report_dir) / "results.json").read_text(encoding="utf-8"))


def save_report(report: Mapping[str, Any], output_dir: str | Path) -> None:
    """Write a report's `results.json`, `results.md` and `accuracy_latency.png` to `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (output_dir / "results.md").write_text(markdown_table(report), encoding="utf-8")
    plot_accuracy_latency(report, output_dir / "accuracy_latency.png")


# Settings that every merged report must share: rows of one table compare only when these agree. The fuser
# checkpoint (`model`) must agree only among reports with c2c rows: the baselines never run the fuser, so they may come
# from the bases alone (`--receiver/--sharer`) or from any checkpoint of the same bases.
MERGE_SETTINGS = (
    "receiver", "sharer", "dtype", "device", "mode", "prompt", "max_new_tokens", "hint_tokens", "batch_size", "limit",
    "seed", "latency",
)  # fmt: skip


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from several reports of the same bases, fuser and settings, evaluated apart (e.g. one run per
    method and benchmark, resumable across sessions): their results side by side, methods and benchmarks in canonical
    order, the source configs under `config["merged_from"]` (a merged report contributes its own sources, so the list
    stays flat). Each prediction keeps only its item id and correctness, what the paired differences need; the full
    predictions (answers, hints, latencies) stay in the source reports, so a merged table does not store them twice.

    Raises `ValueError` when a setting of `MERGE_SETTINGS` (or the fuser checkpoint of two reports with c2c rows)
    differs, a (method, benchmark) pair appears twice, or two methods were evaluated on different items of one
    benchmark."""
    if not reports:
        raise ValueError("Nothing to merge: give at least one report.")
    configs = [report["config"] for report in reports]
    with_c2c = [config for config, report in zip(configs, reports) if "c2c" in report["results"]]
    for group, keys in ((configs, MERGE_SETTINGS), (with_c2c, ("model",))):
        for config in group[1:]:
            for key in keys:
                if config.get(key) != group[0].get(key):
                    raise ValueError(
                        f"Cannot merge reports evaluated with different {key}: {group[0].get(key)!r} vs "
                        f"{config.get(key)!r}; evaluate every method with the same settings."
                    )
    first = configs[0]
    results: dict[str, dict[str, Any]] = {}
    for report in reports:
        for method, by_benchmark in report["results"].items():
            for benchmark, summary in by_benchmark.items():
                if benchmark in results.get(method, {}):
                    raise ValueError(f"{method} on {benchmark} appears in two reports; merge only one of them.")
                slim = [{"id": p["id"], "correct": p["correct"]} for p in summary["predictions"]]
                results.setdefault(method, {})[benchmark] = {**summary, "predictions": slim}
    items_seen: dict[str, tuple[str, list[str]]] = {}  # benchmark -> (first method, its item ids in order)
    for method, by_benchmark in results.items():
        for benchmark, summary in by_benchmark.items():
            ids = [p["id"] for p in summary["predictions"]]
            other, other_ids = items_seen.setdefault(benchmark, (method, ids))
            if ids != other_ids:
                raise ValueError(
                    f"{method} and {other} were evaluated on different {benchmark} items, so their accuracies do not "
                    "compare; evaluate every method with the same --limit and --seed."
                )

    def canonical(names: Sequence[str], order: Sequence[str]) -> list[str]:
        return sorted(names, key=lambda name: (order.index(name) if name in order else len(order), name))

    benchmarks = canonical({b for by_benchmark in results.values() for b in by_benchmark}, BENCHMARKS)
    methods = canonical(list(results), METHODS)
    return {
        "config": {
            "model": (with_c2c[0] if with_c2c else first).get("model"),
            **{key: first[key] for key in MERGE_SETTINGS if key in first},
            "methods": methods,
            "benchmarks": benchmarks,
            "merged_from": [source for r in reports for source in r["config"].get("merged_from", [r["config"]])],
        },
        "results": {
            method: {b: results[method][b] for b in benchmarks if b in results[method]} for method in methods
        },
    }


def _method_table(results: Mapping[str, Any], methods: Sequence[str], benchmarks: Sequence[str], cell) -> list[str]:
    """Markdown lines of a method x benchmark table; `cell(method, benchmark)` renders one cell (`-` where absent)."""
    lines = ["| method | " + " | ".join(benchmarks) + " |", "|---" * (len(benchmarks) + 1) + "|"]
    for method in methods:
        cells = [cell(method, b) if b in results[method] else "-" for b in benchmarks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def format_paired(paired: Mapping[str, Any]) -> str:
    """A `paired_difference` result as table text: points [95% interval] (only this right / only the baseline)."""
    low, high = (100 * bound for bound in paired["ci95"])
    return (
        f"{100 * paired['difference']:+.1f} [{low:+.1f}, {high:+.1f}] "
        f"({paired['only_this']} / {paired['only_baseline']})"
    )


def markdown_table(report: Mapping[str, Any]) -> str:
    """Method x benchmark table: accuracy (%) [95% Wilson interval] and median latency per question; then, when the
    report has the receiver, each other method's paired difference from it on the same items."""
    results = report["results"]
    benchmarks = list(dict.fromkeys(b for by_benchmark in results.values() for b in by_benchmark))
    config = report["config"]

    def accuracy_cell(method: str, benchmark: str) -> str:
        s = results[method][benchmark]
        low, high = (100 * bound for bound in s["ci95"])
        return f"{100 * s['accuracy']:.1f} [{low:.1f}, {high:.1f}] · {s['latency_median_s']:.3f} s (n={s['n']})"

    lines = [
        "# C2C evaluation",
        "",
        f"Accuracy (%) [95% Wilson interval] · median latency per question (s); mode `{config.get('mode')}`, "
        f"batch size {config.get('batch_size')}.",
        "",
        *_method_table(results, list(results), benchmarks, accuracy_cell),
    ]
    baseline = results.get("receiver", {})
    compared = [m for m, by_benchmark in results.items() if m != "receiver" and by_benchmark.keys() & baseline.keys()]

    def difference_cell(method: str, benchmark: str) -> str:
        if benchmark not in baseline:
            return "-"
        return format_paired(
            paired_difference(results[method][benchmark]["predictions"], baseline[benchmark]["predictions"])
        )

    if compared:
        lines += [
            "",
            "Difference from the receiver alone on the same items: points [paired 95% interval] (questions only this "
            "method gets right / only the receiver gets right).",
            "",
            *_method_table(results, compared, benchmarks, difference_cell),
        ]
    return "\n".join(lines) + "\n"


def plot_accuracy_latency(report: Mapping[str, Any], path: str | Path) -> None:
    """Accuracy vs median latency, one labelled point (with its Wilson interval) per method and benchmark."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state

    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    colors = {method: f"C{i}" for i, method in enumerate(report["results"])}
    for method, by_benchmark in report["results"].items():
        for benchmark, s in by_benchmark.items():
            x, y = s["latency_median_s"], 100 * s["accuracy"]
            low, high = (100 * v for v in s["ci95"])
            axes.errorbar(x, y, yerr=[[y - low], [high - y]], fmt="o", color=colors[method], capsize=3)
            axes.annotate(f"{method} · {benchmark}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set_xlabel("median latency per question (s)")
    axes.set_ylabel("accuracy (%)")
    config = report["config"]
    axes.set_title(f"Accuracy vs latency (mode {config.get('mode')}, batch size {config.get('batch_size')})")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=150, bbox_inches="tight")


# --------------------------------------------------------------------------- loading and CLI


def load_models(
    model: str | None = None,
    receiver: str | None = None,
    sharer: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
) -> tuple[C2CForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerBase]:
    """A C2C model (from a checkpoint, or `receiver` + `sharer` with an untrained placeholder fuser) in eval mode on
    `device`, with the tokenizers of the bases its config names (one object when both name the same repo)."""
    load_kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if model is not None:
        if Path(model).is_dir() and not (Path(model) / "config.json").exists():
            last = get_last_checkpoint(model)
            raise ValueError(
                f"{model} holds no saved model (no config.json): "
                + (f"pass a Trainer checkpoint in it, the last is {last}, " if last else "")
                + "or let training finish, which saves the model there."
            )
        c2c = AutoModelForCausalLM.from_pretrained(model, **load_kwargs)
        if not isinstance(c2c, C2CForCausalLM):
            raise ValueError(f"{model} is not a C2C checkpoint (it loads as {type(c2c).__name__}).")
    elif receiver is not None and sharer is not None:
        bases = [AutoModelForCausalLM.from_pretrained(name, **load_kwargs) for name in (receiver, sharer)]
        c2c = C2CForCausalLM.from_base_models(*bases, **PLACEHOLDER_FUSER)
    else:
        raise ValueError("Give a C2C checkpoint (model=...) or both receiver=... and sharer=....")
    config = c2c.config
    receiver_id = (config.receiver_name_or_path, config.receiver_revision)
    sharer_id = (config.sharer_name_or_path, config.sharer_revision)
    for role, (name, _) in (("receiver", receiver_id), ("sharer", sharer_id)):
        if not name:
            raise ValueError(f"The C2C config names no {role} (`{role}_name_or_path`), so its tokenizer is unknown.")
    load_tokenizer = functools.cache(lambda name, revision: AutoTokenizer.from_pretrained(name, revision=revision))
    receiver_tokenizer, sharer_tokenizer = load_tokenizer(*receiver_id), load_tokenizer(*sharer_id)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return c2c.to(device).eval(), receiver_tokenizer, sharer_tokenizer


def _parse_paths(pairs: Sequence[str]) -> dict[str, str]:
    paths = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in BENCHMARKS:
            raise ValueError(f"--benchmark-paths takes name=path with a name in {BENCHMARKS}, got {pair!r}.")
        paths[name] = path
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2c-hf eval",
        description="Compare receiver, sharer, text-to-text (t2t), query-level routing and C2C on multiple-choice "
        "benchmarks: accuracy with 95% Wilson intervals and latency per question.",
    )
    models = parser.add_argument_group("models (a C2C checkpoint, or --receiver and --sharer for the baselines only)")
    models.add_argument("--model", help="C2C checkpoint directory or Hub id; bases and tokenizers come from its config")
    models.add_argument("--receiver", help="receiver id/path (without --model: baselines, no c2c)")
    models.add_argument("--sharer", help="sharer id/path (without --model: baselines, no c2c)")
    models.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    models.add_argument("--device", help="default: cuda if available, else cpu")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--benchmarks", nargs="+", choices=BENCHMARKS, default=["arc_challenge", "openbookqa", "mmlu_redux", "ceval"]
    )
    data.add_argument(
        "--benchmark-paths", nargs="*", default=[], metavar="NAME=PATH", help="local files (default: the Hub)"
    )
    data.add_argument("--limit", type=int, help="evaluate a deterministic subset of this many items per benchmark")
    data.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    run = parser.add_argument_group("evaluation")
    run.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        help="default: all (without c2c when no --model, without routing for --prompt open unless --mode likelihood)",
    )
    run.add_argument(
        "--mode",
        default="generate",
        choices=MODES,
        help="generate: greedy answer, read for a letter or choice text; logits: the largest letter logit; "
        "likelihood: the choice text most likely as the reply, per character (lm-eval's acc_norm)",
    )
    run.add_argument(
        "--prompt",
        default="choices",
        choices=PROMPTS,
        help="choices: lettered multiple choice; open: "
        "the bare question, right when the answer names the right choice's text and no other",
    )
    run.add_argument("--max-new-tokens", type=int, default=64)
    run.add_argument("--hint-tokens", type=int, default=256, help="token budget of the sharer's t2t hint")
    run.add_argument("--batch-size", type=int, default=1, help="questions per batch (left padding); the paper uses 1")
    run.add_argument("--routing-fit-benchmark", choices=BENCHMARKS, help="fit the router on this benchmark's items "
                     "(items also evaluated are excluded); without it the router routes by confidence")
    run.add_argument("--routing-fit-split", help="Hub split of the routing-fit benchmark")
    run.add_argument("--routing-fit-limit", type=int, default=200, help="at most this many routing-fit items")
    run.add_argument("--output", required=True, help="output directory")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="REPORT_DIR",
        help="instead of evaluating: merge finished reports (folders with results.json, same model and settings, "
        "e.g. one per method) into one table under --output",
    )
    return parser


def merge_report_dirs(report_dirs: Sequence[str | Path], output_dir: str | Path) -> dict[str, Any]:
    """`merge_reports` over the `results.json` of each folder, saved to `output_dir`; returns the merged report."""
    paths = [Path(folder) / "results.json" for folder in report_dirs]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"No report at {', '.join(missing)}: merge folders written by `c2c-hf eval --output`.")
    report = merge_reports([load_report(folder) for folder in report_dirs])
    save_report(report, output_dir)
    return report


def main(argv: list[str] | None = None) -> None:
    """`c2c-hf eval ...`: load, evaluate every method on every benchmark, write the report, print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge:
        if args.model or args.receiver or args.sharer:
            parser.error("--merge reads finished reports and evaluates nothing: give it without models")
        try:
            print(markdown_table(merge_report_dirs(args.merge, args.output)))
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        return
    if args.model is None and (args.receiver is None or args.sharer is None):
        parser.error("give --model (a C2C checkpoint) or both --receiver and --sharer")
    if args.model is not None and (args.receiver or args.sharer):
        parser.error("--receiver/--sharer come from the --model checkpoint's config; give one or the other")
    routes = args.prompt == "choices" or args.mode == "likelihood"  # routing needs letters or likelihoods
    default_methods = [m for m in METHODS if (m != "c2c" or args.model) and (m != "routing" or routes)]
    methods = args.methods or default_methods
    if "c2c" in methods and args.model is None:
        parser.error(
            "method c2c needs a trained fuser: pass --model <C2C checkpoint> (an untrained fuser is meaningless)"
        )
    try:
        scoring = Scoring(args.mode, args.max_new_tokens, args.prompt)
    except ValueError as error:
        parser.error(str(error))
    if "routing" in methods and not routes:
        parser.error(
            "routing reads letter confidences or choice likelihoods: drop it from --methods, use --prompt choices "
            "or --mode likelihood"
        )
    try:
        paths = _parse_paths(args.benchmark_paths)
    except ValueError as error:
        parser.error(str(error))

    benchmarks = {
        name: load_benchmark(name, paths.get(name), limit=args.limit, seed=args.seed) for name in args.benchmarks
    }
    model, receiver_tokenizer, sharer_tokenizer = load_models(
        args.model, args.receiver, args.sharer, args.dtype, args.device
    )
    built = build_methods(model, receiver_tokenizer, sharer_tokenizer, methods, scoring, args.hint_tokens)
    config = {
        **vars(args),
        "receiver": model.config.receiver_name_or_path,  # the bases evaluated, also when they come from --model
        "sharer": model.config.sharer_name_or_path,
        "methods": methods,
        "device": str(model.device),
        "latency": "wall clock per batch / batch size",
    }
    routing = next((m for m in built if isinstance(m, Routing)), None)
    if routing is not None and args.routing_fit_benchmark:
        evaluated = {item.id for items in benchmarks.values() for item in items}
        fit_name = args.routing_fit_benchmark
        pool = load_benchmark(fit_name, paths.get(fit_name), split=args.routing_fit_split)
        fit_items = [item for item in pool if item.id not in evaluated][: args.routing_fit_limit]
        config["routing_fit"] = {"items": len(fit_items), "informative": routing.fit(fit_items, args.batch_size)}

    results = evaluate(built, benchmarks, args.batch_size)
    print(markdown_table(write_report(results, args.output, config)))


__all__ = [
    "LM",
    "METHODS",
    "Direct",
    "Method",
    "Prediction",
    "Router",
    "Routing",
    "Scoring",
    "TextToText",
    "build_methods",
    "confidence_features",
    "evaluate",
    "format_paired",
    "hint_request",
    "hinted_prompt",
    "load_models",
    "main",
    "markdown_table",
    "merge_report_dirs",
    "merge_reports",
    "paired_difference",
    "plot_accuracy_latency",
    "question_prompt",
    "respond",
    "save_report",
    "summarize",
    "timed_predictions",
    "wilson_interval",
    "write_report",
]
