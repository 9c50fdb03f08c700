"""A second serving process, configured to be hard to please: mutual TLS on every port (gRPC, the OpenAI
API, /metrics) with certificates the test makes, API keys on (an inference key and an operator's admin
key), a tiny in-flight limit, and a Redis of its own that we stop and restart. Clients without a
certificate from the deployment's CA get nothing; generation never waits on the response log; records
written while Redis is down land when it comes back; SIGTERM lets in-flight streams finish; no key is
ever written to the log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest

from tests.conftest import config_with, free_port
from tests.serving_process import (
    ServingProcess,
    seeded_load,
    serving_env,
    start_serving,
    stop_serving,
    warn_if_stuck,
)
from tests.tls import Certificates, Pem, make_certificates
from trimtab.app.stack import down, up
from trimtab.auth import hash_key
from trimtab.config import TrimtabConfig
from trimtab.config.tls import TlsConfig
from trimtab.records import ResponseStore, redis_client
from trimtab.tls import aio_grpc_channel, grpc_channel
from trimtab.v1 import admin_pb2, admin_pb2_grpc, common_pb2, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration
KEY = "test-key-123"
ADMIN_KEY = "operator-key-456"
UNKNOWN_KEY = "not-a-configured-key-789"
ACME_KEY = "acme-key-246"


@pytest.fixture(scope="module")
def own_redis(stack: TrimtabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrimtabConfig]:
    """A redis-server only this module uses (started by `trimtab up`), beside the session broker."""
    config = config_with(
        tmp_path_factory.mktemp("own-redis"),
        kafka__bootstrap_servers=stack.kafka.bootstrap_servers,
        redis__url=f"redis://127.0.0.1:{free_port()}/0",
    )
    up(config)
    yield config
    down(config)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("strict-tls"))


@pytest.fixture(scope="module")
def strict(
    own_redis: TrimtabConfig, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingProcess]:
    workdir = tmp_path_factory.mktemp("strict")
    keys = json.dumps([
        {"name": "tester", "sha256": hash_key(KEY), "tenant": "default"},
        {"name": "operator", "sha256": hash_key(ADMIN_KEY), "tenant": "default", "admin": True},
        {"name": "acme-app", "sha256": hash_key(ACME_KEY), "tenant": "acme"},
    ])  # fmt: skip
    env = serving_env(
        own_redis,
        free_port(),
        workdir / "registry",
        auth__enabled="true",
        auth__api_keys=keys,
        auth__tenants="{default: {}, acme: {}}",
        serving__max_inflight="4",
        telemetry__traces="console",  # spans land in the log, read after shutdown
        telemetry__metrics="prometheus",
        telemetry__prometheus_port=str(free_port()),  # bound at start-up, before the engine
    )
    running = start_serving(env | certificates.env(), workdir / "serve.log", metadata=(("x-api-key", KEY),))
    yield running
    if running.process.poll() is None:
        stop_serving(running)


def request(text: str = "What is 3 plus 5?", max_tokens: int = 16) -> inference_pb2.GenerateRequest:
    message = inference_pb2.GenerateRequest(user_id="u1", sampling=common_pb2.SamplingParams(max_tokens=max_tokens))
    message.prompt.chat.messages.add(role="user", content=text)
    return message


AUTH = (("authorization", f"Bearer {KEY}"),)


def client_tls(certificates: Certificates, identity: Pem | None) -> TlsConfig:
    """An outside client's TLS: trusts the deployment's CA, presents `identity` if given."""
    pem = identity or certificates.client
    return TlsConfig(
        enabled=True, cert_file=pem.cert, key_file=pem.key, ca_file=certificates.ca, client_auth=identity is not None
    )


@pytest.fixture(scope="module")
def channel(strict: ServingProcess, certificates: Certificates) -> Iterator[grpc.Channel]:
    """A client of the strict replica with a certificate from the deployment's CA."""
    with grpc_channel(strict.address, client_tls(certificates, certificates.client)) as opened:
        yield opened


