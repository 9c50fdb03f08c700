"""Submit end to end, over gRPC and HTTP/JSON, against the real broker and Redis.

Each kind lands on the topic as one self-contained event; each bad input gets the same status and
message on both transports; retries return the original acceptance; votes supersede.
"""

from __future__ import annotations

import uuid

import pytest

from tests.feedback.support import (
    TRANSPORTS,
    InProcessServer,
    attributes,
    call,
    events_for,
    label,
    response_ids,
    response_record,
    thumb,
    topic_records,
)
from trimtab.events import EVENT_TYPE_HEADER, SCHEMA_VERSION_HEADER
from trimtab.v1 import events_pb2, feedback_pb2

pytestmark = pytest.mark.integration


def labels_by_kind(first: str, second: str) -> dict[str, tuple[str, feedback_pb2.FeedbackLabel]]:
    """(response_id, label) for every kind of feedback on a two-candidate request."""
    pair = feedback_pb2.Pairwise(chosen_response_id=second, rejected_response_id=first)
    return {
        "thumb": (first, label(thumb=feedback_pb2.THUMB_DOWN)),
        "pairwise": ("", label(pairwise=pair)),
        "rating": (first, label(rating=2)),
        "attributes": (second, label(attributes=attributes(helpfulness=4, correctness=0, toxicity=0))),
        "correction": (first, label(correction="3 plus 5 is 8.")),
        "comment": (second, label(comment="right, but rude")),
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["thumb", "pairwise", "rating", "attributes", "correction", "comment"])
def test_each_kind_round_trips_to_the_topic_with_its_payload(
    feedback_server: InProcessServer, transport: str, kind: str
) -> None:
    record = feedback_server.put(response_record(user_id="alice"))
    response_id, given = labels_by_kind(*response_ids(record))[kind]
    request = feedback_pb2.SubmitRequest(
        feedback_id=str(uuid.uuid4()), user_id="alice", response_id=response_id, label=given
    )

    outcome = call(feedback_server, request, transport)

    assert outcome.status == "OK", outcome.message
    accepted = outcome.response
    assert accepted is not None and not accepted.replayed and accepted.supersedes == ""
    [received] = events_for(feedback_server.config, {request.feedback_id})
    event = received.event
    assert (received.partition, received.offset) == (accepted.partition, accepted.offset)
    assert received.key == record.request_id.encode()  # one request's events stay in order
    assert event.event_id == accepted.event_id
    assert (event.user_id, event.response_id, event.label) == ("alice", response_id, given)
    assert event.served == record  # self-contained: prompt, candidates, versions, tokens, logprobs
    assert event.accepted_at.seconds > 0
    assert event.abuse.over_training_cap is False and not event.abuse.HasField("weight")


def test_events_carry_schema_version_type_and_the_callers_trace(feedback_server: InProcessServer) -> None:
    record = feedback_server.put(response_record())
    request = thumb(response_ids(record)[0])
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert call(feedback_server, request, "grpc", {"traceparent": caller}).status == "OK"
    headers = dict(received_headers(feedback_server, request.feedback_id))
    assert headers[SCHEMA_VERSION_HEADER] == b"1"
    assert headers[EVENT_TYPE_HEADER] == b"trimtab.v1.FeedbackEvent"
    assert headers["traceparent"].decode().split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


def received_headers(server: InProcessServer, feedback_id: str) -> list[tuple[str, bytes]]:
    for record in topic_records(server.config, server.config.kafka.topics.feedback.name):
        if events_pb2.FeedbackEvent.FromString(record.value).feedback_id == feedback_id:
            return list(record.headers)
    raise AssertionError(f"no record for {feedback_id}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_retry_returns_the_original_acceptance_and_writes_nothing(
    feedback_server: InProcessServer, transport: str
) -> None:
    record = feedback_server.put(response_record())
    request = thumb(response_ids(record)[0])
    first = call(feedback_server, request, "grpc").response
    retried = call(feedback_server, request, transport).response  # either transport: one idempotency key
    assert first is not None and retried is not None
    assert retried.replayed and not first.replayed
    first.replayed = True
    assert retried == first
    assert len(events_for(feedback_server.config, {request.feedback_id})) == 1


