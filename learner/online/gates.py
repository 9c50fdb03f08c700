"""The offline gates a candidate passes before it may serve as the canary, on the evaluation suite
(`trimtab.suite`: the operator's held-out prompts, anchors, red team and judge).

- held-out reward: the candidate's greedy answers to the suite's held-out prompts score a mean reward
  not below current's by more than `reward_tolerance`. The judge (`gates.reward_judge`) is the
  learner's own reward model (the newest it published) or the suite's judge (a scorer function, a
  reward-model version; in the simulation, the world's gold reward). Every judge available is
  measured, and when both are, `gate/reward_model_agreement` says how often the reward model orders
  a prompt's two answers as the suite's judge does. A judge that is not ready (a reward model that has
  not yet trained on `reward_model.min_examples` new examples, a suite without one) judges nothing:
  the verdict notes it and this gate is not applied (the others, and the canary's live comparison,
  still are);
- KL: KL(candidate || reference model) (k1 estimate on the candidate's own T=1 samples,
  `learner.evaluate.kl_estimate`) within `max_kl`;
- anchor set: the round raised the suite's anchor demonstrations' SFT loss by at most
  `max_anchor_regression`;
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
from trimtab.config import TrimtabConfig, handoff
from trimtab.jsonl import Messages
from trimtab.registry import Registry
from trimtab.suite import EvaluationSuite, Judge, SuiteError, load_suite

if TYPE_CHECKING:
    from vllm import LLM

    from guardrails.gate import GateResult
    from guardrails.runtime import Guardrails
    from learner.evaluate import Evaluation
    from trimtab.config.guardrails import GateConfig as GuardrailGateConfig
    from trimtab.suite import RedTeamPrompt


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    numbers: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not judged, and why


@dataclass(frozen=True)
class GateCandidate:
    """What the gates compare: the candidate, what serves now, and the model KL is measured against."""

    candidate_dir: Path
    current_dir: Path
    reference_dir: Path
    anchor_loss_before: float  # the anchor set's SFT loss before the round (nats/token)
    anchor_loss_after: float
    reward_model_dir: Path | None  # the learner's reward model, once ready to judge


# The held-out reward numbers of each judge: (candidate's, current's).
JUDGE_KEYS = {
    "suite": ("gate/candidate_reward", "gate/current_reward"),
    "reward_model": ("gate/candidate_rm_reward", "gate/current_rm_reward"),
}


def check_suite(config: TrimtabConfig, suite: EvaluationSuite) -> None:
    """Refuse at start-up a suite the gates cannot work with (SuiteError naming the setting)."""
    gates = config.learner.online.gates
    if gates.enabled and not suite.heldout:
        raise SuiteError(
            f"learner.online.gates needs held-out prompts: the {suite.name} suite has none"
            ' (set suite.heldout to a JSONL of {"prompt": ...}, or turn the gates off)'
        )
    if suite.judge is not None and suite.judge.reward_version is not None:
        judge_dir(config, suite.judge)


def judge_dir(config: TrimtabConfig, judge: Judge) -> Path:
    """The directory of a reward-model version judge; RewardError if it is missing or not a reward model."""
    from learner.rewards import reward_model_dir

    return reward_model_dir(Registry(config.registry.root), str(judge.reward_version), "suite.judge_reward_version")


def run_gates(
    config: TrimtabConfig, candidate: GateCandidate, should_stop: Callable[[], bool] = lambda: False
) -> GateVerdict:
    """The verdict on `candidate.candidate_dir`."""
    gates = config.learner.online.gates
    numbers = {
        "gate/anchor_loss_before": candidate.anchor_loss_before,
        "gate/anchor_loss_after": candidate.anchor_loss_after,
    }
    if not gates.enabled:
        return GateVerdict(True, [], numbers)
    payload = {
        "candidate": str(candidate.candidate_dir),
        "current": str(candidate.current_dir),
        "reference": str(candidate.reference_dir),
        "reward_model": None if candidate.reward_model_dir is None else str(candidate.reward_model_dir),
        "config": handoff(config),
    }
    measured: dict[str, float] = run_isolated("learner.online.gates", payload, should_stop)
    return verdict(config, numbers | measured)


def verdict(config: TrimtabConfig, numbers: dict[str, float]) -> GateVerdict:
    """The decision on the measured numbers (`run_gates`' anchor losses and the child's measures)."""
    gates = config.learner.online.gates
    reasons, notes = [], []
    candidate_key, current_key = JUDGE_KEYS[gates.reward_judge]
    judge = "suite-judged reward" if gates.reward_judge == "suite" else "reward-model reward"
    if candidate_key in numbers:
        drop = numbers[current_key] - numbers[candidate_key]
        if drop > gates.reward_tolerance:
            reasons.append(f"held-out {judge} {drop:.3f} below current's (tolerance {gates.reward_tolerance})")
    elif gates.reward_judge == "reward_model":
        notes.append(
            f"held-out reward not judged: the reward model has not yet trained on"
            f" {config.learner.online.reward_model.min_examples} new examples"
        )
    else:
        notes.append("held-out reward not judged: the suite has no judge (suite.judge)")
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
    llm: LLM,
    rails: Guardrails,
    red_team: Sequence[RedTeamPrompt],
    gate: GuardrailGateConfig,
    candidate_dir: Path,
    current_dir: Path,
) -> GateResult:
    """Current's and the candidate's answers to the red-team set from `llm` (full weights of each loaded
    in turn, same seeds), judged by the output rails (`guardrails.gate`)."""
    from guardrails.gate import evaluate_gate, red_team_prompts, respond
    from learner.evaluate import load_weights

    prompts = red_team_prompts(red_team, rails)
    load_weights(llm, current_dir)
    current = respond(llm, prompts, gate)
    load_weights(llm, candidate_dir)
    candidate = respond(llm, prompts, gate)
    return asyncio.run(evaluate_gate(rails, prompts, candidate, current, gate.max_violation_increase))


def _evaluate(payload: dict[str, object]) -> dict[str, float]:
    from learner.evaluate import evaluate_versions, win_rate

    config = TrimtabConfig.model_validate(payload["config"])
    suite = load_suite(config)
    prompts = list(suite.heldout[: config.learner.online.gates.heldout_prompts])
    policies = {"candidate": Path(str(payload["candidate"])), "current": Path(str(payload["current"]))}
    results = evaluate_versions(policies, Path(str(payload["reference"])), prompts, None, config.engine)
    candidate, current = results["candidate"], results["current"]
    numbers = {
        "gate/heldout_prompts": float(len(prompts)),
        "gate/candidate_kl": candidate.kl.mean,
        "kl_to_reference": candidate.kl.mean,  # the key dashboards and the demo's report read
        "gate/current_kl": current.kl.mean,
    }
    judged = _judged(config, suite.judge, prompts, candidate, current)
    if judged is not None:
        ours, theirs, reference = judged
        numbers |= {
            "gate/candidate_reward": _mean(ours),
            "gate/current_reward": _mean(theirs),
            "gate/reference_reward": _mean(reference),
            "gate/candidate_win_rate_vs_reference": win_rate(ours, reference),
        }
    if payload["reward_model"] is not None:
        numbers |= _reward_model_numbers(Path(str(payload["reward_model"])), prompts, candidate, current, judged)
    if config.guardrails.enabled:  # after the KL pass: the embedder sets torch to its own thread count
        numbers |= _guardrail_numbers(config, suite, policies["candidate"], policies["current"])
    return numbers


Scores = tuple[list[float], list[float], list[float]]  # candidate's, current's, the reference's answers


def _judged(
    config: TrimtabConfig, judge: Judge | None, prompts: Sequence[Messages], candidate: Evaluation, current: Evaluation
) -> Scores | None:
    """The suite judge's scores of each side's greedy answers (None: the suite has no judge)."""
    from learner.evaluate import judge_answers
    from learner.rewards import RewardModel

    sides = (candidate.answers, current.answers, candidate.reference_answers)
    if judge is None:
        return None
    if judge.scorer is not None:
        ours, theirs, reference = (judge_answers(judge.scorer, prompts, answers) for answers in sides)
    else:
        reward_model = RewardModel(judge_dir(config, judge))
        ours, theirs, reference = (reward_model(prompts, answers) for answers in sides)
    return ours, theirs, reference


def _reward_model_numbers(
    reward_model: Path,
    prompts: Sequence[Messages],
    candidate: Evaluation,
    current: Evaluation,
    judged: Scores | None,
) -> dict[str, float]:
    """The reward model's mean score of each side's answers and, with a suite judge, how often it orders a
    prompt's two answers as that judge does (over the prompts the judge does not tie; NaN when all tie)."""
    from learner.rewards import RewardModel

    model = RewardModel(reward_model)
    ours, theirs = model(prompts, candidate.answers), model(prompts, current.answers)
    numbers = {"gate/candidate_rm_reward": _mean(ours), "gate/current_rm_reward": _mean(theirs)}
    if judged is not None:
        judge_ours, judge_theirs, _ = judged
        ordered = [
            (a - b > 0) == (j_a - j_b > 0)
            for a, b, j_a, j_b in zip(ours, theirs, judge_ours, judge_theirs, strict=True)
            if j_a != j_b
        ]
        numbers["gate/reward_model_agreement"] = sum(ordered) / len(ordered) if ordered else math.nan
        numbers["gate/reward_model_agreement_prompts"] = float(len(ordered))  # what the agreement is a share of
    return numbers


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _guardrail_numbers(
    config: TrimtabConfig, suite: EvaluationSuite, candidate_dir: Path, current_dir: Path
) -> dict[str, float]:
    """The guardrail gate's manifest numbers, on an engine of its own (the evaluation's is shut down)."""
    from guardrails.runtime import Guardrails
    from guardrails.semantic import Embedder
    from guardrails.service import config_dir
    from learner.evaluate import full_weights_dir, vllm_engine

    settings = config.guardrails
    embedder = Embedder(settings.device, settings.embedding_threads)
    try:
        rails = Guardrails.load(config_dir(settings), embedder, suite.protected)
        with tempfile.TemporaryDirectory(prefix="trimtab-guardrail-gate-") as scratch:
            candidate = full_weights_dir(candidate_dir, Path(scratch) / "candidate")
            current = full_weights_dir(current_dir, Path(scratch) / "current")
            with vllm_engine(current, config.engine) as llm:
                return guardrail_gate(llm, rails, suite.red_team, settings.gate, candidate, current).metrics()
    finally:
        embedder.close()


if __name__ == "__main__":
    request_file, out_file = sys.argv[1:3]
    Path(out_file).write_text(json.dumps(_evaluate(json.loads(Path(request_file).read_text()))))
