"""Property: no gRPC message or bytes, and no HTTP body, makes serving answer INTERNAL or a 5xx, and it keeps
serving. On the session's serving process; bounded (a fixed number of examples, few tokens each)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.json_fuzz import json_values
from tests.serving.fuzzing import (
    CHAT,
    COMPLETION,
    FUZZ,
    SERVER_ERRORS,
    TEXT,
    http_call,
    openai_bodies,
    plausible,
    requests,
)
from tests.serving_process import ServingProcess
from trimtab.v1 import admin_pb2, admin_pb2_grpc, common_pb2, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration


def assert_still_serving(channel: grpc.Channel) -> None:
    request = inference_pb2.GenerateRequest(user_id="after-fuzz", sampling=common_pb2.SamplingParams(max_tokens=2))
    request.prompt.chat.messages.add(role="user", content="Hello!")
    assert inference_pb2_grpc.InferenceServiceStub(channel).Generate(request, timeout=60).candidates


def test_generate_never_answers_internal(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    seen: set[str] = set()

    @FUZZ
    @given(request=requests() | plausible(), streamed=st.booleans())
    def generate(request: inference_pb2.GenerateRequest, streamed: bool) -> None:
        try:
            if streamed:
                list(stub.GenerateStream(request, timeout=60))
            else:
                stub.Generate(request, timeout=60)
            seen.add("OK")
        except grpc.RpcError as error:
            assert error.code() not in SERVER_ERRORS, error.details()
            seen.add(error.code().name)

    generate()
    assert {"OK", "INVALID_ARGUMENT"} <= seen, f"the fuzzer only ever got {seen}: it is not reaching generation"
    assert_still_serving(channel)


@pytest.mark.parametrize(
    "method",
    [
        "/trimtab.v1.InferenceService/Generate",
        "/trimtab.v1.InferenceService/GenerateStream",
        "/trimtab.v1.AdminService/GetVersion",
        "/trimtab.v1.AdminService/SetCanary",
    ],
)
def test_bytes_that_are_not_a_message_are_invalid_argument(channel: grpc.Channel, method: str) -> None:
    streaming = method.endswith("Stream")
    call = channel.unary_stream(method) if streaming else channel.unary_unary(method)

    @FUZZ
    @given(body=st.binary(max_size=200))
    def send(body: bytes) -> None:
        try:
            result = call(body, timeout=60)
            if streaming:
                list(result)
        except grpc.RpcError as error:
            assert error.code() not in SERVER_ERRORS, error.details()

    send()
    with pytest.raises(grpc.RpcError) as refused:
        result = call(b"\x0a\xff\xff\xff\xff\x0f", timeout=30)  # a length-delimited field longer than the message
        if streaming:
            list(result)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("request: does not parse as a trimtab.v1.")
    assert_still_serving(channel)


def test_admin_calls_with_made_up_versions_are_refused_not_internal(channel: grpc.Channel) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    before = stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=30).status

    @FUZZ
    @given(version_id=TEXT, share=st.floats(allow_nan=True, allow_infinity=True), page_size=st.integers(0, 2**32 - 1))
    @example(version_id="\x00", share=0.5, page_size=0)  # once an UNKNOWN: a NUL reached the file system
    @example(version_id="../registry", share=0.5, page_size=0)  # a path, not a version id
    def admin(version_id: str, share: float, page_size: int) -> None:
        calls = (
            lambda: stub.GetVersion(admin_pb2.GetVersionRequest(version_id=version_id), timeout=30),
            lambda: stub.SetCanary(admin_pb2.SetCanaryRequest(version_id=version_id, share=share), timeout=30),
            lambda: stub.ListVersions(admin_pb2.ListVersionsRequest(page_size=page_size, page_token=version_id)),
        )
        for call in calls:
            try:
                call()
            except grpc.RpcError as error:
                assert error.code() not in SERVER_ERRORS, error.details()

    admin()
    after = stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=30).status
    assert (after.current_version_id, after.canary_version_id) == (before.current_version_id, before.canary_version_id)


@pytest.mark.parametrize(("path", "base"), [("/chat/completions", CHAT), ("/completions", COMPLETION)])
def test_openai_bodies_never_get_a_5xx(serving: ServingProcess, path: str, base: dict[str, Any]) -> None:
    seen: set[int] = set()

    @FUZZ
    @given(body=openai_bodies(base) | json_values | st.binary(max_size=200))
    def send(body: Any) -> None:
        status, raw = http_call(
            serving.openai_url + path, body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        assert status < 500, raw[:500]
        if status != 200:
            assert set(json.loads(raw)["error"]) >= {"message", "type"}, raw[:500]
        seen.add(status)

    send()
    assert {200, 400} <= seen, f"the fuzzer only ever got {seen}"
    status, _ = http_call(serving.openai_url + path, json.dumps(base).encode())
    assert status == 200
