"""The compared methods and the timing harness.

Every method answers a batch of `MCItem`s through one interface (`Method.answer`): `Direct` (the receiver, the
sharer, or C2C answering the shared prompt), `TextToText` (the sharer's hint, then the receiver) and `Routing`
(a `Router` picks the receiver or the sharer per question). `timed_predictions` times them all alike: wall clock
around each batch under `torch.no_grad`, divided evenly among its items, so latencies compare across methods at a
given batch size (the paper uses 1).

scikit-learn (the router's classifier) is imported on first use, which keeps `import c2c_hf` light.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..data import MCItem
from ..modeling_c2c import C2CForCausalLM
from .lm import LM
from .scoring import Prediction, Scoring, hint_request, hinted_prompt, prediction_from_scores, respond

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)

METHODS = ("receiver", "sharer", "t2t", "routing", "c2c")


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
    prompt, or over its choice likelihoods in likelihood mode). `fit` standardises them and trains
    `P(sharer right | features)` (scikit-learn's `LogisticRegression`) on questions where exactly one of the two
    models is right (labels: the sharer is the right one); its objective is the mean log-loss plus
    `l2 * ||weights||^2` (the intercept unpenalised). Fitted on one label only, the probability is that label's
    (0 or 1). `route` sends a question to the sharer when the probability exceeds 1/2; unfitted, it sends it to the
    more confident model (`p_s > p_r`).
    """

    def __init__(self, l2: float = 1e-2):
        self.l2 = l2
        self.classifier: Pipeline | None = None  # standardisation, then the classifier

    def fit(self, features: torch.Tensor, sharer_right: torch.Tensor) -> Router:
        """Fit on `(N, 4)` features and `(N,)` booleans: True where the sharer (not the receiver) is right."""
        from sklearn.dummy import DummyClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = features.double().numpy(), sharer_right.bool().numpy()
        # scikit-learn minimises C * sum(log-loss) + ||w||^2 / 2, which is the mean log-loss + l2 * ||w||^2 for
        # C = 1 / (2 * N * l2).
        classifier = (
            LogisticRegression(C=1 / (2 * len(y) * self.l2), max_iter=1000)
            if len(np.unique(y)) > 1
            else DummyClassifier(strategy="prior")
        )
        self.classifier = make_pipeline(StandardScaler(), classifier).fit(x, y)
        return self

    def sharer_probability(self, features: torch.Tensor) -> torch.Tensor:
        """`(N,)` fitted probability that the sharer is the right model to ask."""
        if self.classifier is None:
            raise ValueError("The router is not fitted: call fit() first.")
        probabilities = self.classifier.predict_proba(features.double().numpy())  # (N, labels seen in fit)
        labels = list(self.classifier.classes_)
        sharer = probabilities[:, labels.index(True)] if True in labels else np.zeros(len(probabilities))
        return torch.from_numpy(sharer).float()

    def route(self, features: torch.Tensor) -> torch.Tensor:
        """`(N,)` booleans: True sends the question to the sharer."""
        if self.classifier is None:
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
        """Fit the router on `items`; returns the informative items used (those where exactly one model is right).
        Each model is judged as it will answer: by its choice scores, or, in generate mode, by its generated answer.
        With no informative item the router stays unfitted (routes by confidence)."""
        features, labels = [], []
        for start in tqdm(range(0, len(items), batch_size), desc="routing fit", unit="batch"):
            batch = items[start : start + batch_size]
            x, receiver_scores, sharer_scores = self.features(batch)
            if self.scoring.mode == "generate":
                questions = [self.scoring.question(item) for item in batch]
                receiver_right, sharer_right = (
                    torch.tensor([p.correct for p in respond(lm, batch, questions, self.scoring)])
                    for lm in (self.receiver, self.sharer)
                )
            else:
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
