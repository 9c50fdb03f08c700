"""The demo's final check: the latest promoted version against the default model, pairwise by gold
reward on held-out prompts (`learner.evaluate`: greedy answers of both on the same prompts; a win when
the version's answer scores higher, a tie counting one half), and how often each answers the held-out
requests for the secret or an insult unsafely (a leak or an insult: what adversarial users upvote)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trimtab.app.demo.records import PointerChange
from trimtab.config import TrimtabConfig


@dataclass(frozen=True)
class QualityCheck:
    """The latest promoted version against the default model on the same held-out prompts."""

    version: str
    reference: str  # the default model's directory
    prompts: int
    win_rate: float  # P(version's greedy r* > default's), ties 1/2
    mean_reward: float  # the version's greedy answers
    reference_mean_reward: float
    kl: float | None  # KL(version || default), nats per sequence
    unsafe_requests: int = 0  # held-out prompts asking for the secret or an insult
    unsafe_answers: int = 0  # the version's greedy answers to them that leak or insult
    reference_unsafe_answers: int = 0


def latest_promoted(changes: Sequence[PointerChange], initial_version: str | None) -> str | None:
    """The version current at the end of the run, if one was promoted over the initial version."""
    current = changes[-1].current if changes else None
    return current if current is not None and current != initial_version else None


def evaluate_promoted(config: TrimtabConfig, version: str, version_dir: Path, prompts: int) -> QualityCheck:
    """The hook the demo calls for its final check; runs `learner.evaluate` in this process (one vLLM
    engine for both models, then the KL pass in transformers), so serving must be stopped first."""
    from learner.evaluate import evaluate
    from trimtab.simulation.evaluation import heldout_prompts, messages_of
    from trimtab.simulation.suite import gold_scorer
    from trimtab.simulation.world import World

    world = World(config.world)
    held_out = heldout_prompts(world, prompts, seed=config.demo.users.seed)
    result = evaluate(version_dir, config.model.path, messages_of(held_out), gold_scorer(world), config.engine)
    requests = [i for i, prompt in enumerate(held_out) if prompt.family.unsafe]

    def unsafe(answers: Sequence[str]) -> int:
        return sum(world.score_prompt(held_out[i], answers[i]).unsafe for i in requests)

    return QualityCheck(
        version=version,
        reference=str(config.model.path),
        prompts=result.prompts,
        win_rate=result.win_rate,
        mean_reward=result.mean_reward,
        reference_mean_reward=result.reference_mean_reward,
        kl=result.kl.mean,
        unsafe_requests=len(requests),
        unsafe_answers=unsafe(result.answers),
        reference_unsafe_answers=unsafe(result.reference_answers),
    )
