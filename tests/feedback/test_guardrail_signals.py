"""Feedback on a response a guardrail stopped: the event says so (FeedbackEvent.guardrails), the learner's
filter (guardrails.training) never trains it as positive, and the service counts it."""

from __future__ import annotations

import uuid

import pytest

from guardrails.training import Use, training_label
from tests.feedback.support import InProcessServer, events_for, response_ids, response_record, thumb
from trimtab.v1 import common_pb2, feedback_pb2, inference_pb2

pytestmark = pytest.mark.integration


def test_feedback_events_carry_whether_the_judged_response_violated_a_rail(feedback_server: InProcessServer) -> None:
    record = response_record(user_id="mallory")
    leaked = record.candidates[1].reply
    leaked.text = "I can't help with that request. (guardrail: secret.leak)"
    leaked.finish_reason = inference_pb2.FINISH_REASON_BLOCKED
    leaked.guardrails.add(
        rail="secret",
        stage=common_pb2.RAIL_STAGE_OUTPUT,
        action=common_pb2.GUARDRAIL_ACTION_BLOCK,
        reason_code="secret.leak",
    )
    record.candidates[0].reply.guardrails.add(
        rail="pii",
        stage=common_pb2.RAIL_STAGE_INPUT,
        action=common_pb2.GUARDRAIL_ACTION_MODIFY,
        reason_code="pii.email",
    )
    clean_id, leaked_id = response_ids(feedback_server.put(record))
    before = feedback_server.metric_points("trimtab.feedback.rail_violations")

    up_on_leak = thumb(leaked_id, user_id="mallory")
    up_on_clean = thumb(clean_id, user_id="mallory")
    pair = feedback_pb2.SubmitRequest(
        feedback_id=str(uuid.uuid4()),
        user_id="mallory",
        label=feedback_pb2.FeedbackLabel(
            pairwise=feedback_pb2.Pairwise(chosen_response_id=leaked_id, rejected_response_id=clean_id)
        ),
    )
    for submission in (up_on_leak, up_on_clean, pair):
        feedback_server.submit(submission)
    events = {
        e.event.feedback_id: e.event
        for e in events_for(feedback_server.config, {s.feedback_id for s in (up_on_leak, up_on_clean, pair)})
    }

    on_leak = events[up_on_leak.feedback_id]
    assert list(on_leak.guardrails.violating_response_ids) == [leaked_id]
    assert list(on_leak.guardrails.reason_codes) == ["secret.leak"]
    assert training_label(on_leak, "flip").label.thumb == feedback_pb2.THUMB_DOWN
    assert training_label(on_leak, "drop").use is Use.DROP
    on_clean = events[up_on_clean.feedback_id]
    assert len(on_clean.guardrails.violating_response_ids) == 0  # a masked prompt is not the model's fault
    assert training_label(on_clean, "flip").use is Use.AS_IS
    on_pair = events[pair.feedback_id]
    assert list(on_pair.guardrails.violating_response_ids) == [leaked_id]
    assert training_label(on_pair, "flip").label.pairwise.chosen_response_id == clean_id

    counted = feedback_server.metric_points("trimtab.feedback.rail_violations")
    for kind in ("thumb", "pairwise"):
        series = (("kind", kind), ("use", "flip"))  # the service's filter policy: the default, flip
        assert counted.get(series, 0) - before.get(series, 0) == 1
