"""A controlled knowledge world for the `c2c-hf demo`: invented people, a few attributes each, paraphrased facts.

In the spirit of synthetic-biography knowledge studies: every entity has an invented name and one value per
attribute (city, color, profession, pet). Facts are written with many paraphrases; questions are 4-way multiple
choice (`MCItem`) with shuffled options. Entities are split into disjoint groups by role:

- `fuser`: questions about these train the fuser (the receiver never sees their facts);
- `heldout`: evaluation only (the receiver and the fuser never see their facts);
- `context`: names used only inside hints, with facts drawn afresh for every example, so that the receiver learns
  to *read* a fact from its prompt instead of remembering it (the sharer never sees them).

The sharer learns the facts of the `fuser` and `heldout` entities. Everything is a pure function of the
seed: the same seed gives the same world, texts and questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..data import MCItem

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "city": ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Dublin", "Vienna"),
    "color": ("red", "blue", "green", "yellow", "purple", "orange", "white", "black"),
    "profession": ("baker", "pilot", "doctor", "farmer", "painter", "teacher", "sailor", "tailor"),
    "pet": ("cat", "dog", "parrot", "rabbit", "turtle", "hamster", "goldfish", "horse"),
}

# Paraphrased statements of one fact; the first is the canonical one (the sharer's hints, the oracle's context).
STATEMENTS: dict[str, tuple[str, ...]] = {
    "city": (
        "{name} lives in {value}.",
        "{name} resides in {value}.",
        "{name} has a home in {value}.",
        "The home town of {name} is {value}.",
        "You can find {name} in {value}.",
        "{name} moved to {value} years ago.",
    ),
    "color": (
        "The favorite color of {name} is {value}.",
        "{name} likes the color {value}.",
        "{name} loves the color {value} most.",
        "{name} always wears {value}.",
        "Of all colors, {name} prefers {value}.",
        "The best color for {name} is {value}.",
    ),
    "profession": (
        "{name} works as a {value}.",
        "{name} is a {value} by trade.",
        "{name} earns a living as a {value}.",
        "The job of {name} is {value}.",
        "Every day {name} goes to work as a {value}.",
        "People know {name} as a {value}.",
    ),
    "pet": (
        "{name} has a pet {value}.",
        "{name} owns a {value}.",
        "The pet of {name} is a {value}.",
        "Every morning {name} feeds a {value}.",
        "{name} takes care of a {value}.",
        "At home {name} keeps a {value}.",
    ),
}

QUESTIONS: dict[str, tuple[str, ...]] = {
    "city": ("Where does {name} live?", "In which city does {name} live?", "Which city is home to {name}?"),
    "color": (
        "What is the favorite color of {name}?",
        "Which color does {name} like best?",
        "What color does {name} prefer?",
    ),
    "profession": ("What does {name} do for a living?", "What is the job of {name}?", "Which job does {name} have?"),
    "pet": ("Which pet does {name} have?", "What animal does {name} own?", "What is the pet of {name}?"),
}

ROLES = ("fuser", "heldout", "context")
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei")
_CODAS = ("", "", "", "n", "l", "r", "s", "m")


@dataclass(frozen=True)
class Entity:
    """An invented person: a name and one value per attribute."""

    name: str
    facts: tuple[tuple[str, str], ...]  # ((attribute, value), ...) in ATTRIBUTES order

    def value(self, attribute: str) -> str:
        return dict(self.facts)[attribute]


@dataclass
class World:
    """The entities of each role, and the texts and questions about them (see the module docstring)."""

    seed: int
    entities: dict[str, list[Entity]]  # role -> entities
    _by_name: dict[str, Entity] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {e.name: e for role in self.entities.values() for e in role}

    # ----------------------------------------------------------------- construction

    @classmethod
    def generate(cls, seed: int, sizes: dict[str, int]) -> World:
        """A world with `sizes[role]` entities per role (roles in `ROLES`), all names distinct."""
        unknown = set(sizes) - set(ROLES)
        if unknown:
            raise ValueError(f"Unknown entity roles {sorted(unknown)}: use {ROLES}.")
        rng = random.Random(f"c2c-demo-world-{seed}")
        names = invent_names(rng, sum(sizes.values()))
        entities, start = {}, 0
        for role in ROLES:
            count = sizes.get(role, 0)
            entities[role] = [
                Entity(name, tuple((a, rng.choice(values)) for a, values in ATTRIBUTES.items()))
                for name in names[start : start + count]
            ]
            start += count
        return cls(seed, entities)

    def entity(self, name: str) -> Entity:
        return self._by_name[name]

    def names(self, *roles: str) -> list[str]:
        return [e.name for role in roles for e in self.entities[role]]

    # ----------------------------------------------------------------- texts

    @staticmethod
    def statement(entity: Entity, attribute: str, variant: int = 0) -> str:
        """One fact as a sentence; variant 0 is the canonical phrasing."""
        templates = STATEMENTS[attribute]
        return templates[variant % len(templates)].format(name=entity.name, value=entity.value(attribute))

    def biography(self, entity: Entity, rng: random.Random, num_facts: int | None = None) -> str:
        """Some (default: all) facts of `entity`, each in a random paraphrase, in random order."""
        attributes = list(ATTRIBUTES)
        rng.shuffle(attributes)
        attributes = attributes[: num_facts or len(attributes)]
        return " ".join(self.statement(entity, a, rng.randrange(len(STATEMENTS[a]))) for a in attributes)

    @staticmethod
    def random_entity(name: str, rng: random.Random) -> Entity:
        """An entity with fresh random facts (for context-reading examples about `context` names)."""
        return Entity(name, tuple((a, rng.choice(values)) for a, values in ATTRIBUTES.items()))

    # ----------------------------------------------------------------- questions

    @staticmethod
    def question(entity: Entity, attribute: str, rng: random.Random, tag: str = "") -> MCItem:
        """A 4-way multiple-choice question on one fact: the right value and 3 other values, shuffled."""
        template = rng.randrange(len(QUESTIONS[attribute]))
        right = entity.value(attribute)
        choices = [right, *rng.sample([v for v in ATTRIBUTES[attribute] if v != right], 3)]
        rng.shuffle(choices)
        return MCItem(
            benchmark="world",
            id=f"{entity.name}/{attribute}/{template}{tag}",
            question=QUESTIONS[attribute][template].format(name=entity.name),
            choices=tuple(choices),
            gold=choices.index(right),
            subject=attribute,
        )

    def questions(self, role: str, rng: random.Random, per_fact: int = 1) -> list[MCItem]:
        """`per_fact` questions on every fact of every entity of `role` (each with its own phrasing and order)."""
        return [
            self.question(entity, attribute, rng, tag=f"#{k}")
            for entity in self.entities[role]
            for attribute in ATTRIBUTES
            for k in range(per_fact)
        ]

    def profile(self, entity: Entity) -> str:
        """Everything about `entity` in canonical phrasing and attribute order: what the sharer writes as a hint."""
        return " ".join(self.statement(entity, attribute) for attribute in ATTRIBUTES)

    def fact_hint(self, item: MCItem) -> str:
        """The canonical statement of the one fact `item` asks about (the oracle's context)."""
        name, attribute, _ = item.id.split("/", 2)
        return self.statement(self.entity(name), attribute)

    def vocabulary_text(self) -> list[str]:
        """Every word the world can write: all statements, questions and values of every name (for tokenizers)."""
        texts = []
        for name in self.names(*ROLES):
            for attribute, values in ATTRIBUTES.items():
                texts += [t.format(name=name, value=" ".join(values)) for t in STATEMENTS[attribute]]
                texts += [q.format(name=name) for q in QUESTIONS[attribute]]
        return texts


def invent_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct pronounceable invented names (2-3 syllables), none an attribute value or a common word."""
    banned = {v.lower() for values in ATTRIBUTES.values() for v in values}
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if not 5 <= len(word) <= 10 or word in seen or word in banned:
            continue
        seen.add(word)
        names.append(word.capitalize())
    return names


__all__ = ["ATTRIBUTES", "QUESTIONS", "ROLES", "STATEMENTS", "Entity", "World", "invent_names"]
