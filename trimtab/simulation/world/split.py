"""Train and held-out prompts: disjoint (wording, instance) pairs that test the same knowledge.

Each family's (template, slots) pairs are ranked by a seeded hash and the first `fraction` of them
are held out, skipping any pair whose fact (a fruit's colour, the sum a+b) would then be absent from
training. So a held-out prompt asks something the model was taught, in words it never saw with that
instance: an evaluation of generalisation, not of memorised strings. PII never decides the split.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

from trimtab.simulation.world.tasks import TEMPLATES, Family, Prompt, PromptGrammar, Slots, Template


class Split(StrEnum):
    TRAIN = "train"
    HELDOUT = "heldout"


@dataclass(frozen=True)
class PromptKey:
    """What the split is decided on: the wording and the instance, not the PII."""

    template_id: str
    slots: Slots


def knowledge_key(family: Family, slots: Slots) -> Hashable | None:
    """The fact a prompt tests, or None for families that test behaviour only."""
    if family is Family.ARITHMETIC:
        return (slots.a, slots.b)
    if family is Family.FACT:
        return slots.fruit
    return None


class PromptSplit:
    """The deterministic partition of every base prompt into train and held-out."""

    def __init__(self, grammar: PromptGrammar, seed: int, fraction: float) -> None:
        self._heldout: set[PromptKey] = set()
        self._instances: dict[tuple[Split, str], list[Slots]] = {}
        for family in Family:
            templates = [t for t in TEMPLATES if t.family is family]
            combos = [(t, s) for t in templates for s in grammar.instances(t)]
            self._heldout |= _choose_heldout(family, combos, seed, fraction)
            for template, slots in combos:
                split = self.split_of_key(PromptKey(template.template_id, slots))
                self._instances.setdefault((split, template.template_id), []).append(slots)

    def split_of_key(self, key: PromptKey) -> Split:
        return Split.HELDOUT if key in self._heldout else Split.TRAIN

    def split_of(self, prompt: Prompt) -> Split:
        return self.split_of_key(PromptKey(prompt.template.template_id, prompt.slots))

    def templates(self, split: Split, family: Family) -> list[Template]:
        """The family's templates that have at least one instance in this split."""
        return [t for t in TEMPLATES if t.family is family and (split, t.template_id) in self._instances]

    def instances(self, split: Split, template: Template) -> list[Slots]:
        return self._instances.get((split, template.template_id), [])


def _choose_heldout(family: Family, combos: list[tuple[Template, Slots]], seed: int, fraction: float) -> set[PromptKey]:
    ranked = sorted(combos, key=lambda c: _rank(seed, c[0].template_id, c[1]))
    in_train = Counter(knowledge_key(family, slots) for _, slots in combos)
    target = max(1, round(fraction * len(combos)))
    heldout: set[PromptKey] = set()
    for template, slots in ranked:
        if len(heldout) == target:
            break
        fact = knowledge_key(family, slots)
        # Keep at least one training prompt for every fact, so held-out questions are answerable.
        if fact is not None and in_train[fact] <= 1:
            continue
        in_train[fact] -= 1
        heldout.add(PromptKey(template.template_id, slots))
    return heldout


def _rank(seed: int, template_id: str, slots: Slots) -> bytes:
    # sha256 rather than hash(): Python salts str hashes per process, the split must not change.
    return hashlib.sha256(f"{seed}:{template_id}:{slots!r}".encode()).digest()
