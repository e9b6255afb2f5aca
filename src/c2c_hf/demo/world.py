"""A controlled knowledge world for the `c2c-hf demo`: invented people, a few attributes each, paraphrased facts.

In the spirit of synthetic-biography knowledge studies: every entity has an invented name and one value per
attribute (city, color, profession, pet). Facts are written with many paraphrases; questions are 4-way multiple
choice (`MCItem`) with shuffled options. Entities are split into disjoint groups by role:

- `fuser`: questions about these train the fuser (the receiver never sees their facts);
- `validation`: every choice of the demo's settings is made on questions about these (the receiver and the fuser
  never see their facts);
- `test`: scored once per reported configuration, after the choices are frozen (never seen by the receiver or the
  fuser either);
- `context`: names used only inside hints, with facts drawn afresh for every example, so that the receiver learns
  to *read* a fact from its prompt instead of remembering it (the sharer never sees them).

Every city lies in one invented country (`World.country_of`, a seeded one-to-one map): the receiver learns these
eight facts, the sharer never sees a country. A *country question* ("In which country does X live?") therefore needs
one fact only the sharer knows (X's city) and one only the receiver knows (the city's country): complementary
knowledge, where asking either model alone, or picking one of them, stays near chance.

The sharer learns the facts of the `fuser`, `validation` and `test` entities (`SHARER_ROLES`). Everything is a pure function of the
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

# Paraphrased statements of one fact; the first is the canonical one (the sharer's hints, the fact-in-prompt baseline's hint).
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

COUNTRIES = ("Arvenia", "Belmora", "Corvalis", "Dunmark", "Estovia", "Fennoria", "Galdria", "Hollenby")
COUNTRY_STATEMENTS = (
    "{city} is in {country}.",
    "{city} is a city in {country}.",
    "{city} lies in {country}.",
    "The city of {city} belongs to {country}.",
)
COUNTRY_QUESTIONS = (
    "In which country does {name} live?",
    "Which country is home to {name}?",
    "In what country is the home of {name}?",
)
CITY_COUNTRY_QUESTIONS = ("In which country is {city}?", "Which country is {city} in?")

ROLES = ("fuser", "validation", "test", "context")
SHARER_ROLES = ("fuser", "validation", "test")  # the people whose facts the sharer learns
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei")
_CODAS = ("", "", "", "n", "l", "r", "s", "m")


@dataclass(frozen=True)
class Entity:
    """An invented person: a name and one value per attribute."""

    name: str
    facts: tuple[tuple[str, str], ...]  # ((attribute, value), ...) in the world's attribute order

    def value(self, attribute: str) -> str:
        return dict(self.facts)[attribute]


@dataclass
class World:
    """The entities of each role, and the texts and questions about them (see the module docstring)."""

    seed: int
    entities: dict[str, list[Entity]]  # role -> entities
    attributes: tuple[str, ...] = tuple(ATTRIBUTES)  # the attributes every person has (a subset, city first)
    _by_name: dict[str, Entity] = field(init=False, repr=False)
    country_of: dict[str, str] = field(init=False)  # city -> its country, one-to-one, seeded

    def __post_init__(self) -> None:
        self._by_name = {e.name: e for role in self.entities.values() for e in role}
        countries = list(COUNTRIES)
        random.Random(f"c2c-demo-countries-{self.seed}").shuffle(countries)
        self.country_of = dict(zip(ATTRIBUTES["city"], countries))

    # ----------------------------------------------------------------- construction

    @classmethod
    def generate(cls, seed: int, sizes: dict[str, int], attributes: tuple[str, ...] = tuple(ATTRIBUTES)) -> World:
        """A world with `sizes[role]` entities per role (roles in `ROLES`), all names distinct, each with one value
        per attribute of `attributes` (which must include "city": the country questions need it)."""
        unknown = set(sizes) - set(ROLES)
        if unknown:
            raise ValueError(f"Unknown entity roles {sorted(unknown)}: use {ROLES}.")
        attributes = tuple(attributes)
        if "city" not in attributes or not set(attributes) <= set(ATTRIBUTES) or len(set(attributes)) != len(attributes):
            raise ValueError(f"attributes must be distinct names from {tuple(ATTRIBUTES)} including 'city', got {attributes!r}.")
        rng = random.Random(f"c2c-demo-world-{seed}")
        names = invent_names(rng, sum(sizes.values()))
        entities, start = {}, 0
        for role in ROLES:
            count = sizes.get(role, 0)
            entities[role] = [
                Entity(name, tuple((a, rng.choice(ATTRIBUTES[a])) for a in attributes))
                for name in names[start : start + count]
            ]
            start += count
        return cls(seed, entities, attributes)

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
        attributes = list(self.attributes)
        rng.shuffle(attributes)
        attributes = attributes[: num_facts or len(attributes)]
        return " ".join(self.statement(entity, a, rng.randrange(len(STATEMENTS[a]))) for a in attributes)

    def random_entity(self, name: str, rng: random.Random) -> Entity:
        """An entity with fresh random facts (for context-reading examples about `context` names)."""
        return Entity(name, tuple((a, rng.choice(ATTRIBUTES[a])) for a in self.attributes))

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
            for attribute in self.attributes
            for k in range(per_fact)
        ]

    def country_statement(self, city: str, variant: int = 0) -> str:
        """The receiver's knowledge: the country `city` lies in, in one of its phrasings (variant 0: canonical)."""
        template = COUNTRY_STATEMENTS[variant % len(COUNTRY_STATEMENTS)]
        return template.format(city=city, country=self.country_of[city])

    def city_country_question(self, city: str, rng: random.Random) -> MCItem:
        """A 4-way question on the country of a city (the receiver's own knowledge)."""
        template = rng.randrange(len(CITY_COUNTRY_QUESTIONS))
        return self._country_item(f"{city}/country-of/{template}", CITY_COUNTRY_QUESTIONS[template].format(city=city),
                                  self.country_of[city], rng)  # fmt: skip

    def country_question(self, entity: Entity, rng: random.Random, tag: str = "") -> MCItem:
        """A 4-way question on the country `entity` lives in: it needs the person's city (known to the sharer only)
        and the city's country (known to the receiver only)."""
        template = rng.randrange(len(COUNTRY_QUESTIONS))
        right = self.country_of[entity.value("city")]
        return self._country_item(f"{entity.name}/country/{template}{tag}",
                                  COUNTRY_QUESTIONS[template].format(name=entity.name), right, rng)  # fmt: skip

    @staticmethod
    def _country_item(item_id: str, question: str, right: str, rng: random.Random) -> MCItem:
        choices = [right, *rng.sample([c for c in COUNTRIES if c != right], 3)]
        rng.shuffle(choices)
        return MCItem(benchmark="world", id=item_id, question=question, choices=tuple(choices),
                      gold=choices.index(right), subject="country")  # fmt: skip

    def country_questions(self, role: str, rng: random.Random, per_person: int = 1) -> list[MCItem]:
        """`per_person` country questions about every entity of `role`."""
        return [self.country_question(e, rng, tag=f"#{k}") for e in self.entities[role] for k in range(per_person)]

    def profile(self, entity: Entity) -> str:
        """Everything about `entity` in canonical phrasing and attribute order: what the sharer writes as a hint."""
        return " ".join(self.statement(entity, attribute) for attribute in self.attributes)

    def fact_hint(self, item: MCItem) -> str:
        """The canonical statement of the one fact of the sharer's that `item` needs: the fact it asks about, or for
        a country question the person's city."""
        name, attribute, _ = item.id.split("/", 2)
        return self.statement(self.entity(name), "city" if attribute == "country" else attribute)

    def vocabulary_text(self) -> list[str]:
        """Every word the world can write: all statements, questions and values of every name (for tokenizers)."""
        texts = []
        for name in self.names(*ROLES):
            for attribute, values in ATTRIBUTES.items():
                texts += [t.format(name=name, value=" ".join(values)) for t in STATEMENTS[attribute]]
                texts += [q.format(name=name) for q in QUESTIONS[attribute]]
            texts += [q.format(name=name) for q in COUNTRY_QUESTIONS]
        for city in ATTRIBUTES["city"]:
            texts += [s.format(city=city, country=" ".join(COUNTRIES)) for s in COUNTRY_STATEMENTS]
            texts += [q.format(city=city) for q in CITY_COUNTRY_QUESTIONS]
        return texts


def invent_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct pronounceable invented names (2-3 syllables), none an attribute value, a country or a common
    word."""
    banned = {v.lower() for values in (*ATTRIBUTES.values(), COUNTRIES) for v in values}
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


__all__ = ["ATTRIBUTES", "CITY_COUNTRY_QUESTIONS", "COUNTRIES", "COUNTRY_QUESTIONS", "COUNTRY_STATEMENTS", "QUESTIONS", "ROLES", "SHARER_ROLES", "STATEMENTS", "Entity", "World", "invent_names"]
