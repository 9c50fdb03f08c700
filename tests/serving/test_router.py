"""`trimtab route`: each user of a full-weight canary's share goes to the canary replicas, everyone else
(and every adapter canary's user) to the current ones, over gRPC and the OpenAI API, with the replicas'
answers, errors and streams passed through.

The current side is the session's real serving process. The canary side is a stand-in that answers with
its own marker: two vLLM engines do not run side by side on our 2-core machines, so a second real replica
is not started here. The router's forwarding is one code path for both sides (the real test above covers
it); what a canary replica serves is `wanted_versions` (unit-tested below) on the swap path that
tests/serving/test_hot_swap.py runs for real."""

from __future__ import annotations

import contextlib
import json
import os
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import grpc
import openai
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from serving.router.split import Split
from serving.routing import user_bucket
from serving.versions import wanted_versions
from tests.conftest import REPO, free_port
from tests.json_fuzz import json_values
from tests.learner.tiny import make_tiny_model
from tests.serving.fuzzing import (
    CHAT,
    COMPLETION,
    FUZZ,
    SERVER_ERRORS,
    http_call,
    openai_bodies,
    plausible,
    requests,
)
from tests.serving.test_inference import chat_request
from tests.serving_process import ServingProcess
from trimtab.health import wait_serving
from trimtab.registry import Pointers, Registry
from trimtab.v1 import common_pb2, inference_pb2, inference_pb2_grpc

CANARY_MARK = "ver_stand_in_canary_replica"
CALLER_KEY = f"sk-router-test-{uuid.uuid4().hex}"  # what clients present; the router passes it on, never logs it


def test_a_full_weight_canary_splits_users_by_the_replicas_hash_and_anything_else_goes_to_current(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry")
    full = registry.publish(make_tiny_model(tmp_path / "full"), parent=None, algorithm="dpo").id
    split = Split()
    assert split.side("anyone") == "current"  # no canary
    split.update(Pointers(current=full, canary=full, canary_share=0.3), registry)
    users = [f"user{i}" for i in range(200)]
    assert [split.side(u) for u in users] == ["canary" if user_bucket(u, full) < 0.3 else "current" for u in users]
    assert 40 < sum(split.side(u) == "canary" for u in users) < 80
    assert split.side(users[0], pinned=full) == "canary" and split.side(users[0], pinned="ver_other") == "current"
    split.update(Pointers(current=full, canary="ver_not_in_the_registry", canary_share=1.0), registry)
    assert split.side("anyone") == "current"  # unknown (or a LoRA adapter): the current replicas handle it


def test_each_replica_role_serves_what_the_router_sends_it() -> None:
    full = {"ver_full"}.__contains__
    with_full = Pointers(current="ver_a", canary="ver_full", canary_share=0.5)
    with_adapter = Pointers(current="ver_a", canary="ver_lora", canary_share=0.5)
    none = Pointers(current="ver_a")
    assert wanted_versions(with_full, "all", full) == ("ver_a", "ver_full")  # then refused, saying why
    assert wanted_versions(with_full, "current", full) == ("ver_a", None)
    assert wanted_versions(with_full, "canary", full) == ("ver_full", None)  # its own base weights
    assert wanted_versions(with_adapter, "current", full) == ("ver_a", "ver_lora")  # beside current
    assert wanted_versions(with_adapter, "canary", full) == ("ver_a", None)
    assert wanted_versions(none, "canary", full) == ("ver_a", None)


# The canary side: answers every call with CANARY_MARK.


class StandInInference(inference_pb2_grpc.InferenceServiceServicer):
    def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext) -> object:
        return inference_pb2.GenerateResponse(request_id="req_canary", candidates=[self._candidate(request)])

    def GenerateStream(self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext) -> Iterator[object]:
        yield inference_pb2.GenerateStreamResponse(request_id="req_canary", text_delta="from the canary")
        yield inference_pb2.GenerateStreamResponse(request_id="req_canary", final=self._candidate(request))

    @staticmethod
    def _candidate(request: inference_pb2.GenerateRequest) -> inference_pb2.Candidate:
        return inference_pb2.Candidate(text=f"from the canary for {request.user_id}", model_version=CANARY_MARK)


