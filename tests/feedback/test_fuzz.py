"""Property: no HTTP body and no gRPC message makes the service fail with INTERNAL/5xx, and it keeps serving.

Bounded: a fixed number of examples per property, no shrinking deadline, on the session server.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.feedback.support import InProcessServer, get_json, post_json, response_ids, response_record, thumb
from tests.json_fuzz import edited, json_values
from trimtab.v1 import common_pb2, feedback_pb2

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)

label_fields = st.sampled_from(
    ["chosen_response_id", "rejected_response_id", "tie", "helpfulness", "toxicity", "chosenResponseId"]
)
label_json = st.dictionaries(
    st.sampled_from(["thumb", "pairwise", "rating", "attributes", "correction", "comment", "bogus"]),
    json_values
    | st.sampled_from(["THUMB_UP", "THUMB_DOWN", "THUMB_UNSPECIFIED", "THUMB_SIDEWAYS"])
    | st.dictionaries(label_fields, json_values, max_size=3),
    max_size=2,
)


def request_json(known_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A well-formed SubmitRequest in JSON with up to three fields replaced, removed or added."""
    valid_labels = st.sampled_from([{"thumb": "THUMB_UP"}, {"rating": 4}, {"attributes": {"helpfulness": 3}},
                                    {"comment": "ok"}, {"correction": "8"}])  # fmt: skip
    base = st.fixed_dictionaries(
        {
            "feedback_id": st.uuids().map(str),
            "user_id": st.sampled_from(["fuzz-user", "someone-else"]),
            "response_id": st.sampled_from(known_ids),
            "label": valid_labels,
        }
    )
    keys = st.sampled_from(["feedback_id", "user_id", "response_id", "responseId", "label", "feedbackId", "extra"])
    return edited(base, keys, json_values | label_json)


def known_response_ids(server: InProcessServer) -> list[str]:
    return response_ids(server.put(response_record(user_id="fuzz-user", candidates=3)))


def assert_still_serving(server: InProcessServer) -> None:
    assert get_json(f"{server.url}/healthz") == (200, {"status": "SERVING"})
    record = server.put(response_record(user_id="after-fuzz"))
    assert not server.submit(thumb(response_ids(record)[0], user_id="after-fuzz")).replayed


def test_http_json_bodies_never_get_a_5xx(feedback_server: InProcessServer) -> None:
    ids = known_response_ids(feedback_server)
    seen: set[int] = set()

    @FUZZ
    @given(body=request_json(ids) | json_values)
    def post(body: Any) -> None:
        status, payload, _ = feedback_server.post(json.dumps(body).encode())
        assert status < 500, payload
        assert status == 200 or set(payload["error"]) == {"code", "status", "message"}
        seen.add(status)

    post()
    assert {200, 400} <= seen, f"the fuzzer only ever got {seen}: it is not reaching validation"
    assert_still_serving(feedback_server)


def test_http_batch_bodies_never_get_a_5xx(feedback_server: InProcessServer) -> None:
    ids = known_response_ids(feedback_server)
    seen: set[int] = set()

    @FUZZ
    @given(body=st.fixed_dictionaries({"items": st.lists(request_json(ids) | json_values, max_size=4)}) | json_values)
    def post(body: Any) -> None:
        status, payload, _ = post_json(f"{feedback_server.url}/v1/feedback:batch", json.dumps(body).encode())
        assert status < 500, payload
        if status == 200:
            for result in payload["results"]:
                refused = result.get("refused")
                assert refused is None or refused["http_status"] < 500, refused
        seen.add(status)

    post()
    assert {200, 400} <= seen, f"the fuzzer only ever got {seen}"
    assert_still_serving(feedback_server)


