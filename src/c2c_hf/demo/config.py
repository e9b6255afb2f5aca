"""The settings of one demo run: `DemoConfig` (`full()` or `quick_config()`), and the "until learnt" schedule each
trained model gets from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .report import SPLITS, TEST
from .schedule import DecayWhenLearnt
from .world import ATTRIBUTES

UNTIL_LEARNT = "until_learnt"  # a schedule whose decay starts once a probe of training questions passes


@dataclass
class DemoConfig:
    """Sizes and schedules of one demo run (`full()` or `quick_config()`)."""

    seed: int = 0
    quick: bool = False
    # processes: the receiver trains beside the sharer, the hint reader beside the fuser (same results)
    workers: int = 2
    # world: people per role (see c2c_hf.demo.world)
    fuser_entities: int = 192
    validation_entities: int = 48
    test_entities: int = 48
    context_entities: int = 128
    attributes: tuple[str, ...] = tuple(ATTRIBUTES)  # each person's attributes (a subset, with "city")
    # tokenizers
    sharer_vocab_size: int = 2000  # byte-pair merges stop earlier, once every word of the world is one token
    # base models (AdamW, warm-up + cosine); the sharer's loss weighs attribute values in statements x5
    sharer_steps: int = 900
    sharer_lr: float = 3e-3
    sharer_value_weight: float = 5.0
    sharer_schedule: str = "cosine"  # or "until_learnt": answers its probe (fuser-people questions), up to _max_steps
    sharer_max_steps: int = 1200
    receiver_steps: int = 500
    receiver_lr: float = 3e-3
    # warm-up + cosine over receiver_steps, or "until_learnt" (`until_learnt`): constant from receiver_min_steps until
    # the receiver answers its probe, then decay; an attempt still stuck at receiver_give_up_step (probe below 50%)
    # starts again from another initialisation, up to receiver_attempts; the last goes on until receiver_max_steps
    receiver_schedule: str = "cosine"
    receiver_min_steps: int = 300
    receiver_give_up_step: int = 500
    receiver_max_steps: int = 1000
    receiver_attempts: int = 2
    receiver_multi_fact_share: float = 0.6
    receiver_country_share: float = 0.25  # examples teaching city -> country and the two-hop country reading
    base_batch_size: int = 32
    # fuser: every receiver layer reads sharer layer 0, where the sharer keeps its facts (package docstring)
    layer_map: list[int] = field(default_factory=lambda: [0, 0, 0])
    fuser_hidden_size: int = 64
    fuser_num_blocks: int = 2
    fuser_dropout: float = 0.2
    fuser_zero_init: bool = False  # start the fuser's output projections at zero (the receiver's own cache)
    fuser_steps: int = 1500
    fuser_lr: float = 3e-3
    # after 10% warm-up, constant; the last 20% decays to 0 ("linear": decays all along; "until_learnt": constant until
    # the fuser answers its probe, up to fuser_max_steps)
    fuser_schedule: str = "warmup_stable_decay"
    fuser_max_steps: int = 800
    fuser_batch_size: int = 32
    fuser_questions_per_fact: int = 12
    fuser_country_share: float = 0.2  # share of country questions (about fuser people) among the fuser's rows
    # trained text-to-text: a receiver LoRA reading the sharer's hints, on the fuser's questions and step budget
    trained_t2t: bool = True
    t2t_lora_rank: int = 8
    t2t_lora_lr: float = 3e-3
    # "until_learnt" schedules: the probe (training questions, no scored person) and the accuracies that end the
    # constant phase
    probe_questions: int = 64
    probe_every: int = 25  # steps
    sharer_probe_threshold: float = 0.95
    receiver_probe_threshold: float = 0.95
    fuser_probe_threshold: float = 0.95
    # evaluation
    splits: tuple[str, ...] = (TEST,)  # settings are chosen in runs scoring ("validation",) only
    country_questions_per_person: int = 2
    routing_fit_items: int = 64
    max_new_tokens: int = 8
    hint_tokens: int = 48

    @classmethod
    def full(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed)

    @classmethod
    def quick_config(cls, seed: int = 0) -> DemoConfig:
        """About 2 minutes on 2 CPU cores: two attributes per person (city, color), fewer people, batches of 16; the
        sharer, the receiver and the fuser each train until their probe passes (`until_learnt`)."""
        return cls(
            seed=seed, quick=True, attributes=("city", "color"), fuser_entities=48, validation_entities=16,
            test_entities=16, context_entities=48, base_batch_size=16, sharer_steps=600, receiver_steps=800,
            sharer_schedule=UNTIL_LEARNT, sharer_max_steps=900, receiver_lr=2e-3, receiver_schedule=UNTIL_LEARNT,
            fuser_steps=500, fuser_schedule=UNTIL_LEARNT, fuser_batch_size=16, routing_fit_items=32, trained_t2t=False,
        )  # fmt: skip

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        self.splits = tuple(self.splits)
        unknown = [split for split in self.splits if split not in SPLITS]
        if not self.splits or unknown:
            raise ValueError(f"DemoConfig.splits must name one or more of {SPLITS}, got {self.splits!r}.")
        for name, allowed in (("sharer_schedule", ("cosine", UNTIL_LEARNT)), ("receiver_schedule", ("cosine", UNTIL_LEARNT)),
                              ("fuser_schedule", ("warmup_stable_decay", "linear", UNTIL_LEARNT))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"DemoConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        for prefix in ("sharer", "receiver", "fuser"):  # the schedules' own checks, early
            if getattr(self, f"{prefix}_schedule") == UNTIL_LEARNT:
                self.until_learnt(prefix, lambda: 0.0, None, give_up=True)
        if self.receiver_attempts < 1:
            raise ValueError(f"DemoConfig.receiver_attempts must be at least 1, got {self.receiver_attempts}.")

    def until_learnt(
        self,
        prefix: str,
        probe: Callable[[], float],
        log: Callable[[str], None] | None,
        name: str | None = None,
        give_up: bool = False,
    ) -> DecayWhenLearnt:
        """The "until_learnt" schedule of the sharer, the receiver or the fuser (`prefix`), with the warm-up and decay
        lengths of its fixed schedule over `<prefix>_steps`, up to `<prefix>_max_steps`. The decay starts once
        `probe()` reaches `<prefix>_probe_threshold`: for the receiver from `receiver_min_steps` on (and, with
        `give_up`, it stops at `receiver_give_up_step` if still stuck there); for the sharer and the fuser not before
        their fixed schedule's decay (one that learns early trains as long as with its fixed schedule)."""
        steps = getattr(self, f"{prefix}_steps")
        decay, warmup_fraction = steps // 5, 10 if prefix == "fuser" else 20  # the fixed schedules' shares of steps
        receiver = prefix == "receiver"
        try:
            return DecayWhenLearnt(
                probe, threshold=getattr(self, f"{prefix}_probe_threshold"),
                warmup_steps=max(1, steps // warmup_fraction),
                min_steps=self.receiver_min_steps if receiver else steps - decay, decay_steps=decay,
                max_steps=getattr(self, f"{prefix}_max_steps"),
                check_every=self.probe_every, give_up_step=self.receiver_give_up_step if receiver and give_up else None,
                name=name or prefix, log=log,
            )  # fmt: skip
        except ValueError as error:
            raise ValueError(
                f"DemoConfig's {prefix} steps do not fit its {UNTIL_LEARNT!r} schedule ({error}): set {prefix}_steps "
                f"(warm-up 1/{warmup_fraction}, decay 1/5 of it), "
                + ("receiver_min_steps, receiver_give_up_step " if receiver else "")
                + f"and {prefix}_max_steps to fit."
            ) from None

    def world_sizes(self) -> dict[str, int]:
        return {"fuser": self.fuser_entities, "validation": self.validation_entities, "test": self.test_entities,
                "context": self.context_entities}  # fmt: skip


__all__ = ["UNTIL_LEARNT", "DemoConfig"]
