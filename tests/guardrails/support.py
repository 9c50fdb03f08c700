"""Helpers of the guardrails tests."""

from __future__ import annotations

import asyncio

from guardrails.decisions import Action, CheckResult, Decision, Stage
from guardrails.runtime import Guardrails


def check(rails: Guardrails, stage: Stage, text: str, prompt: str = "What is 3 plus 5?") -> CheckResult:
    return asyncio.run(rails.check(stage, text, prompt))


def decision(result: CheckResult, rail: str) -> Decision:
    [found] = [d for d in result.decisions if d.rail == rail]
    return found


def assert_allowed(result: CheckResult, text: str) -> None:
    assert result.action is Action.ALLOW, result
    assert result.text == text
    assert all(d.action is Action.ALLOW and d.reason_code == "" for d in result.decisions)


# The online learner's measures other than the guardrail gate's, each passing its default bound.
PASSING_LEARNER_MEASURES = {
    "gate/current_reward": 1.0,
    "gate/candidate_reward": 1.0,
    "gate/candidate_kl": 0.5,
    "gate/anchor_loss_before": 1.0,
    "gate/anchor_loss_after": 1.0,
}