def test_http_raw_bodies_never_get_a_5xx(feedback_server: InProcessServer) -> None:
    @FUZZ
    @given(body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
    def post(body: bytes) -> None:
        status, payload, _ = feedback_server.post(body)
        assert 400 <= status < 500, payload

    post()
    status, payload, _ = feedback_server.post(b"{" * 100_000)  # deep nesting
    assert status == 400, payload
    status, payload, _ = feedback_server.post(b" " * (feedback_server.config.feedback.max_request_bytes + 1))
    assert (status, payload["error"]["status"]) == (413, "INVALID_ARGUMENT")
    assert_still_serving(feedback_server)


def labels() -> st.SearchStrategy[feedback_pb2.FeedbackLabel]:
    text = st.text(max_size=60, alphabet=st.characters(codec="utf-8"))
    pair = st.builds(feedback_pb2.Pairwise, chosen_response_id=text, rejected_response_id=text, tie=st.booleans())
    attributes = st.builds(
        common_pb2.SteerLMAttributes, **{name: st.none() | INT32 for name in ("helpfulness", "toxicity", "coherence")}
    )
    return st.one_of(
        st.just(feedback_pb2.FeedbackLabel()),
        st.builds(feedback_pb2.FeedbackLabel, thumb=st.integers(min_value=-5, max_value=5)),
        st.builds(feedback_pb2.FeedbackLabel, pairwise=pair),
        st.builds(feedback_pb2.FeedbackLabel, rating=INT32),
        st.builds(feedback_pb2.FeedbackLabel, attributes=attributes),
        st.builds(feedback_pb2.FeedbackLabel, correction=text),
        st.builds(feedback_pb2.FeedbackLabel, comment=text),
    )


def test_grpc_messages_never_get_internal(feedback_server: InProcessServer) -> None:
    ids = known_response_ids(feedback_server)
    text = st.text(max_size=200, alphabet=st.characters(codec="utf-8"))
    seen: set[str] = set()

    @FUZZ
    @given(
        feedback_id=st.uuids().map(str) | text,
        user_id=st.just("fuzz-user") | text,
        response_id=st.sampled_from([*ids, "resp_missing"]) | text,
        label=labels(),
    )
    # A well-formed thumb on a response that was never recorded: random draws reached NOT_FOUND in most
    # runs but not all, so the check below would have been flaky without this one fixed case.
    @example(
        feedback_id="9d0f3e2a-5b1c-4e7a-8f6d-2c4b1a0e9f37",
        user_id="fuzz-user",
        response_id="resp_missing",
        label=feedback_pb2.FeedbackLabel(thumb=1),
    )
    def submit(feedback_id: str, user_id: str, response_id: str, label: feedback_pb2.FeedbackLabel) -> None:
        request = feedback_pb2.SubmitRequest(
            feedback_id=feedback_id, user_id=user_id, response_id=response_id, label=label
        )
        try:
            feedback_server.submit(request)
            seen.add("OK")
        except grpc.RpcError as error:
            assert error.code() not in SERVER_ERRORS, error.details()
            seen.add(error.code().name)

    submit()
    assert {"INVALID_ARGUMENT", "NOT_FOUND"} <= seen, f"the fuzzer only ever got {seen}"
    assert_still_serving(feedback_server)


def test_grpc_bytes_that_are_not_a_message_are_invalid_argument(feedback_server: InProcessServer) -> None:
    raw_submit = feedback_server.channel.unary_unary("/trimtab.v1.FeedbackService/Submit")

    @FUZZ
    @given(body=st.binary(max_size=300))
    def submit(body: bytes) -> None:
        try:
            raw_submit(body, timeout=10)
        except grpc.RpcError as error:
            assert error.code() not in SERVER_ERRORS, error.details()

    submit()
    with pytest.raises(grpc.RpcError) as refused:
        raw_submit(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # a length-delimited field longer than the message
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "request: does not parse as a trimtab.v1.SubmitRequest message"
    assert_still_serving(feedback_server)


def test_grpc_batches_never_get_internal(feedback_server: InProcessServer) -> None:
    ids = known_response_ids(feedback_server)
    raw_batch = feedback_server.channel.unary_unary("/trimtab.v1.FeedbackService/SubmitBatch")
    item = st.builds(
        feedback_pb2.SubmitRequest,
        feedback_id=st.uuids().map(str) | st.text(max_size=40),
        user_id=st.just("fuzz-user") | st.text(max_size=20),
        response_id=st.sampled_from(ids) | st.text(max_size=20),
        label=labels(),
    )

    @FUZZ
    @given(items=st.lists(item, max_size=5), raw=st.none() | st.binary(max_size=200))
    def submit(items: list[feedback_pb2.SubmitRequest], raw: bytes | None) -> None:
        body = raw if raw is not None else feedback_pb2.SubmitBatchRequest(items=items).SerializeToString()
        try:
            response = feedback_pb2.SubmitBatchResponse.FromString(raw_batch(body, timeout=15))
        except grpc.RpcError as error:
            assert error.code() not in SERVER_ERRORS, error.details()
            return
        statuses = {result.refused.status for result in response.results if result.HasField("refused")}
        assert not statuses & {code.name for code in SERVER_ERRORS}, statuses

    submit()
    assert_still_serving(feedback_server)


def test_unique_ids_keep_fuzzed_submissions_apart() -> None:
    # Guard for the properties above: fuzzed feedback_ids that collide with real ones would be replays,
    # not new submissions; uuid4 text never collides with the fixed ids the other tests use.
    assert len({str(uuid.uuid4()) for _ in range(1000)}) == 1000
