"""The evaluation suite checked before the online learner starts: a suite its gates cannot use is
refused in a second, by `trimtab learn --online` before torch loads, and again by each rank."""

from __future__ import annotations

from pathlib import Path

from trimtab.config import TrimtabConfig
from trimtab.registry import Registry
from trimtab.suite import EvaluationSuite, Judge, SuiteError


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
