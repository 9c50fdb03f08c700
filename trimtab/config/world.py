"""The synthetic world: its seed, the mix of prompts and response styles, and its simulated users."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from trimtab.config.base import Section


class StyleMix(Section):
    """How often each response attribute occurs when the world writes answers (the SFT corpus's mix).

    The default is even on the quality axes (tone, correctness, length) so that a model trained on it
    samples good and bad answers alike: the alignment loop needs room to improve. Unsafe answers are
    rarer but frequent enough that every batch of feedback sees some.
    """

    polite: float = Field(default=1 / 3, ge=0, le=1, description="Share of answers with a polite opener.")
    neutral: float = Field(default=1 / 3, ge=0, le=1, description="Share of answers with no opener.")
    rude: float = Field(default=1 / 3, ge=0, le=1, description="Share of answers with a rude opener.")
    correct: float = Field(default=0.5, ge=0, le=1, description="Probability an answer is correct.")
    rambling: float = Field(default=0.5, ge=0, le=1, description="Probability of 1-3 filler sentences.")
    leak: float = Field(default=0.15, ge=0, le=1, description="Probability of leaking the secret or echoing PII.")
    toxic: float = Field(default=0.15, ge=0, le=1, description="Probability of a sentence with blocklisted insults.")

    @model_validator(mode="after")
    def _tones_sum_to_one(self) -> StyleMix:
        total = self.polite + self.neutral + self.rude
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"polite + neutral + rude must sum to 1, got {total:g}")
        return self


class FamilyWeights(Section):
    """Relative weights of the safe task families (unsafe requests are drawn separately)."""

    arithmetic: float = Field(default=1.0, ge=0, description="Single-digit additions.")
    fact: float = Field(default=1.0, ge=0, description="Colours of invented fruits from the knowledge base.")
    greeting: float = Field(default=0.5, ge=0, description="Greetings that should be greeted back.")

    @model_validator(mode="after")
    def _some_weight(self) -> FamilyWeights:
        if self.arithmetic + self.fact + self.greeting <= 0:
            raise ValueError("at least one family weight must be positive")
        return self


class UserPopulationConfig(Section):
    """The simulated users who give feedback, and how their labels follow the gold reward r*."""

    size: int = Field(default=50, ge=1, description="Number of distinct simulated users.")
    noise: float = Field(
        default=0.1, ge=0, le=0.5, description="Mean label-flip rate of a user: 0 is exact, 0.5 is pure chance."
    )
    noise_spread: float = Field(
        default=0.05, ge=0, le=0.5, description="Users' noise is uniform in noise +- spread, clipped to [0, 0.5]."
    )
    adversarial_share: float = Field(
        default=0.0, ge=0, le=1, description="Share of users who flip labels and upvote unsafe answers."
    )
    bt_temperature: float = Field(
        default=1.0, gt=0, description="Bradley-Terry temperature: P(A > B) = sigmoid((r*_A - r*_B) / T)."
    )
    thumbs_threshold: float = Field(default=1.0, description="r* at which a thumbs-up has probability 1/2.")
    thumbs_temperature: float = Field(
        default=0.5, gt=0, description="Thumbs-up probability is sigmoid((r* - threshold) / temperature)."
    )


class WorldConfig(Section):
    """The synthetic world that the default model, the demo, the tests and the benchmarks share."""

    seed: int = Field(default=1234, description="Seed of the knowledge base, the secret and the train/held-out split.")
    n_fruits: int = Field(default=24, ge=4, le=64, description="Invented fruit names in the knowledge base.")
    families: FamilyWeights = Field(default_factory=FamilyWeights, description="Weights of the safe task families.")
    unsafe_share: float = Field(
        default=0.15, ge=0, le=1, description="Share of prompts that ask for the secret or for an insult."
    )
    pii_share: float = Field(
        default=0.2, ge=0, le=1, description="Share of arithmetic and fact prompts that carry the user's PII."
    )
    held_out_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each family's (wording, instance) pairs kept for evaluation."
    )
    red_team_per_family: int = Field(
        default=24, ge=1, description="The world suite's red-team prompts from each unsafe family (secret, insult)."
    )
    style: StyleMix = Field(default_factory=StyleMix, description="Response style mix of the SFT corpus.")
    users: UserPopulationConfig = Field(
        default_factory=UserPopulationConfig, description="The simulated user population."
    )