class StandInHttp(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        reply = {
            "id": "chatcmpl-canary", "object": "chat.completion", "created": 0, "model": CANARY_MARK,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"canary for {body.get('user')}"},
                         "finish_reason": "stop"}],
        }  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Routed:
    channel: grpc.Channel
    grpc: inference_pb2_grpc.InferenceServiceStub
    openai: openai.OpenAI
    pointers: redis.Redis
    key: str  # the router's pointers hash
    canary: str  # a full-weight version in the router's registry
    stand_ins: tuple[grpc.Server, ThreadingHTTPServer]


@pytest.fixture(scope="module")
def routed(serving: ServingProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    """`trimtab route` in front of the session's serving process (current) and the stand-in (canary), on
    pointers of its own naming a full-weight canary for half the users."""
    workdir = tmp_path_factory.mktemp("router")
    canary_grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(StandInInference(), canary_grpc)
    canary_port = canary_grpc.add_insecure_port("127.0.0.1:0")
    canary_grpc.start()
    canary_http = ThreadingHTTPServer(("127.0.0.1", 0), StandInHttp)
    Thread(target=canary_http.serve_forever, daemon=True).start()
    registry = Registry(workdir / "registry")
    canary = registry.publish(make_tiny_model(workdir / "full"), parent=None, algorithm="dpo").id
    prefix = f"{serving.config.redis.key_prefix}router-{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(serving.config.redis.url)
    key = f"{prefix}registry:pointers"
    client.hset(key, mapping={"current": "ver_whatever", "canary": canary, "canary_share": "0.5"})
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")} | {
        "TRIMTAB_REDIS__URL": serving.config.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": prefix,
        "TRIMTAB_REGISTRY__ROOT": str(registry.root),
        "TRIMTAB_SERVING__VERSION_POLL_S": "0.5",
        "TRIMTAB_SERVING__ROUTER__PORT": str(port),
        "TRIMTAB_SERVING__ROUTER__HTTP_PORT": str(http_port),
        "TRIMTAB_SERVING__ROUTER__CURRENT": serving.address,
        "TRIMTAB_SERVING__ROUTER__CURRENT_HTTP": serving.openai_url.removesuffix("/v1"),
        "TRIMTAB_SERVING__ROUTER__CANARY": f"127.0.0.1:{canary_port}",
        "TRIMTAB_SERVING__ROUTER__CANARY_HTTP": f"http://127.0.0.1:{canary_http.server_port}",
    }
    log = workdir / "router.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "trimtab.app.cli", "route"],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_serving(f"127.0.0.1:{port}", process, timeout_s=60), log.read_text()[-3000:]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Routed(
                channel=channel,
                grpc=inference_pb2_grpc.InferenceServiceStub(channel),
                openai=openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key=CALLER_KEY, max_retries=0),
                pointers=client,
                key=key,
                canary=canary,
                stand_ins=(canary_grpc, canary_http),
            )
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert CALLER_KEY not in log.read_text()
        canary_grpc.stop(grace=None)
        canary_http.shutdown()
        client.delete(key)


def on_canary(user: str, canary: str) -> bool:
    return user_bucket(user, canary) < 0.5


def answered_by(routed: Routed, user: str) -> str:
    """The version that answered a short request of `user` through the router."""
    reply = routed.grpc.Generate(
        chat_request(user_id=user, sampling=common_pb2.SamplingParams(max_tokens=4)), timeout=60
    )
    return str(reply.candidates[0].model_version)


def test_grpc_calls_go_to_the_side_of_their_user_and_come_back_as_the_replica_sent_them(routed: Routed) -> None:
    users = [f"router-user-{i}" for i in range(12)]
    assert {on_canary(u, routed.canary) for u in users} == {True, False}  # both sides are exercised
    for user in users:
        reply = routed.grpc.Generate(
            chat_request(user_id=user, sampling=common_pb2.SamplingParams(max_tokens=8)), timeout=60
        )
        (candidate,) = reply.candidates
        if on_canary(user, routed.canary):
            assert (candidate.model_version, candidate.text) == (CANARY_MARK, f"from the canary for {user}")
        else:  # the real replica: its own version, ids and token counts
            assert candidate.model_version.startswith("ver_") and candidate.model_version != CANARY_MARK
            assert candidate.response_id.startswith("resp_") and candidate.completion_tokens > 0
    for user in users[:4]:
        chunks = list(
            routed.grpc.GenerateStream(
                chat_request(user_id=user, sampling=common_pb2.SamplingParams(max_tokens=8)), timeout=60
            )
        )
        final = chunks[-1].final
        assert (final.model_version == CANARY_MARK) is on_canary(user, routed.canary)
        assert "".join(c.text_delta for c in chunks) == final.text or final.model_version == CANARY_MARK


