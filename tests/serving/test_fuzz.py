"""Property: no gRPC message or bytes, and no HTTP body, makes serving answer INTERNAL or a 5xx, and it keeps
serving. On the session's serving process; bounded (a fixed number of examples, few tokens each)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.serving_process import ServingProcess
from trimtab.v1 import admin_pb2, admin_pb2_grpc, common_pb2, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
TEXT = st.text(max_size=60)
DOUBLES = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=0, max_value=2)
# Mostly a few tokens (each example generates); now and then out of range.
MAX_TOKENS = st.none() | st.integers(min_value=0, max_value=3) | st.sampled_from([129, 2**32 - 1])


def prompts() -> st.SearchStrategy[common_pb2.Prompt]:
    role = st.sampled_from(["user", "assistant", "system", "developer", ""]) | TEXT
    messages = st.lists(st.builds(common_pb2.ChatMessage, role=role, content=TEXT), max_size=3)
    return st.one_of(
        st.just(common_pb2.Prompt()),
        st.builds(common_pb2.Prompt, text=TEXT),
        messages.map(lambda chat: common_pb2.Prompt(chat=common_pb2.Chat(messages=chat))),
    )


def sampling(
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    max_tokens: int | None,
    stop: list[str],
    seed: int | None,
) -> common_pb2.SamplingParams:
    params = common_pb2.SamplingParams(stop=stop)
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)):
        if value is not None:
            setattr(params, name, value)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if seed is not None:
        params.seed = seed
    return params


def requests() -> st.SearchStrategy[inference_pb2.GenerateRequest]:
    params = st.builds(
        sampling,
        temperature=DOUBLES,
        top_p=DOUBLES,
        top_k=st.none() | INT32,
        max_tokens=MAX_TOKENS,
        stop=st.lists(TEXT, max_size=5),
        seed=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    )
    steer = st.builds(common_pb2.SteerLMAttributes, helpfulness=st.none() | INT32, toxicity=st.none() | INT32)
    return st.builds(
        inference_pb2.GenerateRequest,
        prompt=prompts(),
        sampling=params,
        n=st.integers(min_value=0, max_value=5) | st.just(2**32 - 1),
        steer_targets=st.none() | steer,
        user_id=TEXT,
        tenant=st.sampled_from(["", "default", "nobody"]) | TEXT,
    )


def plausible() -> st.SearchStrategy[inference_pb2.GenerateRequest]:
    """Requests within every limit, with odd text: these reach generation."""
    params = st.builds(
        sampling,
        temperature=st.floats(min_value=0, max_value=2),
        top_p=st.floats(min_value=0.05, max_value=1),
        top_k=st.none() | st.integers(min_value=1, max_value=50),
        max_tokens=st.integers(min_value=1, max_value=3),
        stop=st.lists(st.text(min_size=1, max_size=10), max_size=3),
        seed=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    )
    chat = st.lists(st.builds(common_pb2.ChatMessage, role=st.just("user"), content=TEXT), min_size=1, max_size=2)
    prompt = chat.map(lambda messages: common_pb2.Prompt(chat=common_pb2.Chat(messages=messages)))
    return st.builds(
        inference_pb2.GenerateRequest,
        prompt=prompt | st.builds(common_pb2.Prompt, text=st.text(min_size=1, max_size=60)),
        sampling=params,
        n=st.integers(min_value=1, max_value=2),
        user_id=TEXT,
    )


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


def post(serving: ServingProcess, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{serving.openai_url}{path}", data=body, method="POST", headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


def edited(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """`base` with up to three fields replaced by any JSON, removed or added."""

    def apply(edits: list[tuple[str, Any]]) -> dict[str, Any]:
        body = dict(base)
        for key, value in edits:
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    return st.lists(st.tuples(st.sampled_from(keys), st.none() | json_values), max_size=3).map(apply)


CHAT = {"model": "trimtab", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
COMPLETION = {"model": "trimtab", "prompt": "Once upon", "max_tokens": 2}
KEYS = [
    *("model", "messages", "prompt", "max_tokens", "n", "temperature", "top_p", "stop", "seed", "stream", "user"),
    *("tenant", "logprobs", "top_logprobs", "steer_targets", "stream_options", "best_of", "echo", "extra"),
]


@pytest.mark.parametrize(("path", "base"), [("/chat/completions", CHAT), ("/completions", COMPLETION)])
def test_openai_bodies_never_get_a_5xx(serving: ServingProcess, path: str, base: dict[str, Any]) -> None:
    seen: set[int] = set()

    @FUZZ
    @given(body=edited(base, KEYS) | json_values | st.binary(max_size=200))
    def send(body: Any) -> None:
        status, raw = post(serving, path, body if isinstance(body, bytes) else json.dumps(body).encode())
        assert status < 500, raw[:500]
        if status != 200:
            assert set(json.loads(raw)["error"]) >= {"message", "type"}, raw[:500]
        seen.add(status)

    send()
    assert {200, 400} <= seen, f"the fuzzer only ever got {seen}"
    status, _ = post(serving, path, json.dumps(base).encode())
    assert status == 200
