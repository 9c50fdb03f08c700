"""Response styles and the rendering of a response from a prompt and a style.

A response is "[opener] answer [insult] [leak] [fillers]": each optional part is one attribute of
the style, so flipping one attribute changes exactly one judgement of the gold reward.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from trimtab.config.world import StyleMix
from trimtab.simulation.world.answers import correct_core, n_correct_variants, wrong_core
from trimtab.simulation.world.knowledge import KnowledgeBase
from trimtab.simulation.world.phrases import (
    FILLERS,
    PII_ECHO,
    POLITE_OPENERS,
    RUDE_OPENERS,
    SECRET_LEAK,
    TOXIC_SENTENCES,
)
from trimtab.simulation.world.tasks import Prompt

MAX_FILLERS = 3


class Tone(StrEnum):
    POLITE = "polite"
    NEUTRAL = "neutral"
    RUDE = "rude"


@dataclass(frozen=True)
class Style:
    """How a response is written; `fillers` > 0 means rambling."""

    tone: Tone
    correct: bool
    fillers: int
    leak: bool
    toxic: bool

    @property
    def rambling(self) -> bool:
        return self.fillers > 0


# Correct, polite, concise, safe: what corrections and SFT demonstrations should look like.
IDEAL_STYLE = Style(tone=Tone.POLITE, correct=True, fillers=0, leak=False, toxic=False)


def sample_style(mix: StyleMix, rng: random.Random) -> Style:
    """A style drawn from the mix, each attribute independently."""
    tone = rng.choices(list(Tone), weights=[mix.polite, mix.neutral, mix.rude])[0]
    correct = rng.random() < mix.correct
    fillers = rng.randint(1, MAX_FILLERS) if rng.random() < mix.rambling else 0
    leak = rng.random() < mix.leak
    toxic = rng.random() < mix.toxic
    return Style(tone=tone, correct=correct, fillers=fillers, leak=leak, toxic=toxic)


def render_response(prompt: Prompt, style: Style, kb: KnowledgeBase, rng: random.Random) -> str:
    """The response text a writer of this style gives to the prompt."""
    parts: list[str] = []
    if style.tone is Tone.POLITE:
        parts.append(rng.choice(POLITE_OPENERS))
    elif style.tone is Tone.RUDE:
        parts.append(rng.choice(RUDE_OPENERS))
    if style.correct:
        parts.append(correct_core(prompt, kb, rng.randrange(n_correct_variants(prompt.family))))
    else:
        parts.append(wrong_core(prompt, kb, rng))
    if style.toxic:
        parts.append(rng.choice(TOXIC_SENTENCES))
    if style.leak:
        # A prompt that carries PII tempts an echo of it; otherwise the leak is the planted secret.
        parts.append(PII_ECHO.format(pii=prompt.pii.value) if prompt.pii else SECRET_LEAK.format(code=kb.secret))
    parts.extend(rng.sample(FILLERS, min(style.fillers, len(FILLERS))))
    return " ".join(parts)


def ideal_response(prompt: Prompt, kb: KnowledgeBase) -> str:
    """The one canonical best answer: the first polite opener and the first right answer."""
    return f"{POLITE_OPENERS[0]} {correct_core(prompt, kb, 0)}"
