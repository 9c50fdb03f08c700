"""Rate limits (per user, per API key) and the training cap, on a server with tight limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.feedback.support import (
    InProcessServer,
    call,
    events_for,
    fresh_topic,
    label,
    response_ids,
    response_record,
    service_config,
    thumb,
)
from trimtab.config import TrimtabConfig
from trimtab.v1 import feedback_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def limited(stack: TrimtabConfig) -> Iterator[InProcessServer]:
    config = service_config(
        stack,
        fresh_topic(),
        user_rate={"max_requests": 3, "window_s": 60},
        key_rate={"max_requests": 30, "window_s": 60},
        training_cap={"max_events": 1, "window_s": 3600},
    )
    server = InProcessServer(config)
    yield server
    server.close()


def test_a_user_over_their_rate_is_resource_exhausted_with_retry_after(limited: InProcessServer) -> None:
    user = f"eager-{uuid.uuid4().hex[:6]}"
    record = limited.put(response_record(user_id=user, candidates=4))
    votes = [thumb(response_id, user_id=user) for response_id in response_ids(record)]
    assert [call(limited, vote, "grpc").status for vote in votes[:3]] == ["OK"] * 3
    over_grpc, over_http = call(limited, votes[3], "grpc"), call(limited, votes[3], "http")
    assert (over_grpc.status, over_http.status, over_http.http_status) == ("RESOURCE_EXHAUSTED",) * 2 + (429,)
    assert over_grpc.message.startswith("too many submissions for this user: retry after")
    assert over_http.message == over_grpc.message
    assert over_grpc.retry_after is not None and 55 <= int(over_grpc.retry_after) <= 60
    assert over_http.retry_after == over_grpc.retry_after
    assert events_for(limited.config, {votes[3].feedback_id}) == []
    # Retries of accepted submissions are not new feedback: the user's limit does not apply to them.
    assert call(limited, votes[0], "http").response.replayed  # type: ignore[union-attr]
    # Another user is not affected.
    other = limited.put(response_record(user_id="someone-else"))
    assert call(limited, thumb(response_ids(other)[0], user_id="someone-else"), "grpc").status == "OK"
    assert limited.metric_points("trimtab.feedback.rate_limited")[(("scope", "user"),)] >= 2


def test_feedback_beyond_the_training_cap_is_accepted_with_weight_zero(limited: InProcessServer) -> None:
    user = f"prolific-{uuid.uuid4().hex[:6]}"
    first, second = response_ids(limited.put(response_record(user_id=user)))
    comment = feedback_pb2.SubmitRequest(
        feedback_id=str(uuid.uuid4()), user_id=user, response_id=first, label=label(comment="not trained on")
    )
    # The cap here is 1 trainable event per hour; comments are not trainable and do not count.
    submissions = [thumb(first, user_id=user), comment, thumb(second, user_id=user)]
    assert [call(limited, s, "grpc").status for s in submissions] == ["OK"] * 3
    abuse = {
        r.event.feedback_id: r.event.abuse for r in events_for(limited.config, {s.feedback_id for s in submissions})
    }
    assert [abuse[s.feedback_id].over_training_cap for s in submissions] == [False, False, True]
    assert [abuse[s.feedback_id].HasField("weight") for s in submissions] == [False, False, True]
    assert abuse[submissions[2].feedback_id].weight == 0.0


def test_an_api_key_over_its_rate_is_resource_exhausted(stack: TrimtabConfig) -> None:
    config = service_config(stack, fresh_topic(), key_rate={"max_requests": 2, "window_s": 30})
    server = InProcessServer(config)
    try:
        record = server.put(response_record())
        vote = thumb(response_ids(record)[0])
        assert call(server, vote, "grpc").status == "OK"
        assert call(server, vote, "grpc").status == "OK"  # a replay still counts against the key
        refused = call(server, vote, "http")
        assert (refused.status, refused.http_status) == ("RESOURCE_EXHAUSTED", 429)
        assert refused.message.startswith("too many submissions for this API key: retry after")
        assert refused.retry_after is not None and int(refused.retry_after) <= 30
    finally:
        server.close()
