"""Feedback on responses the guardrails stopped: what the feedback service records, and how the learner
may train such an event.

Poisoning through feedback is cheap: a thumb up on a leaked secret, if trained as a positive
example, teaches the model to leak. So a response that an output rail modified or blocked is never
trained as a positive example, whatever the user said. `training_label` is the one place that
decides, as a pure function of the event and the policy (`guardrails.feedback_filter`):

    decision = training_label(event, config.guardrails.feedback_filter)
    if decision.use is Use.DROP: skip it
    else: train on decision.label (FLIP: the label turned against the violating response)

Pure protobuf in, protobuf out: no rails are loaded, so feedback and the learner import it cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from trimtab.v1 import common_pb2, events_pb2, feedback_pb2

FilterPolicy = Literal["drop", "flip"]
_VIOLATIONS = (common_pb2.GUARDRAIL_ACTION_MODIFY, common_pb2.GUARDRAIL_ACTION_BLOCK)


def violations(record: events_pb2.ResponseLogged, response_ids: Sequence[str]) -> events_pb2.GuardrailSignals:
    """Which of the judged responses an output rail modified or blocked, and why. Input rails do not
    count: a prompt's masked PII or a refused jailbreak says nothing against the model's answer."""
    by_id = {candidate.reply.response_id: candidate.reply for candidate in record.candidates}
    signals = events_pb2.GuardrailSignals()
    reasons: set[str] = set()
    for response_id in response_ids:
        reply = by_id.get(response_id)
        if reply is None:
            continue
        stopped = [d for d in reply.guardrails if d.stage == common_pb2.RAIL_STAGE_OUTPUT and d.action in _VIOLATIONS]
        if stopped:
            signals.violating_response_ids.append(response_id)
            reasons.update(d.reason_code for d in stopped)
    signals.reason_codes.extend(sorted(reasons))
    return signals


def is_positive(label: feedback_pb2.FeedbackLabel) -> bool:
    """Whether the label endorses the judged response (for a pair: its chosen one)."""
    kind = label.WhichOneof("kind")
    if kind == "thumb":
        return label.thumb == feedback_pb2.THUMB_UP
    if kind == "rating":
        return label.rating >= 4
    return kind == "pairwise" and not label.pairwise.tie


class Use(StrEnum):
    AS_IS = "as_is"  # no violating response is endorsed: train on the label given
    FLIP = "flip"  # train on `label`, the given one turned against the violating response
    DROP = "drop"  # do not train on this event


@dataclass(frozen=True)
class TrainingLabel:
    use: Use
    label: feedback_pb2.FeedbackLabel  # what to train on (unset for DROP)
    reason: str  # why, for logs and counts: "" for AS_IS


def training_label(event: events_pb2.FeedbackEvent, policy: FilterPolicy) -> TrainingLabel:
    """How the learner may train this event: never as a positive example of a violating response."""
    label = event.label
    violating = set(event.guardrails.violating_response_ids)
    kind = label.WhichOneof("kind")
    if not violating or kind in ("correction", "comment"):  # a correction is the user's text, not the model's
        return TrainingLabel(Use.AS_IS, label, "")
    if kind == "pairwise":
        return _pairwise(label.pairwise, violating, policy)
    if event.response_id not in violating:
        return TrainingLabel(Use.AS_IS, label, "")
    if kind == "attributes":
        # Scores have no opposite to flip to, and training a stopped response under the scores a user
        # gave it would teach the model to produce it whenever those scores are asked for.
        return TrainingLabel(Use.DROP, feedback_pb2.FeedbackLabel(), "attributes of a violating response")
    if not is_positive(label):
        return TrainingLabel(Use.AS_IS, label, "")
    if policy == "drop":
        return TrainingLabel(Use.DROP, feedback_pb2.FeedbackLabel(), f"positive {kind} on a violating response")
    if kind == "thumb":
        flipped = feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_DOWN)
    else:  # a rating of 4 or 5 becomes 2 or 1
        flipped = feedback_pb2.FeedbackLabel(rating=6 - label.rating)
    return TrainingLabel(Use.FLIP, flipped, f"positive {kind} on a violating response, flipped")


def _pairwise(pair: feedback_pb2.Pairwise, violating: set[str], policy: FilterPolicy) -> TrainingLabel:
    chosen_bad = pair.chosen_response_id in violating
    rejected_bad = pair.rejected_response_id in violating
    if pair.tie:
        # "As good as each other" endorses the violating one; the opposite is "the other one is better".
        if chosen_bad == rejected_bad:
            return TrainingLabel(Use.DROP, feedback_pb2.FeedbackLabel(), "tie between two violating responses")
        good, bad = (
            (pair.rejected_response_id, pair.chosen_response_id)
            if chosen_bad
            else (
                pair.chosen_response_id,
                pair.rejected_response_id,
            )
        )
        return _preferring(good, bad, policy, "tie with a violating response")
    if not chosen_bad:
        return TrainingLabel(Use.AS_IS, feedback_pb2.FeedbackLabel(pairwise=pair), "")
    if rejected_bad:
        return TrainingLabel(Use.DROP, feedback_pb2.FeedbackLabel(), "both responses of the pair violate")
    return _preferring(pair.rejected_response_id, pair.chosen_response_id, policy, "violating response chosen")


def _preferring(good: str, bad: str, policy: FilterPolicy, why: str) -> TrainingLabel:
    if policy == "drop":
        return TrainingLabel(Use.DROP, feedback_pb2.FeedbackLabel(), why)
    flipped = feedback_pb2.FeedbackLabel(
        pairwise=feedback_pb2.Pairwise(chosen_response_id=good, rejected_response_id=bad)
    )
    return TrainingLabel(Use.FLIP, flipped, f"{why}, flipped")
