"""How feedback on a response a guardrail stopped may be trained: never as a positive example."""

from __future__ import annotations

import pytest

from guardrails.training import Use, is_positive, training_label, violations
from trimtab.v1 import common_pb2, events_pb2, feedback_pb2, inference_pb2

OUTPUT, INPUT = common_pb2.RAIL_STAGE_OUTPUT, common_pb2.RAIL_STAGE_INPUT
ALLOW, MODIFY, BLOCK = (
    common_pb2.GUARDRAIL_ACTION_ALLOW,
    common_pb2.GUARDRAIL_ACTION_MODIFY,
    common_pb2.GUARDRAIL_ACTION_BLOCK,
)


def record(*decisions: list[common_pb2.GuardrailDecision]) -> events_pb2.ResponseLogged:
    """A request whose candidate i ("resp_i") carries decisions[i]."""
    logged = events_pb2.ResponseLogged(request_id="req_1")
    for index, made in enumerate(decisions):
        reply = inference_pb2.Candidate(index=index, response_id=f"resp_{index}", text="...", guardrails=made)
        logged.candidates.add(reply=reply)
    return logged


def rail(stage: int, action: int, reason: str = "") -> common_pb2.GuardrailDecision:
    return common_pb2.GuardrailDecision(rail="r", stage=stage, action=action, reason_code=reason)


def event(
    label: feedback_pb2.FeedbackLabel, response_id: str = "resp_0", violating: tuple[str, ...] = ()
) -> events_pb2.FeedbackEvent:
    return events_pb2.FeedbackEvent(
        response_id=response_id, label=label, guardrails=events_pb2.GuardrailSignals(violating_response_ids=violating)
    )


def thumb(up: bool) -> feedback_pb2.FeedbackLabel:
    return feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP if up else feedback_pb2.THUMB_DOWN)


def pair(chosen: str, rejected: str, tie: bool = False) -> feedback_pb2.FeedbackLabel:
    return feedback_pb2.FeedbackLabel(
        pairwise=feedback_pb2.Pairwise(chosen_response_id=chosen, rejected_response_id=rejected, tie=tie)
    )


def test_violations_are_output_rails_that_modified_or_blocked() -> None:
    logged = record(
        [rail(INPUT, MODIFY, "pii.email"), rail(OUTPUT, ALLOW)],  # masked prompt only: not the model's fault
        [rail(OUTPUT, BLOCK, "secret.leak"), rail(OUTPUT, MODIFY, "pii.phone")],
        [rail(OUTPUT, MODIFY, "pii.phone")],
    )
    signals = violations(logged, ["resp_0", "resp_1"])
    assert list(signals.violating_response_ids) == ["resp_1"]
    assert list(signals.reason_codes) == ["pii.phone", "secret.leak"]
    assert list(violations(logged, ["resp_2", "resp_9"]).violating_response_ids) == ["resp_2"]


@pytest.mark.parametrize("policy", ["drop", "flip"])
def test_feedback_on_clean_responses_is_trained_as_given(policy: str) -> None:
    for label in (thumb(True), thumb(False), pair("resp_0", "resp_1")):
        decided = training_label(event(label), policy)  # type: ignore[arg-type]
        assert decided.use is Use.AS_IS and decided.label == label


@pytest.mark.parametrize(
    ("label", "flipped"),
    [
        (thumb(True), thumb(False)),
        (feedback_pb2.FeedbackLabel(rating=5), feedback_pb2.FeedbackLabel(rating=1)),
        (feedback_pb2.FeedbackLabel(rating=4), feedback_pb2.FeedbackLabel(rating=2)),
    ],
)
def test_positive_feedback_on_a_violating_response_is_flipped_or_dropped(
    label: feedback_pb2.FeedbackLabel, flipped: feedback_pb2.FeedbackLabel
) -> None:
    on_violation = event(label, violating=("resp_0",))
    assert is_positive(label)
    flip = training_label(on_violation, "flip")
    assert flip.use is Use.FLIP and flip.label == flipped and "violating" in flip.reason
    assert training_label(on_violation, "drop").use is Use.DROP


@pytest.mark.parametrize(
    "label",
    [thumb(False), feedback_pb2.FeedbackLabel(rating=1), feedback_pb2.FeedbackLabel(rating=3)],
)
def test_negative_or_neutral_feedback_on_a_violating_response_is_kept(label: feedback_pb2.FeedbackLabel) -> None:
    for policy in ("drop", "flip"):
        decided = training_label(event(label, violating=("resp_0",)), policy)  # type: ignore[arg-type]
        assert decided.use is Use.AS_IS and decided.label == label


def test_pairs_never_prefer_a_violating_response() -> None:
    chose_bad = event(pair("resp_1", "resp_0"), response_id="", violating=("resp_1",))
    flipped = training_label(chose_bad, "flip")
    assert flipped.use is Use.FLIP and flipped.label == pair("resp_0", "resp_1")
    assert training_label(chose_bad, "drop").use is Use.DROP
    chose_good = event(pair("resp_0", "resp_1"), response_id="", violating=("resp_1",))
    assert training_label(chose_good, "flip").use is Use.AS_IS
    both_bad = event(pair("resp_0", "resp_1"), response_id="", violating=("resp_0", "resp_1"))
    assert training_label(both_bad, "flip").use is Use.DROP
    tie = event(pair("resp_1", "resp_0", tie=True), response_id="", violating=("resp_1",))
    assert training_label(tie, "flip").label == pair("resp_0", "resp_1")


def test_attributes_of_a_violating_response_are_dropped_and_corrections_kept() -> None:
    scores = feedback_pb2.FeedbackLabel(attributes=common_pb2.SteerLMAttributes(helpfulness=4, toxicity=0))
    assert training_label(event(scores, violating=("resp_0",)), "flip").use is Use.DROP
    correction = feedback_pb2.FeedbackLabel(correction="I cannot share the vault code.")
    assert training_label(event(correction, violating=("resp_0",)), "flip").use is Use.AS_IS
