"""SubmitBatch: each item answered as Submit would answer it alone, over gRPC and HTTP, written exactly once."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import json_format

from tests.feedback.support import (
    TRANSPORTS,
    InProcessServer,
    Outcome,
    call,
    events_for,
    label,
    post_json,
    response_id_minted_at,
    response_ids,
    response_record,
    thumb,
)
from trimtab.v1 import feedback_pb2

pytestmark = pytest.mark.integration

# Each case: a fresh record in the log, and one submission about it (after whatever the case did first).
Case = Callable[[InProcessServer], feedback_pb2.SubmitRequest]


def accepted(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    return thumb(response_ids(server.put(response_record()))[0])


def retried(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    request = accepted(server)
    server.submit(request)
    return request


def reused_id(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    first = retried(server)
    return thumb(first.response_id, up=False, feedback_id=first.feedback_id)


def pairwise(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    chosen, rejected = response_ids(server.put(response_record()))
    pair = feedback_pb2.Pairwise(chosen_response_id=chosen, rejected_response_id=rejected)
    return feedback_pb2.SubmitRequest(feedback_id=str(uuid.uuid4()), user_id="user-1", label=label(pairwise=pair))


def out_of_range(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    request = accepted(server)
    request.label.rating = 9
    return request


def expired(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    return thumb(response_id_minted_at(time.time() - 3600))  # long gone: NOT_FOUND at once


def not_served_to_the_user(server: InProcessServer) -> feedback_pb2.SubmitRequest:
    return thumb(response_ids(server.put(response_record()))[0], user_id="someone-else")


CASES: dict[str, Case] = {
    "accepted": accepted,
    "a retry": retried,
    "a reused feedback_id": reused_id,
    "pairwise": pairwise,
    "out of range": out_of_range,
    "expired": expired,
    "not served to the user": not_served_to_the_user,
}


def batch(server: InProcessServer, items: list[feedback_pb2.SubmitRequest], transport: str) -> list[Outcome]:
    """SubmitBatch over `transport`, each result described as `call` describes a Submit's outcome."""
    request = feedback_pb2.SubmitBatchRequest(items=items)
    if transport == "grpc":
        response = server.stub.SubmitBatch(request, timeout=15)
    else:
        status, body, _ = post_json(f"{server.url}/v1/feedback:batch", json_format.MessageToDict(request))
        assert status == 200, body
        response = json_format.ParseDict(body, feedback_pb2.SubmitBatchResponse())
    assert len(response.results) == len(items)
    return [_outcome(result) for result in response.results]


def _outcome(result: feedback_pb2.SubmitResult) -> Outcome:
    if result.HasField("accepted"):
        return Outcome("OK", response=result.accepted)
    refused = result.refused
    retry_after = str(refused.retry_after_s) if refused.retry_after_s else None
    return Outcome(refused.status, refused.message, retry_after=retry_after, http_status=refused.http_status)


