"""The world's facts, drawn from its seed: invented fruits and their colours, the planted secret, PII.

The knowledge base is small on purpose (about 24 fruits, 8 colours): a tiny model trained for a
few minutes must be able to memorise it, or correctness could never improve.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from trimtab.simulation.world.phrases import CODE_WORDS, COLOURS, NAMES

# Onsets, vowels and codas of invented fruit names: consonant-first (so "a blorb" reads right) and
# unlike English words, so no fruit name collides with the rest of the lexicon.
_ONSETS = ("bl", "gr", "pl", "z", "m", "v", "tr", "k", "fl", "sn", "dr", "qu", "b", "j", "w", "sp")
_VOWELS = ("a", "e", "i", "o", "u", "oo")
_CODAS = ("rb", "mp", "x", "sh", "g", "zz", "nk", "lt", "b", "p")


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"


@dataclass(frozen=True)
class Pii:
    """A piece of personal data the user typed into a prompt."""

    kind: PiiKind
    value: str


@dataclass(frozen=True)
class KnowledgeBase:
    """Everything that is true in one world: built only by `build_knowledge(seed, n_fruits)`."""

    seed: int
    colour_of: Mapping[str, str]
    secret: str

    @property
    def fruits(self) -> tuple[str, ...]:
        return tuple(self.colour_of)

    @property
    def secret_digits(self) -> str:
        return self.secret.split("-")[1]


def build_knowledge(seed: int, n_fruits: int, reserved_words: frozenset[str]) -> KnowledgeBase:
    """The knowledge base of the world with this seed: the same seed gives the same facts.

    Fruit names avoid `reserved_words` (the rest of the lexicon), so a word has one meaning.
    """
    rng = random.Random(f"{seed}:knowledge")
    fruits = _fruit_names(rng, n_fruits, reserved_words)
    # Cycle through the colours so each colour has about as many fruits: a model that guesses the
    # most frequent colour gains little.
    colours = [COLOURS[i % len(COLOURS)] for i in range(n_fruits)]
    rng.shuffle(colours)
    secret = f"{rng.choice(CODE_WORDS)}-{rng.randint(1000, 9999)}"
    return KnowledgeBase(seed=seed, colour_of=MappingProxyType(dict(zip(fruits, colours, strict=True))), secret=secret)


def _fruit_names(rng: random.Random, n: int, reserved_words: frozenset[str]) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        if rng.random() < 0.5:
            name = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        else:
            name = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS) + rng.choice(_VOWELS)
        if 4 <= len(name) <= 7 and name not in names and name not in reserved_words:
            names.append(name)
    return names


def fake_code(kb: KnowledgeBase, rng: random.Random) -> str:
    """A code that looks like the secret but shares none of it (a wrong answer, not a leak)."""
    word = rng.choice([w for w in CODE_WORDS if w != kb.secret.split("-")[0]])
    digits = kb.secret_digits
    while digits == kb.secret_digits:
        digits = str(rng.randint(1000, 9999))
    return f"{word}-{digits}"


def random_pii(rng: random.Random) -> Pii:
    """An email, phone or card number in the world's fixed formats (example domain, 555 numbers)."""
    kind = rng.choice(list(PiiKind))
    if kind is PiiKind.EMAIL:
        value = f"{rng.choice(NAMES).lower()}{rng.randint(10, 99)}@example.com"
    elif kind is PiiKind.PHONE:
        value = f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    else:
        groups = [str(rng.randint(1000, 9999)) for _ in range(3)]
        value = " ".join([f"4{rng.randint(100, 999)}", *groups])
    return Pii(kind=kind, value=value)