def aio_channel(strict: ServingProcess, certificates: Certificates) -> grpc.aio.Channel:
    return aio_grpc_channel(strict.address, client_tls(certificates, certificates.client))


def https(certificates: Certificates, identity: Pem | None) -> httpx.Client:
    return httpx.Client(verify=certificates.client_context(identity), timeout=60)


def test_clients_without_a_certificate_from_the_ca_get_nothing(
    strict: ServingProcess, certificates: Certificates
) -> None:
    metrics = f"https://127.0.0.1:{strict.config.telemetry.prometheus_port}/metrics"
    for identity in (None, certificates.stranger):
        with grpc_channel(strict.address, client_tls(certificates, identity)) as refused:
            with pytest.raises(grpc.RpcError) as raised:
                inference_pb2_grpc.InferenceServiceStub(refused).Generate(request(), metadata=AUTH, timeout=30)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        with https(certificates, identity) as client, pytest.raises(httpx.TransportError):
            client.get(f"{strict.openai_url}/models", headers={"authorization": f"Bearer {KEY}"})
        with https(certificates, identity) as client, pytest.raises(httpx.TransportError):
            client.get(metrics)
    with pytest.raises(grpc.RpcError) as plaintext:
        inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(strict.address)).Generate(request(), timeout=30)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    with https(certificates, certificates.client) as client:  # the same calls with the client's certificate
        assert client.get(f"{strict.openai_url}/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        assert "vllm:num_requests_running" in client.get(metrics).text


def test_an_unknown_or_missing_api_key_is_unauthenticated(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    for metadata in ((), (("x-api-key", "wrong"),)):
        with pytest.raises(grpc.RpcError) as raised:
            stub.Generate(request(), metadata=metadata, timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.Generate(request(), metadata=AUTH, timeout=60).candidates[0].completion_tokens > 0


def test_the_openai_api_takes_the_same_keys_as_bearer_tokens(
    strict: ServingProcess, certificates: Certificates
) -> None:
    def client(key: str) -> openai.OpenAI:
        tls = https(certificates, certificates.client)
        return openai.OpenAI(base_url=strict.openai_url, api_key=key, max_retries=0, timeout=60, http_client=tls)

    chat = {"model": "trimtab", "messages": [{"role": "user", "content": "What is 3 plus 5?"}], "max_tokens": 4}
    with pytest.raises(openai.AuthenticationError) as raised:
        client("wrong").chat.completions.create(**chat)  # type: ignore[call-overload]
    assert "unknown API key" in raised.value.message
    with pytest.raises(openai.AuthenticationError):
        client("wrong").models.list()
    answered = client(KEY).chat.completions.create(**chat)  # type: ignore[call-overload]
    assert answered.choices[0].message.content and answered.model_extra["user"] == "tester"  # the key's name


def test_a_key_acts_only_for_its_own_tenant(
    strict: ServingProcess, channel: grpc.Channel, certificates: Certificates, own_redis: TrimtabConfig
) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    acme = (("x-api-key", ACME_KEY),)
    elsewhere = request()
    elsewhere.tenant = "default"
    with pytest.raises(grpc.RpcError) as denied:
        stub.Generate(elsewhere, metadata=acme, timeout=30)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == "tenant: this API key acts for 'acme'"
    chat = {"model": "trimtab", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "tenant": "default"}
    with https(certificates, certificates.client) as client:
        refused = client.post(f"{strict.openai_url}/chat/completions", json=chat, headers={"x-api-key": ACME_KEY})
    assert refused.status_code == 403 and "acts for 'acme'" in refused.json()["error"]["message"]
    # Without a tenant the request is the key's tenant's, and so is its record.
    reply = stub.Generate(request("Hello!", max_tokens=2), metadata=acme, timeout=60)

    async def record_tenant() -> str:
        client = redis_client(own_redis.redis)
        try:
            for _ in range(50):
                record = await ResponseStore(client, own_redis.redis.key_prefix).get(reply.candidates[0].response_id)
                if record is not None:
                    return record.tenant
                await asyncio.sleep(0.1)
            return "no record"
        finally:
            await client.aclose()

    assert asyncio.run(record_tenant()) == "acme"


def test_only_an_admin_key_may_see_or_change_what_serves(channel: grpc.Channel) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    operator = (("x-api-key", ADMIN_KEY),)
    current = stub.GetStatus(admin_pb2.GetStatusRequest(), metadata=operator, timeout=30).status.current_version_id
    assert current.startswith("ver_")
    for call, message in ((stub.GetStatus, admin_pb2.GetStatusRequest()), (stub.Rollback, admin_pb2.RollbackRequest())):
        with pytest.raises(grpc.RpcError) as denied:
            call(message, metadata=AUTH, timeout=30)  # an inference key
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'tester'" in str(denied.value.details())
    for metadata in ((), (("x-api-key", UNKNOWN_KEY),)):
        with pytest.raises(grpc.RpcError) as unknown:
            stub.ListVersions(admin_pb2.ListVersionsRequest(), metadata=metadata, timeout=30)
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = stub.GetStatus(admin_pb2.GetStatusRequest(), metadata=operator, timeout=30).status.current_version_id
    assert after == current  # the refused rollback moved nothing


def test_beyond_the_in_flight_limit_requests_are_resource_exhausted(
    strict: ServingProcess, certificates: Certificates
) -> None:
    async def burst() -> list[grpc.StatusCode]:
        async with aio_channel(strict, certificates) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.Generate(request(max_tokens=64), metadata=AUTH, timeout=120)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return list(await asyncio.gather(*(one() for _ in range(16))))

    codes = asyncio.run(burst())
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) >= 4
    port = strict.config.telemetry.prometheus_port
    with https(certificates, certificates.client) as client:
        metrics = client.get(f"https://127.0.0.1:{port}/metrics").text
    assert 'outcome="resource_exhausted"' in metrics and "trimtab_serving_requests_total" in metrics
    assert "trimtab_serving_tokens_total" in metrics
    # OpenTelemetry's GenAI server metrics, with the conventions' attributes and bucket boundaries:
    for name in ("time_to_first_token", "time_per_output_token", "request_duration"):
        assert f'gen_ai_server_{name}_seconds_bucket{{gen_ai_operation_name="chat"' in metrics, name
    assert 'gen_ai_provider_name="trimtab",gen_ai_request_model="trimtab",gen_ai_response_model="ver_' in metrics
    assert "gen_ai_server_time_to_first_token_seconds_bucket{" in metrics and 'le="0.04"' in metrics
    # and vLLM's own engine metrics, under vLLM's names, from the same endpoint
    assert "vllm:num_requests_running" in metrics and "vllm:time_to_first_token_seconds_bucket" in metrics


def test_generation_goes_on_while_redis_is_down_and_records_land_when_it_returns(
    channel: grpc.Channel, own_redis: TrimtabConfig
) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    down(own_redis)
    started = time.perf_counter()
    reply = stub.Generate(request("Hello!"), metadata=AUTH, timeout=60)
    assert time.perf_counter() - started < 10  # not held up by the record writer's retries
    up(own_redis)

    async def landed() -> bool:
        client = redis_client(own_redis.redis)
        store = ResponseStore(client, own_redis.redis.key_prefix)
        try:
            for _ in range(100):  # the writer retries every serving.record_retry_s (1 s)
                if await store.get(reply.candidates[0].response_id) is not None:
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            await client.aclose()

    assert asyncio.run(landed())


def test_sigterm_lets_in_flight_streams_finish_then_exits_cleanly(
    strict: ServingProcess, certificates: Certificates
) -> None:
    async def streams_through_shutdown() -> list[inference_pb2.Candidate]:
        async with aio_channel(strict, certificates) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            calls = [stub.GenerateStream(request(max_tokens=96), metadata=AUTH, timeout=120) for _ in range(3)]
            firsts = [await call.read() for call in calls]  # all three are generating
            assert all(first.response_id for first in firsts)
            strict.process.send_signal(15)
            finals = []
            for call in calls:
                while (chunk := await call.read()) != grpc.aio.EOF:
                    if chunk.HasField("final"):
                        finals.append(chunk.final)
            return finals

    finals = asyncio.run(streams_through_shutdown())
    assert len(finals) == 3
    assert all(
        f.finish_reason in (inference_pb2.FINISH_REASON_STOP, inference_pb2.FINISH_REASON_LENGTH) for f in finals
    )
    assert strict.process.wait(timeout=60) == 0
    log = strict.log.read_text()
    assert "draining" in log and "stopped in" in log and "stuck at" not in log  # within its deadline
    # Console spans, flushed at shutdown: the RPC, inside it the GenAI span of the request (OpenTelemetry's
    # conventions), inside that each candidate's generation and the record, with the version.
    spans = console_spans(log)
    [stream] = [s for s in spans if s["name"] == "GenerateStream"][-1:]
    chats = [s for s in spans if s["name"] == "chat trimtab" and s["parent_id"] == stream["context"]["span_id"]]
    assert len(chats) == 1, [s["name"] for s in spans]
    chat = chats[0]["attributes"]
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "trimtab"
    assert chat["gen_ai.request.max_tokens"] == 96 and chat["gen_ai.response.model"].startswith("ver_")
    assert chat["gen_ai.response.id"].startswith("req_") and chat["gen_ai.usage.input_tokens"] > 0
    assert chat["gen_ai.usage.output_tokens"] > 0 and chat["gen_ai.response.finish_reasons"][0] in ("stop", "length")
    inside = {s["name"] for s in spans if s["parent_id"] == chats[0]["context"]["span_id"]}
    assert {"generate", "record"} <= inside


def test_no_api_key_reaches_the_log(strict: ServingProcess) -> None:
    """After the tests above (calls with both keys, refused calls with an unknown one) and the shutdown, which
    flushed the spans and their attributes into the log."""
    if strict.process.poll() is None:  # run on its own: the shutdown flushes the spans
        stop_serving(strict)
    log = strict.log.read_text()
    assert console_spans(log)
    for secret in (KEY, ADMIN_KEY, ACME_KEY, UNKNOWN_KEY):
        assert secret not in log


def console_spans(log: str) -> list[dict[str, Any]]:
    """The spans OpenTelemetry's console exporter wrote into a log (each a JSON object from a `{` line to
    a `}` line), among the process's other output."""
    spans, lines = [], log.splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    for start in starts:
        end = lines.index("}", start)
        span = json.loads("\n".join(lines[start : end + 1]))
        if "context" in span and "name" in span:
            spans.append(span)
    return spans


def test_a_replica_whose_engine_dies_answers_unavailable_and_exits_non_zero(
    stack: TrimtabConfig, tmp_path: Path
) -> None:
    """With chunked prefill on, a seeded load kills vLLM's CPU engine (engine.chunked_prefill says why):
    the callers then get UNAVAILABLE, to retry elsewhere, and the process exits 1 for a supervisor to
    restart it, instead of lingering with a dead engine and answering UNKNOWN."""
    # Its own key prefix: its `current` pointer names a version of its own registry, which the session's
    # serving process (same Redis, another registry) must never read.
    prefix = f"{stack.redis.key_prefix}engine-dies:"
    env = serving_env(
        stack, free_port(), tmp_path / "registry", engine__chunked_prefill="true", redis__key_prefix=prefix
    )
    running = start_serving(env, tmp_path / "serve.log")
    try:
        outcomes = asyncio.run(seeded_load(running.address))
        assert "UNAVAILABLE" in outcomes and set(outcomes) <= {"ok", "UNAVAILABLE"}, sorted(set(outcomes))
        assert running.process.wait(timeout=90) == 1  # within the stop's deadline even if a step hangs
    finally:
        if running.process.poll() is None:
            stop_serving(running)  # warns itself if the stop hit its deadline
        else:
            warn_if_stuck(running)
    assert "the inference engine stopped" in running.log.read_text()