def bad_inputs(server: InProcessServer) -> dict[str, tuple[feedback_pb2.SubmitRequest, str, str]]:
    """name -> (request, gRPC status, message) for each way a submission can be refused by validation."""
    record = server.put(response_record(user_id="bob"))
    other_request = server.put(response_record(user_id="bob"))
    first, second = response_ids(record)
    used = thumb(first, user_id="bob")
    assert call(server, used, "grpc").status == "OK"
    reused = thumb(first, user_id="bob", up=False, feedback_id=used.feedback_id)
    across = feedback_pb2.Pairwise(chosen_response_id=first, rejected_response_id=response_ids(other_request)[0])

    def submission(
        response_id: str, given: feedback_pb2.FeedbackLabel, user: str = "bob"
    ) -> feedback_pb2.SubmitRequest:
        return feedback_pb2.SubmitRequest(
            feedback_id=str(uuid.uuid4()), user_id=user, response_id=response_id, label=given
        )

    return {
        "unknown response": (
            submission("resp_gone", label(rating=3)),
            "NOT_FOUND",
            "response_id: response 'resp_gone' is unknown or has expired",
        ),
        "another user": (
            submission(first, label(rating=3), user="mallory"),
            "PERMISSION_DENIED",
            "user 'mallory' was not the user served this response, and tenant 'default' does not allow raters",
        ),
        "pair across requests": (
            submission("", label(pairwise=across)),
            "INVALID_ARGUMENT",
            "label.pairwise.rejected_response_id: must be a candidate of the same request as chosen_response_id",
        ),
        "rating out of range": (
            submission(second, label(rating=9)),
            "INVALID_ARGUMENT",
            "label.rating: must be 1 to 5",
        ),
        "oversize comment": (
            submission(second, label(comment="x" * 5000)),
            "INVALID_ARGUMENT",
            "label.comment: at most 4096 characters, got 5000",
        ),
        "no label": (submission(second, feedback_pb2.FeedbackLabel()), "INVALID_ARGUMENT", "label: required"),
        "id reused for other content": (
            reused,
            "ALREADY_EXISTS",
            f"feedback_id {used.feedback_id!r} was already used for different feedback",
        ),
    }


HTTP_CODES = {"NOT_FOUND": 404, "PERMISSION_DENIED": 403, "INVALID_ARGUMENT": 400, "ALREADY_EXISTS": 409}


def test_each_bad_input_gets_its_status_with_the_same_message_on_both_transports(
    feedback_server: InProcessServer,
) -> None:
    for name, (request, status, message) in bad_inputs(feedback_server).items():
        over_grpc = call(feedback_server, request, "grpc")
        over_http = call(feedback_server, request, "http")
        assert (over_grpc.status, over_http.status) == (status, status), name
        assert over_grpc.message.startswith(message), (name, over_grpc.message)
        assert over_http.message == over_grpc.message, name
        assert over_http.http_status == HTTP_CODES[status], name
        assert events_for(feedback_server.config, {request.feedback_id}) == [] or status == "ALREADY_EXISTS", name


def test_a_second_vote_supersedes_the_first_and_comments_never_do(feedback_server: InProcessServer) -> None:
    record = feedback_server.put(response_record(user_id="carol"))
    first, second = response_ids(record)
    up = call(feedback_server, thumb(first, user_id="carol"), "grpc").response
    down = call(feedback_server, thumb(first, user_id="carol", up=False), "http").response
    other_response = call(feedback_server, thumb(second, user_id="carol"), "grpc").response
    assert up is not None and down is not None and other_response is not None
    assert (up.supersedes, down.supersedes, other_response.supersedes) == ("", up.feedback_id, "")
    [event] = [r.event for r in events_for(feedback_server.config, {down.feedback_id})]
    assert event.supersedes == up.feedback_id

    def pair(chosen: str, rejected: str) -> feedback_pb2.SubmitRequest:
        choice = feedback_pb2.Pairwise(chosen_response_id=chosen, rejected_response_id=rejected)
        return feedback_pb2.SubmitRequest(feedback_id=str(uuid.uuid4()), user_id="carol", label=label(pairwise=choice))

    a_over_b = call(feedback_server, pair(first, second), "grpc").response
    b_over_a = call(feedback_server, pair(second, first), "grpc").response
    assert a_over_b is not None and b_over_a is not None and b_over_a.supersedes == a_over_b.feedback_id

    def comment(text: str) -> feedback_pb2.SubmitRequest:
        return feedback_pb2.SubmitRequest(
            feedback_id=str(uuid.uuid4()), user_id="carol", response_id=first, label=label(comment=text)
        )

    comments = [call(feedback_server, comment(text), "grpc").response for text in ("nice", "actually no")]
    assert [c.supersedes for c in comments if c is not None] == ["", ""]


