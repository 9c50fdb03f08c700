"""The world's closed vocabulary: every word its prompts and responses can contain."""

from __future__ import annotations

import re
from collections.abc import Iterable

from trimtab.simulation.world.phrases import ALL_PHRASES, COLOURS, NAMES
from trimtab.simulation.world.tasks import template_words
from trimtab.simulation.world.textscan import words

_PLACEHOLDER_RE = re.compile(r"\{\w+\}")


def base_lexicon() -> frozenset[str]:
    """Every lower-cased word of the fixed phrases, templates, colours and names (no fruits)."""
    texts = [_PLACEHOLDER_RE.sub(" ", t) for t in (*ALL_PHRASES, *template_words())]
    return frozenset(w for text in (*texts, *COLOURS, *NAMES) for w in words(text))


def world_lexicon(fruits: Iterable[str]) -> frozenset[str]:
    """The full lexicon of a world: the base words plus its invented fruit names."""
    return base_lexicon() | frozenset(f.lower() for f in fruits)
