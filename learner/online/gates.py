"""The offline gates a candidate passes before it may serve as the canary.

- held-out reward: the candidate's greedy answers to held-out prompts score a mean reward not below
  current's by more than `reward_tolerance`. The judge (`gates.reward_judge`) is the learner's own
  reward model (the newest it published), or in a simulation the world's gold reward r*. Both are
  measured whenever the reward model is ready, and `gate/reward_model_agreement` says how often the
  reward model orders the two answers to a prompt as r* does. A reward model that has not yet trained
  on `reward_model.min_examples` new examples judges nothing: the verdict notes it and this gate is
  not applied (the others, and the canary's live comparison, still are);
- KL: KL(candidate || reference model) (k1 estimate on the candidate's own T=1 samples,
  `learner.evaluate.kl_estimate`) within `max_kl`;
- anchor set: the round raised the anchor demonstrations' SFT loss by at most `max_anchor_regression`;
- guardrail violations (only when `guardrails.enabled`): the candidate's answers to the red-team set
  break the output rails at most `guardrails.gate.max_violation_increase` more often than current's
  (`guardrails.gate`; its numbers are the `guardrails.*` metrics).

The evaluation runs vLLM, in a child process (`python -m learner.online.gates`) for the reasons given
in `learner.generation`. Every number goes into the published version's manifest metrics.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from learner.generation import run_isolated
from trimtab.config import TrimtabConfig

if TYPE_CHECKING:
    from vllm import LLM

    from guardrails.gate import GateResult
    from guardrails.runtime import Guardrails
    from learner.evaluate import Evaluation
    from trimtab.config.guardrails import GateConfig as GuardrailGateConfig
    from trimtab.world import Prompt, World


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    numbers: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not judged, and why


# The held-out reward numbers of each judge: (candidate's, current's).
JUDGE_KEYS = {
    "gold": ("gate/candidate_reward", "gate/current_reward"),
    "reward_model": ("gate/candidate_rm_reward", "gate/current_rm_reward"),
}


def run_gates(
    config: TrimtabConfig,
    candidate_dir: Path,
    current_dir: Path,
    reference_dir: Path,
    anchor_before: float,
    anchor_after: float,
    reward_model_dir: Path | None,
    should_stop: Callable[[], bool] = lambda: False,
) -> GateVerdict:
    """The verdict on `candidate_dir`; `reward_model_dir`: the reward model to score answers with (None:
    none ready yet)."""
    gates = config.learner.online.gates
    numbers = {"gate/anchor_loss_before": anchor_before, "gate/anchor_loss_after": anchor_after}
    if not gates.enabled:
        return GateVerdict(True, [], numbers)
    payload = {
        "candidate": str(candidate_dir),
        "current": str(current_dir),
        "reference": str(reference_dir),
        "prompts": gates.heldout_prompts,
        "reward_model": None if reward_model_dir is None else str(reward_model_dir),
        "config": config.model_dump(mode="json"),
    }
    measured: dict[str, float] = run_isolated("learner.online.gates", payload, should_stop)
    return verdict(config, numbers | measured)


def verdict(config: TrimtabConfig, numbers: dict[str, float]) -> GateVerdict:
    """The decision on the measured numbers (`run_gates`' anchor losses and the child's measures)."""
    gates = config.learner.online.gates
    reasons, notes = [], []
    candidate_key, current_key = JUDGE_KEYS[gates.reward_judge]
    judge = "gold reward" if gates.reward_judge == "gold" else "reward-model reward"
    if candidate_key in numbers:
        drop = numbers[current_key] - numbers[candidate_key]
        if drop > gates.reward_tolerance:
            reasons.append(f"held-out {judge} {drop:.3f} below current's (tolerance {gates.reward_tolerance})")
    else:
        notes.append(
            f"held-out reward not judged: the reward model has not yet trained on"
            f" {config.learner.online.reward_model.min_examples} new examples"
        )
    if numbers["gate/candidate_kl"] > gates.max_kl:
        reasons.append(f"KL to reference {numbers['gate/candidate_kl']:.2f} over {gates.max_kl}")
    rise = numbers["gate/anchor_loss_after"] - numbers["gate/anchor_loss_before"]
    if rise > gates.max_anchor_regression:
        reasons.append(f"anchor-set loss rose {rise:.3f} nats/token (bound {gates.max_anchor_regression})")
    if config.guardrails.enabled and not numbers["guardrails.passed"]:
        reasons.append(
            f"guardrail violation rate {numbers['guardrails.violation_rate']:.3f} vs current's "
            f"{numbers['guardrails.current_violation_rate']:.3f} (bound +{numbers['guardrails.bound']:g})"
        )
    return GateVerdict(not reasons, reasons, numbers, notes)


def guardrail_gate(
    llm: LLM, rails: Guardrails, world: World, gate: GuardrailGateConfig, candidate_dir: Path, current_dir: Path
) -> GateResult:
    """Current's and the candidate's answers to the red-team set from `llm` (full weights of each loaded
    in turn, same seeds), judged by the output rails (`guardrails.gate`)."""
    from guardrails.gate import evaluate_gate, red_team_prompts, respond
    from learner.evaluate import load_weights

    prompts = red_team_prompts(world, rails, gate)
    load_weights(llm, current_dir)
    current = respond(llm, prompts, gate)
    load_weights(llm, candidate_dir)
    candidate = respond(llm, prompts, gate)
    return asyncio.run(evaluate_gate(rails, prompts, candidate, current, gate.max_violation_increase))


def _evaluate(payload: dict[str, object]) -> dict[str, float]:
    from learner.evaluate import evaluate_versions, heldout_prompts
    from trimtab.world import World

    config = TrimtabConfig.model_validate(payload["config"])
    world = World(config.world)
    prompts = heldout_prompts(world, int(str(payload["prompts"])), seed=config.world.seed)
    policies = {"candidate": Path(str(payload["candidate"])), "current": Path(str(payload["current"]))}
    results = evaluate_versions(policies, Path(str(payload["reference"])), prompts, world, config.engine)
    candidate, current = results["candidate"], results["current"]
    numbers = {
        "gate/candidate_reward": candidate.gold.mean_reward,
        "gate/current_reward": current.gold.mean_reward,
        "gate/reference_reward": candidate.reference_gold.mean_reward,
        "gate/candidate_kl": candidate.kl.mean,
        "kl_to_reference": candidate.kl.mean,  # the key dashboards and the demo's report read
        "gate/current_kl": current.kl.mean,
        "gate/candidate_win_rate_vs_reference": candidate.win_rate,
    }
    if payload["reward_model"] is not None:
        numbers |= _reward_model_numbers(Path(str(payload["reward_model"])), prompts, candidate, current)
    if config.guardrails.enabled:  # after the KL pass: the embedder sets torch to its own thread count
        numbers |= _guardrail_numbers(config, policies["candidate"], policies["current"])
    return numbers


def _reward_model_numbers(
    reward_model: Path, prompts: Sequence[Prompt], candidate: Evaluation, current: Evaluation
) -> dict[str, float]:
    """The reward model's mean score of each side's answers, and how often it orders a prompt's two answers
    as the gold reward does (over the prompts whose answers r* does not tie; NaN when all tie)."""
    from learner.evaluate import reward_model_scores

    ours = reward_model_scores(reward_model, prompts, candidate.answers)
    theirs = reward_model_scores(reward_model, prompts, current.answers)
    ordered = [
        (a - b > 0) == (gold_a - gold_b > 0)
        for a, b, gold_a, gold_b in zip(ours, theirs, candidate.rewards, current.rewards, strict=True)
        if gold_a != gold_b
    ]
    return {
        "gate/candidate_rm_reward": sum(ours) / len(ours),
        "gate/current_rm_reward": sum(theirs) / len(theirs),
        "gate/reward_model_agreement": sum(ordered) / len(ordered) if ordered else math.nan,
        "gate/reward_model_agreement_prompts": float(len(ordered)),  # what the agreement is a share of
    }


def _guardrail_numbers(config: TrimtabConfig, candidate_dir: Path, current_dir: Path) -> dict[str, float]:
    """The guardrail gate's manifest numbers, on an engine of its own (the evaluation's is shut down)."""
    from guardrails.runtime import Guardrails
    from guardrails.semantic import Embedder
    from guardrails.service import config_dir
    from learner.evaluate import full_weights_dir, vllm_engine
    from trimtab.world import World

    settings, world = config.guardrails, World(config.world)
    embedder = Embedder(settings.device, settings.embedding_threads)
    try:
        rails = Guardrails.load(config_dir(settings), embedder, world)
        with tempfile.TemporaryDirectory(prefix="trimtab-guardrail-gate-") as scratch:
            candidate = full_weights_dir(candidate_dir, Path(scratch) / "candidate")
            current = full_weights_dir(current_dir, Path(scratch) / "current")
            with vllm_engine(current, config.engine) as llm:
                return guardrail_gate(llm, rails, world, settings.gate, candidate, current).metrics()
    finally:
        embedder.close()


if __name__ == "__main__":
    request_file, out_file = sys.argv[1:3]
    Path(out_file).write_text(json.dumps(_evaluate(json.loads(Path(request_file).read_text()))))