def comparable(outcome: Outcome) -> tuple[str, str, bool | None]:
    """What must match between a Submit and a batch item: the status, the message (ids masked), replayed."""
    message = " ".join("<id>" if "-" in word or "_" in word else word for word in outcome.message.split())
    return outcome.status, message, outcome.response.replayed if outcome.response else None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_item_gets_what_submit_gives_it_alone(feedback_server: InProcessServer, transport: str) -> None:
    alone = [call(feedback_server, case(feedback_server), transport) for case in CASES.values()]
    together = batch(feedback_server, [case(feedback_server) for case in CASES.values()], transport)
    for name, one, item in zip(CASES, alone, together, strict=True):
        assert comparable(item) == comparable(one), name
    statuses = [outcome.status for outcome in together]
    assert statuses == ["OK", "OK", "ALREADY_EXISTS", "OK", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED"]
    refused = [outcome for outcome in together if outcome.status != "OK"]
    assert [outcome.http_status for outcome in refused] == [409, 400, 404, 403]


def test_a_fresh_response_not_logged_yet_is_unavailable_with_retry_after(feedback_server: InProcessServer) -> None:
    fresh = thumb(response_id_minted_at(time.time()))
    (outcome,) = batch(feedback_server, [fresh], "grpc")
    assert (outcome.status, outcome.http_status, outcome.retry_after) == ("UNAVAILABLE", 503, "1")
    assert "no record yet" in outcome.message


def test_accepted_items_are_on_the_topic_exactly_once_and_retries_replay(feedback_server: InProcessServer) -> None:
    records = [feedback_server.put(response_record(user_id=f"batch-user-{i % 5}")) for i in range(20)]
    items = [thumb(response_ids(r)[0], user_id=r.user_id) for r in records]
    first = batch(feedback_server, items, "grpc")
    again = batch(feedback_server, items, "http")
    assert {o.status for o in first} == {"OK"} and not any(o.response and o.response.replayed for o in first)
    assert all(o.response and o.response.replayed for o in again)
    assert [o.response.event_id for o in again if o.response] == [o.response.event_id for o in first if o.response]
    on_topic = Counter(r.event.feedback_id for r in events_for(feedback_server.config, {i.feedback_id for i in items}))
    assert on_topic == Counter({item.feedback_id: 1 for item in items})


def test_two_votes_in_one_batch_link_one_to_the_other(feedback_server: InProcessServer) -> None:
    response_id = response_ids(feedback_server.put(response_record()))[0]
    up, down = thumb(response_id, up=True), thumb(response_id, up=False)
    outcomes = batch(feedback_server, [up, down], "grpc")
    links = {o.response.feedback_id: o.response.supersedes for o in outcomes if o.response}
    # Admitted concurrently: either may be the later one, but exactly one names the other.
    assert links in (
        {up.feedback_id: "", down.feedback_id: up.feedback_id},
        {up.feedback_id: down.feedback_id, down.feedback_id: ""},
    )


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        (0, "items: at least one submission is required"),
        (257, "items: at most 256 submissions per call (feedback.max_batch_items), got 257"),
        (-1, "items[1].feedback_id: the same as items[0]'s"),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_call_that_cannot_be_read_is_refused_whole(
    feedback_server: InProcessServer, transport: str, items: int, problem: str
) -> None:
    response_id = response_ids(feedback_server.put(response_record()))[0]
    requests = [thumb(response_id, feedback_id="twice")] * 2 if items < 0 else [thumb(response_id)] * items
    request = feedback_pb2.SubmitBatchRequest(items=requests)
    if transport == "grpc":
        with pytest.raises(grpc.RpcError) as refused:
            feedback_server.stub.SubmitBatch(request, timeout=15)
        assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, problem)
    else:
        status, body, _ = post_json(f"{feedback_server.url}/v1/feedback:batch", json_format.MessageToDict(request))
        assert (status, body["error"]["message"]) == (400, problem)
    assert not events_for(feedback_server.config, {"twice"})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_items_without_a_feedback_id_are_each_refused_alone(feedback_server: InProcessServer, transport: str) -> None:
    response_id = response_ids(feedback_server.put(response_record()))[0]
    items = [thumb(response_id), thumb(response_id)]
    for item in items:
        item.ClearField("feedback_id")
    outcomes = batch(feedback_server, items, transport)
    assert [(o.status, o.message) for o in outcomes] == [("INVALID_ARGUMENT", "feedback_id: required")] * 2


def test_a_grpc_message_over_the_size_limit_is_grpcs_own_refusal_without_a_retry_after(
    feedback_server: InProcessServer,
) -> None:
    channel_call = feedback_server.channel.unary_unary("/trimtab.v1.FeedbackService/SubmitBatch")
    with pytest.raises(grpc.RpcError) as refused:
        channel_call(b"\0" * (feedback_server.config.feedback.max_request_bytes + 1), timeout=15)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in refused.value.details()
    assert "retry-after" not in dict(refused.value.trailing_metadata() or ())  # not a rate limit: do not retry


def test_a_body_that_does_not_parse_is_invalid(feedback_server: InProcessServer) -> None:
    status, body, _ = post_json(f"{feedback_server.url}/v1/feedback:batch", {"items": "not a list"})
    assert status == 400 and body["error"]["message"].startswith("request body:")
    channel_call = feedback_server.channel.unary_unary("/trimtab.v1.FeedbackService/SubmitBatch")
    with pytest.raises(grpc.RpcError) as refused:
        channel_call(b"\xff\xff", timeout=15)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SubmitBatchRequest" in refused.value.details()
