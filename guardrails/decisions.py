"""What a rail decides: allow, modify or block, with a stable reason code and a score where it has one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from trimtab.v1 import common_pb2


class Stage(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class Action(StrEnum):
    ALLOW = "allow"
    MODIFY = "modify"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.MODIFY: 1, Action.BLOCK: 2}
_STAGES = {Stage.INPUT: common_pb2.RAIL_STAGE_INPUT, Stage.OUTPUT: common_pb2.RAIL_STAGE_OUTPUT}
_ACTIONS = {
    Action.ALLOW: common_pb2.GUARDRAIL_ACTION_ALLOW,
    Action.MODIFY: common_pb2.GUARDRAIL_ACTION_MODIFY,
    Action.BLOCK: common_pb2.GUARDRAIL_ACTION_BLOCK,
}


@dataclass(frozen=True)
class Decision:
    """One rail's verdict on one text. `reason_code` is empty for ALLOW (e.g. "pii.email" otherwise)."""

    rail: str
    stage: Stage
    action: Action
    reason_code: str = ""
    score: float | None = None

    def to_proto(self) -> common_pb2.GuardrailDecision:
        message = common_pb2.GuardrailDecision(
            rail=self.rail, stage=_STAGES[self.stage], action=_ACTIONS[self.action], reason_code=self.reason_code
        )
        if self.score is not None:
            message.score = self.score
        return message


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: the overall action, the text to use and every rail's decision."""

    action: Action
    text: str  # the checked text, changed where a rail masked something (even if another then blocked it)
    decisions: tuple[Decision, ...]

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def reason_code(self) -> str:
        """The reason of the most severe decision ("" when everything was allowed)."""
        worst = max(self.decisions, key=lambda d: d.action.severity, default=None)
        return worst.reason_code if worst is not None else ""


def overall(decisions: Iterable[Decision]) -> Action:
    return max((d.action for d in decisions), key=lambda a: a.severity, default=Action.ALLOW)


def merge(decisions: Iterable[Decision]) -> list[Decision]:
    """One decision per (stage, rail): the most severe, then the highest score. A stream is checked many
    times; what the response record keeps is the worst that happened to it under each rail."""
    kept: dict[tuple[Stage, str], Decision] = {}
    for decision in decisions:
        key = (decision.stage, decision.rail)
        if key not in kept or _rank(decision) > _rank(kept[key]):
            kept[key] = decision
    return list(kept.values())


def _rank(decision: Decision) -> tuple[int, float]:
    return decision.action.severity, decision.score if decision.score is not None else float("-inf")
