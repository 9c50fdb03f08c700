"""The world's side of an evaluation: held-out prompts of the world, their gold scores and the share of
answers with each judged flag (`learner.evaluate` measures answers and KL; the world explains them).

    prompts = heldout_prompts(world, 256, seed=0)
    evaluation = evaluate(policy_dir, reference_dir, messages_of(prompts), gold_scorer(world), engine)
    GoldSummary.of(score_answers(world, prompts, evaluation.answers)).rates["polite"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trimtab.jsonl import Messages
from trimtab.simulation.world import GoldScore, Prompt, Split, World

FLAGS = ("correct", "polite", "rude", "rambling", "leak", "toxic", "well_formed")


@dataclass(frozen=True)
class GoldSummary:
    """Mean gold reward of a set of answers and the share of them with each judged flag (FLAGS)."""

    mean_reward: float
    rates: dict[str, float]

    @classmethod
    def of(cls, scores: Sequence[GoldScore]) -> GoldSummary:
        n = len(scores)
        rates = {flag: sum(bool(getattr(score, flag)) for score in scores) / n for flag in FLAGS}
        return cls(sum(score.reward for score in scores) / n, rates)


def heldout_prompts(world: World, n: int, seed: int = 0) -> list[Prompt]:
    """n held-out prompts (wordings x instances never trained on; see `trimtab.simulation.world.split`)."""
    return world.sample_prompts(n, seed=seed, split=Split.HELDOUT)


def messages_of(prompts: Sequence[Prompt]) -> list[Messages]:
    return [prompt.messages for prompt in prompts]


def score_answers(world: World, prompts: Sequence[Prompt], answers: Sequence[str]) -> list[GoldScore]:
    return [world.score_prompt(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True)]
