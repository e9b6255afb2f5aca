"""A learning-rate schedule that decays when a skill is learnt: warm-up, a constant rate until a probe of the
training data passes, then a cosine decay to 0, and stop.

The demo's small models learn their skills abruptly, after a loss plateau whose length differs from world to world
(the receiver's reading of a stated fact, the fuser's reading of the sharer's cache). A fixed schedule decays too
early in some worlds (the skill never appears) and wastes steps in others. `DecayWhenLearnt` keeps the rate constant
until `probe()` (an accuracy on training data only: never a validation or test person) reaches `threshold`, checked
every `check_every` steps from `min_steps` on, then decays over `decay_steps` and stops training. If the probe never
passes, the decay starts at `max_steps - decay_steps`, so a run always ends decayed within `max_steps`. With
`give_up_step`, a run whose probe is still below `give_up_below` there (stuck on its plateau, not merely slow) stops
(`gave_up`), for the caller to start again from another initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from ..data import MCItem
from ..evaluation import LM, Scoring, respond


class DecayWhenLearnt(TrainerCallback):
    """The schedule's state and its `Trainer` callback. `factor(step)` is the learning-rate multiplier (for a
    `LambdaLR`); `probes` keeps every `(step, accuracy)` checked; `decay_start` is the step the decay began."""

    def __init__(
        self,
        probe: Callable[[], float],
        *,
        threshold: float,
        warmup_steps: int,
        min_steps: int,
        decay_steps: int,
        max_steps: int,
        check_every: int = 25,
        give_up_step: int | None = None,
        give_up_below: float = 0.5,
        name: str = "model",
        log: Callable[[str], None] | None = print,
    ) -> None:
        last_start = max_steps - decay_steps
        if not 0 < warmup_steps <= min_steps <= last_start or decay_steps < 1 or check_every < 1:
            raise ValueError(
                "DecayWhenLearnt needs 0 < warmup_steps <= min_steps <= max_steps - decay_steps, decay_steps >= 1 and "
                f"check_every >= 1; got warmup_steps={warmup_steps}, min_steps={min_steps}, decay_steps={decay_steps}, "
                f"max_steps={max_steps}, check_every={check_every}."
            )
        if give_up_step is not None and not (
            min_steps <= give_up_step <= last_start and give_up_step % check_every == 0
        ):
            raise ValueError(
                f"DecayWhenLearnt's give_up_step ({give_up_step}) must be a probed step (a multiple of check_every, "
                f"{check_every}) between min_steps ({min_steps}) and max_steps - decay_steps ({last_start}), or None."
            )
        self.probe, self.threshold, self.name, self.log = probe, threshold, name, log
        self.warmup_steps, self.min_steps, self.decay_steps = warmup_steps, min_steps, decay_steps
        self.max_steps, self.check_every = max_steps, check_every
        self.give_up_step, self.give_up_below = give_up_step, give_up_below
        self.decay_start: int | None = None
        self.learnt = self.gave_up = False
        self.probes: list[tuple[int, float]] = []

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at optimiser step `step` (0-based)."""
        warm = min(1.0, (step + 1) / self.warmup_steps)
        if self.decay_start is None:
            return warm
        done = min(max(step - self.decay_start, 0) / self.decay_steps, 1.0)
        return warm * 0.5 * (1 + math.cos(math.pi * done))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = state.global_step
        if self.decay_start is None and step >= self.min_steps and step % self.check_every == 0:
            accuracy = self.probe()
            self.probes.append((step, round(accuracy, 4)))
            if accuracy >= self.threshold:
                self.decay_start, self.learnt = step, True
                self._say(f"{self.name} learnt at step {step} (probe {accuracy:.0%}): decaying until {self.stop_step}")
        if self.decay_start is None and step == self.give_up_step and self.probes[-1][1] < self.give_up_below:
            self.gave_up = control.should_training_stop = True
            self._say(f"{self.name} stuck at step {step} (probe {self.probes[-1][1]:.0%}): giving up")
            return control
        if self.decay_start is None and step >= self.max_steps - self.decay_steps:
            self.decay_start = step
            self._say(f"{self.name} not learnt by step {step} (probe {self.probes[-1][1] if self.probes else None}): "
                      f"decaying until {self.stop_step}")  # fmt: skip
        if self.decay_start is not None and step >= self.stop_step:
            control.should_training_stop = True
        return control

    @property
    def stop_step(self) -> int:
        """The last step: the end of the decay (`max_steps` while it has not begun)."""
        return self.max_steps if self.decay_start is None else self.decay_start + self.decay_steps

    def summary(self) -> dict[str, Any]:
        """What happened, for the run's report: learnt or not, the decay's start, the steps trained, the probes."""
        steps = self.give_up_step if self.gave_up else self.stop_step
        return {"learnt": self.learnt, "gave_up": self.gave_up, "decay_start": self.decay_start, "steps": steps,
                "probes": self.probes}  # fmt: skip

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


def answer_accuracy(
    lm: LM, items: Sequence[MCItem], user_texts: Sequence[str], max_new_tokens: int, prompt: str = "choices"
) -> float:
    """Share of `items` that `lm` answers right when asked `user_texts` (greedy, read as the harness reads answers to
    `prompt`-style questions), in eval mode (the model's mode is restored): a probe for `DecayWhenLearnt`."""
    was_training = lm.model.training
    lm.model.eval()
    with torch.no_grad():
        predictions = respond(lm, items, user_texts, Scoring("generate", max_new_tokens, prompt))
    lm.model.train(was_training)
    return sum(p.correct for p in predictions) / len(predictions)


__all__ = ["DecayWhenLearnt", "answer_accuracy"]