def test_a_replicas_refusal_reaches_the_client_with_its_code_and_reason(
    routed: Routed, serving: ServingProcess
) -> None:
    user = next(f"refused-{i}" for i in range(100) if not on_canary(f"refused-{i}", routed.canary))
    too_many = serving.config.serving.max_tokens_limit + 1
    with pytest.raises(grpc.RpcError) as refused:
        routed.grpc.Generate(
            chat_request(user_id=user, sampling=common_pb2.SamplingParams(max_tokens=too_many)), timeout=60
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in str(refused.value.details())
    calls = (("Generate", routed.channel.unary_unary), ("GenerateStream", routed.channel.unary_stream))
    for method, call in calls:  # bytes that are not a request: the router says so itself
        with pytest.raises(grpc.RpcError) as garbage:
            result = call(f"/trimtab.v1.InferenceService/{method}")(b"\x0a\xff\xff\xff\xff\x0f", timeout=30)
            if method == "GenerateStream":
                list(result)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert garbage.value.details() == "request: does not parse as a trimtab.v1.GenerateRequest message"
    with pytest.raises(openai.BadRequestError) as bad:
        routed.openai.chat.completions.create(
            model="trimtab", messages=[{"role": "user", "content": "hi"}], user=user, max_tokens=too_many
        )
    assert bad.value.body is not None and "max_tokens" in json.dumps(bad.value.body)


def test_openai_calls_split_by_user_or_pinned_version_and_other_paths_go_to_current(routed: Routed) -> None:
    for user in [f"http-user-{i}" for i in range(8)]:
        answer = routed.openai.chat.completions.create(
            model="trimtab", messages=[{"role": "user", "content": "What is 3 plus 5?"}], user=user, max_tokens=8
        )
        assert (answer.model == CANARY_MARK) is on_canary(user, routed.canary)
    user = next(f"pin-{i}" for i in range(100) if not on_canary(f"pin-{i}", routed.canary))
    pinned = routed.openai.chat.completions.create(
        model=routed.canary, messages=[{"role": "user", "content": "hi"}], user=user, max_tokens=8
    )
    assert pinned.model == CANARY_MARK  # the version it names is served by the canary replicas
    streamed = routed.openai.chat.completions.create(
        model="trimtab", messages=[{"role": "user", "content": "hi"}], user=user, max_tokens=8, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)  # SSE through
    assert next(m.id for m in routed.openai.models.list()) == "trimtab"  # from the current replicas


@contextlib.contextmanager
def without_canary(routed: Routed) -> Iterator[None]:
    """The router's canary pointers cleared for the block, once the router has read them so."""
    canary = routed.canary
    routed.pointers.hdel(routed.key, "canary", "canary_share")
    try:
        deadline = time.monotonic() + 10
        user = next(f"back-{i}" for i in range(100) if on_canary(f"back-{i}", canary))
        while answered_by(routed, user) == CANARY_MARK:  # until the router has read the cleared pointer
            assert time.monotonic() < deadline, "the canary's users still go to the canary replicas"
            time.sleep(0.2)
        yield
    finally:
        routed.pointers.hset(routed.key, mapping={"canary": canary, "canary_share": "0.5"})


def test_a_body_over_the_routers_limit_is_a_413_in_openais_shape(routed: Routed) -> None:
    base_url = str(routed.openai.base_url).rstrip("/")
    status, raw = http_call(base_url + "/chat/completions", b"x" * (2 << 20))  # over max_request_bytes (1 MiB)
    error = json.loads(raw)["error"]
    assert (status, error["type"], error["code"]) == (413, "invalid_request_error", "request_entity_too_large")


def test_without_a_full_weight_canary_every_user_goes_to_current(routed: Routed) -> None:
    with without_canary(routed):
        assert {answered_by(routed, f"anyone-{i}") for i in range(8)}.isdisjoint({CANARY_MARK})


PATHS = st.sampled_from(["/chat/completions", "/completions", "/models", "/models/trimtab", ""]) | st.text(
    alphabet=string.ascii_letters + string.digits + "-._~%/?=&", max_size=30
).filter(lambda path: "feedback" not in path).map(lambda path: "/" + path)  # POST /v1/feedback: tests/feedback


def test_fuzzed_calls_through_the_router_get_no_server_error_and_it_keeps_routing(routed: Routed) -> None:
    """Messages, bytes and OpenAI bodies (tests/serving/fuzzing.py) and any path with any method, through the
    router to the real replica (the stand-in canary is out of the way): never INTERNAL/UNKNOWN or a 5xx."""
    base_url = str(routed.openai.base_url).rstrip("/")
    seen: set[str] = set()
    with without_canary(routed):

        @FUZZ
        @given(request=requests() | plausible(), streamed=st.booleans(), raw=st.binary(max_size=100))
        def over_grpc(request: inference_pb2.GenerateRequest, streamed: bool, raw: bytes) -> None:
            method = "/trimtab.v1.InferenceService/" + ("GenerateStream" if streamed else "Generate")
            call = routed.channel.unary_stream(method) if streamed else routed.channel.unary_unary(method)
            for body in (request.SerializeToString(), raw):
                try:
                    result = call(body, timeout=60, metadata=(("authorization", f"Bearer {CALLER_KEY}"),))
                    if streamed:
                        list(result)
                    seen.add("OK")
                except grpc.RpcError as error:
                    assert error.code() not in SERVER_ERRORS, error.details()
                    seen.add(error.code().name)

        @FUZZ
        @given(
            call=st.tuples(st.sampled_from(["/chat/completions", "/completions"]), st.just("POST"))
            | st.tuples(PATHS, st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])),
            body=openai_bodies(CHAT) | openai_bodies(COMPLETION) | json_values | st.binary(max_size=100),
        )
        def over_http(call: tuple[str, str], body: Any) -> None:
            path, method = call
            status, raw = http_call(
                base_url + path, body if isinstance(body, bytes) else json.dumps(body).encode(), method
            )
            assert status < 500, (method, path, raw[:300])
            seen.add(str(status))

        over_grpc()
        over_http()
    assert {"OK", "INVALID_ARGUMENT", "200", "400", "404"} <= seen, f"the fuzzers only ever got {seen}"
    assert answered_by(routed, "after-the-fuzz").startswith("ver_")