def test_users_who_disagree_with_everyone_are_flagged_on_their_events(feedback_server: InProcessServer) -> None:
    # Four answers, each served (with the same prompt and text) to three honest users who like it.
    # Thresholds for this server: 4 comparable votes, flag below p = 0.1 (0/4 agreements: p = 1/16).
    contrarian = f"contrarian-{uuid.uuid4().hex[:6]}"
    texts = [f"The answer is {n} ({uuid.uuid4().hex[:6]})." for n in range(4)]
    flagged_before = sum(feedback_server.metric_points("trimtab.feedback.flagged_users").values())
    signals = []
    for text in texts:
        for user in ("h1", "h2", "h3", contrarian):
            record = response_record(user_id=user, candidates=1)
            record.candidates[0].reply.text = text
            feedback_server.put(record)
            vote = thumb(response_ids(record)[0], user_id=user, up=not user.startswith("contrarian"))
            assert call(feedback_server, vote, "grpc").status == "OK"
            if user == contrarian:
                signals.append(events_for(feedback_server.config, {vote.feedback_id})[0].event.abuse)
    assert [s.user_flagged for s in signals] == [False, False, False, True]
    assert signals[-1].agreement_score == 0.0 and signals[-1].weight == pytest.approx(0.1)
    assert not signals[0].HasField("agreement_score")  # too few comparable votes to judge yet
    assert sum(feedback_server.metric_points("trimtab.feedback.flagged_users").values()) == flagged_before + 1


def test_submit_spans_link_to_the_judged_responses_trace_and_metrics_count(feedback_server: InProcessServer) -> None:
    record = feedback_server.put(response_record())
    request = thumb(response_ids(record)[0])
    assert call(feedback_server, request, "grpc").status == "OK"
    assert call(feedback_server, thumb("resp_unknown"), "grpc").status == "NOT_FOUND"
    spans = [s for s in feedback_server.spans.get_finished_spans() if s.name == "feedback.Submit"]
    mine = [s for s in spans if s.attributes and s.attributes.get("trimtab.feedback.id") == request.feedback_id]
    assert len(mine) == 1
    assert mine[0].attributes is not None and list(mine[0].attributes["trimtab.version"]) == ["v0"]  # type: ignore[arg-type]
    [link] = mine[0].links
    assert f"{link.context.trace_id:032x}" == record.trace_context["traceparent"].split("-")[1]
    produce = [s for s in feedback_server.spans.get_finished_spans() if s.name == "feedback.produce"]
    assert any(s.parent is not None and s.parent.span_id == mine[0].context.span_id for s in produce)
    accepted = feedback_server.metric_points("trimtab.feedback.accepted")
    assert accepted[(("kind", "thumb"), ("replayed", "false"))] >= 1
    assert feedback_server.metric_points("trimtab.feedback.rejected")[(("reason", "not_found"),)] >= 1
    assert sum(feedback_server.metric_points("trimtab.feedback.produce_latency").values()) >= 1


def test_each_accepted_feedback_is_an_evaluation_result_event_on_the_judged_responses(
    feedback_server: InProcessServer,
) -> None:
    """OpenTelemetry's GenAI `gen_ai.evaluation.result`: one per judged response and score, in the Submit
    span's trace, named by `gen_ai.response.id`; a replay emits nothing new."""
    record = feedback_server.put(response_record())
    chosen, rejected = response_ids(record)
    pair = feedback_pb2.SubmitRequest(
        feedback_id=str(uuid.uuid4()),
        user_id="user-1",
        label=label(pairwise=feedback_pb2.Pairwise(chosen_response_id=chosen, rejected_response_id=rejected)),
    )
    steer = feedback_pb2.SubmitRequest(
        feedback_id=str(uuid.uuid4()),
        user_id="user-1",
        response_id=chosen,
        label=label(attributes=attributes(helpfulness=4, toxicity=0)),
    )
    for request in (pair, steer, pair):  # the second `pair` is a replay
        assert call(feedback_server, request, "grpc").status == "OK"

    mine = {pair.feedback_id, steer.feedback_id}
    events = [
        e.log_record
        for e in feedback_server.events.get_finished_logs()
        if e.log_record.attributes and e.log_record.attributes.get("trimtab.feedback.id") in mine
    ]
    assert {e.event_name for e in events} == {"gen_ai.evaluation.result"}
    seen = sorted(
        (
            str(e.attributes["gen_ai.evaluation.name"]),  # type: ignore[index]
            str(e.attributes["gen_ai.response.id"]),  # type: ignore[index]
            e.attributes.get("gen_ai.evaluation.score.value"),  # type: ignore[union-attr]
            e.attributes.get("gen_ai.evaluation.score.label"),  # type: ignore[union-attr]
        )
        for e in events
    )
    assert seen == sorted(
        [
            ("user.preference", chosen, 1.0, "preferred"),
            ("user.preference", rejected, 0.0, "not_preferred"),
            ("steerlm.helpfulness", chosen, 4.0, None),
            ("steerlm.toxicity", chosen, 0.0, None),
        ]
    )
    submits: dict[object, int] = {}  # each feedback's first Submit span (the replay's comes later)
    for span in feedback_server.spans.get_finished_spans():
        if span.name == "feedback.Submit" and span.attributes and span.attributes.get("trimtab.feedback.id") in mine:
            submits.setdefault(span.attributes["trimtab.feedback.id"], span.context.trace_id)
    assert all(e.trace_id == submits[e.attributes["trimtab.feedback.id"]] for e in events)  # type: ignore[index]
