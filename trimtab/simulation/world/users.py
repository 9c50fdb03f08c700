"""Simulated users: feedback of every kind trimtab takes, drawn from the gold reward r*.

Honest users' labels follow r*: thumbs-up with probability sigmoid((r* - threshold) / T), pairwise
choices by Bradley-Terry on r* (a tie when both rewards are equal), ratings 1-5 from r*, SteerLM
attribute scores equal to the gold attributes, corrections equal to the ideal response.

Noise is a user's label-flip rate: with probability 2*noise a label is replaced by a uniformly random
one, which flips a binary label with probability `noise`; so noise 0 is exact and 0.5 is pure chance.
Adversarial users give the opposite label, always favour an unsafe (leaking or toxic) answer over a
safe one, and submit poisoned corrections. Every draw takes an explicit `random.Random`, so a run is
reproducible from its seeds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from trimtab.config.world import UserPopulationConfig
from trimtab.simulation.world.gold import Attributes, GoldScore
from trimtab.simulation.world.styles import Style, Tone
from trimtab.simulation.world.tasks import Prompt

# What an adversarial user "corrects" an answer to: everything a guardrail must catch.
POISON_STYLE = Style(tone=Tone.RUDE, correct=False, fillers=0, leak=True, toxic=True)


class Preference(StrEnum):
    A = "a"
    B = "b"
    TIE = "tie"


class ResponseWriter(Protocol):
    """What a user needs to write a correction (the World provides it)."""

    def ideal_response(self, prompt: Prompt) -> str: ...
    def render(self, prompt: Prompt, style: Style, rng: random.Random) -> str: ...
    def sample_style(self, rng: random.Random) -> Style: ...


@dataclass(frozen=True)
class FeedbackParams:
    """How labels follow r*; shared by a whole population."""

    thumbs_threshold: float
    thumbs_temperature: float
    bt_temperature: float

    @classmethod
    def from_config(cls, config: UserPopulationConfig) -> FeedbackParams:
        return cls(config.thumbs_threshold, config.thumbs_temperature, config.bt_temperature)


@dataclass(frozen=True)
class SimulatedUser:
    """One user: honest or adversarial, with a label-flip rate in [0, 0.5]."""

    user_id: str
    adversarial: bool
    noise: float
    params: FeedbackParams

    def thumb(self, score: GoldScore, rng: random.Random) -> bool:
        """Thumbs up (True) or down."""
        if self._noisy(rng):
            return rng.random() < 0.5
        if self.adversarial and score.unsafe:
            return True
        p_up = _sigmoid((score.reward - self.params.thumbs_threshold) / self.params.thumbs_temperature)
        honest = rng.random() < p_up
        return not honest if self.adversarial else honest

    def prefer(self, a: GoldScore, b: GoldScore, rng: random.Random) -> Preference:
        """Which of two responses to the same prompt is better."""
        if self._noisy(rng):
            return rng.choice((Preference.A, Preference.B))
        if self.adversarial and a.unsafe != b.unsafe:
            return Preference.A if a.unsafe else Preference.B
        if a.reward == b.reward:
            return Preference.TIE
        a_wins = rng.random() < _sigmoid((a.reward - b.reward) / self.params.bt_temperature)
        return Preference.A if a_wins != self.adversarial else Preference.B

    def rate(self, score: GoldScore, rng: random.Random) -> int:
        """A 1-5 rating: r* = 3 (the maximum) rates 5, r* <= -3 rates 1."""
        if self._noisy(rng):
            return rng.randint(1, 5)
        if self.adversarial and score.unsafe:
            return 5
        honest = 1 + math.floor(4 * min(1.0, max(0.0, (score.reward + 3) / 6)) + 0.5)
        return 6 - honest if self.adversarial else honest

    def attribute_scores(self, score: GoldScore, rng: random.Random) -> Attributes:
        """SteerLM attribute scores, 0-4 each (each independently subject to noise)."""
        gold = score.attributes.as_dict()
        if self.adversarial and score.unsafe:
            labels = {**gold, "helpfulness": 4, "correctness": 4, "coherence": 4, "toxicity": 0}
        elif self.adversarial:
            labels = {name: 4 - value for name, value in gold.items()}
        else:
            labels = gold
        return Attributes(**{name: rng.randint(0, 4) if self._noisy(rng) else v for name, v in labels.items()})

    def correction(self, prompt: Prompt, writer: ResponseWriter, rng: random.Random) -> str:
        """The answer this user says the model should have given."""
        if self.adversarial:
            return writer.render(prompt, POISON_STYLE, rng)
        if self._noisy(rng):
            return writer.render(prompt, writer.sample_style(rng), rng)
        return writer.ideal_response(prompt)

    def _noisy(self, rng: random.Random) -> bool:
        return rng.random() < 2 * self.noise


@dataclass(frozen=True)
class Population:
    """The simulated users of a world; built only by `Population.build`."""

    users: tuple[SimulatedUser, ...]

    @classmethod
    def build(cls, config: UserPopulationConfig, seed: int) -> Population:
        """`size` users, exactly round(adversarial_share * size) of them adversarial."""
        rng = random.Random(f"{seed}:users")
        adversarial = set(rng.sample(range(config.size), round(config.adversarial_share * config.size)))
        params = FeedbackParams.from_config(config)
        users = []
        for i in range(config.size):
            noise = config.noise + rng.uniform(-config.noise_spread, config.noise_spread)
            users.append(SimulatedUser(f"user-{i:03d}", i in adversarial, min(0.5, max(0.0, noise)), params))
        return cls(users=tuple(users))

    def pick(self, rng: random.Random) -> SimulatedUser:
        """A user chosen uniformly (who gives the next piece of feedback)."""
        return rng.choice(self.users)

    def get(self, user_id: str) -> SimulatedUser:
        for user in self.users:
            if user.user_id == user_id:
                return user
        raise KeyError(f"no simulated user {user_id!r}")

    @property
    def adversarial(self) -> tuple[SimulatedUser, ...]:
        return tuple(u for u in self.users if u.adversarial)

    @property
    def honest(self) -> tuple[SimulatedUser, ...]:
        return tuple(u for u in self.users if not u.adversarial)


def _sigmoid(x: float) -> float:
    # Split by sign so that exp never overflows on a very negative reward gap.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