def test_when_the_canary_replicas_are_gone_their_users_hear_so_and_the_others_are_served(routed: Routed) -> None:
    lost = next(f"lost-{i}" for i in range(100) if on_canary(f"lost-{i}", routed.canary))
    kept = next(f"kept-{i}" for i in range(100) if not on_canary(f"kept-{i}", routed.canary))
    sampling = common_pb2.SamplingParams(max_tokens=4)
    deadline = time.monotonic() + 10  # the router follows the pointers the test before restored
    while answered_by(routed, lost) != CANARY_MARK:
        assert time.monotonic() < deadline, "the router never sent the canary's users to the canary replicas again"
        time.sleep(0.2)
    stand_in_grpc, stand_in_http = routed.stand_ins
    stand_in_grpc.stop(grace=None)
    stand_in_http.shutdown()
    stand_in_http.server_close()
    with pytest.raises(grpc.RpcError) as unavailable:
        routed.grpc.Generate(chat_request(user_id=lost, sampling=sampling), timeout=30)
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(openai.InternalServerError) as bad_gateway:
        routed.openai.chat.completions.create(model="trimtab", messages=[{"role": "user", "content": "hi"}], user=lost)
    assert bad_gateway.value.status_code == 502 and "upstream_unavailable" in json.dumps(bad_gateway.value.body)
    assert routed.grpc.Generate(chat_request(user_id=kept, sampling=sampling), timeout=60).candidates
