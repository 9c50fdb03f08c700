"""Helpers for the feedback tests: response records, configs, an in-process server, clients, topic reads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from feedback.evaluation import EvaluationEvents
from feedback.metrics import FeedbackMetrics
from feedback.server import FeedbackServer
from tests.metrics import Series, metric_points
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig
from trimtab.events import ReceivedEvent, receive
from trimtab.ids import new_id
from trimtab.records import ResponseStore, redis_client
from trimtab.v1 import common_pb2, events_pb2, feedback_pb2, feedback_pb2_grpc, inference_pb2

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def response_record(user_id: str = "user-1", tenant: str = "default", candidates: int = 2) -> events_pb2.ResponseLogged:
    """A record as serving logs it: a chat prompt, `candidates` answers with versions, tokens and logprobs."""
    record = events_pb2.ResponseLogged(request_id=new_id("req_"), tenant=tenant, user_id=user_id)
    record.prompt.chat.messages.add(role="user", content="What is 3 plus 5?")
    record.prompt_token_ids.extend([5, 17, 42])
    record.sampling.temperature = 1.0
    record.trace_context["traceparent"] = TRACEPARENT
    record.received_at.GetCurrentTime()
    record.completed_at.GetCurrentTime()
    for index in range(candidates):
        candidate = record.candidates.add(token_ids=[7, 8, 9], token_logprobs=[-0.5, -0.25, -1.0])
        candidate.reply.CopyFrom(
            inference_pb2.Candidate(
                index=index,
                response_id=new_id("resp_"),
                text=f"The answer is {8 + index}.",
                model_version="v0",
                version_spans=[inference_pb2.VersionSpan(version_id="v0", token_start=0, token_end=3)],
                prompt_tokens=3,
                completion_tokens=3,
                finish_reason=inference_pb2.FINISH_REASON_STOP,
            )
        )
    return record


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def response_id_minted_at(epoch_s: float) -> str:
    """A response id as serving mints them ("resp_" + a ULID), but carrying the time `epoch_s`."""
    ms = int(epoch_s * 1000)
    time_part = "".join(CROCKFORD[(ms >> (5 * place)) & 31] for place in reversed(range(10)))
    return "resp_" + time_part + new_id()[10:]


def response_ids(record: events_pb2.ResponseLogged) -> list[str]:
    return [candidate.reply.response_id for candidate in record.candidates]


def thumb(
    response_id: str, user_id: str = "user-1", up: bool = True, feedback_id: str = ""
) -> feedback_pb2.SubmitRequest:
    value = feedback_pb2.THUMB_UP if up else feedback_pb2.THUMB_DOWN
    return feedback_pb2.SubmitRequest(
        feedback_id=feedback_id or str(uuid.uuid4()),
        user_id=user_id,
        response_id=response_id,
        label=feedback_pb2.FeedbackLabel(thumb=value),
    )


def derived_config(base: TrimtabConfig, **sections: dict[str, Any]) -> TrimtabConfig:
    """`base` with some sections' fields replaced, validated again (unknown keys still fail)."""
    data = base.model_dump()
    for section, fields in sections.items():
        data[section] = _merge(data[section], fields)
    return TrimtabConfig.model_validate(data)


def _merge(into: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    merged = dict(into)
    for key, value in fields.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def service_config(stack: TrimtabConfig, topic: str, **feedback: Any) -> TrimtabConfig:
    """The stack's config with a feedback topic and a Redis key prefix of its own (so rate limits and
    votes of one server never leak into another's tests), and fast exactly-once timings."""
    fields: dict[str, Any] = {"grpc_port": 0, "http_port": 0, "produce_timeout_s": 2.0, "lease_s": 6.0}
    fields |= feedback
    config = derived_config(
        stack,
        kafka={"topics": {"feedback": {"name": topic}}},
        redis={"key_prefix": f"{stack.redis.key_prefix}{uuid.uuid4().hex[:6]}:"},
        feedback=fields,
    )
    ensure_topics(config.kafka)
    return config


class InProcessServer:
    """A FeedbackServer on its own event loop in a thread, with in-memory telemetry."""

    def __init__(self, config: TrimtabConfig) -> None:
        self.config = config
        self.metric_reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.events = InMemoryLogRecordExporter()
        logger_provider = LoggerProvider()
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.events))
        self._evaluations = EvaluationEvents(logger_provider.get_logger("test"))
        meter = MeterProvider(metric_readers=[self.metric_reader]).get_meter("test")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="feedback-server", daemon=True)
        self._thread.start()
        self.server: FeedbackServer = self.run(self._create(FeedbackMetrics(meter), tracer_provider))
        self.run(self.server.start())
        self._store = ResponseStore(self.run(_client(config)), config.redis.key_prefix)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")
        self.stub = feedback_pb2_grpc.FeedbackServiceStub(self.channel)
        self.url = f"http://127.0.0.1:{self.server.http_port}"

    async def _create(self, metrics: FeedbackMetrics, tracer_provider: TracerProvider) -> FeedbackServer:
        return FeedbackServer(self.config, metrics, tracer_provider.get_tracer("test"), self._evaluations)

    def run(self, work: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def put(self, record: events_pb2.ResponseLogged, ttl_s: int = 600) -> events_pb2.ResponseLogged:
        self.run(self._store.put(record, ttl_s))
        return record

    def submit(self, request: feedback_pb2.SubmitRequest, **kwargs: Any) -> feedback_pb2.SubmitResponse:
        return self.stub.Submit(request, timeout=kwargs.pop("timeout", 15), **kwargs)

    def submit_until_accepted(self, request: feedback_pb2.SubmitRequest) -> feedback_pb2.SubmitResponse:
        """Like a client: retry UNAVAILABLE (a store is away or the service is catching up) with the same id."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.submit(request, timeout=30)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def refusal(self, request: feedback_pb2.SubmitRequest, **kwargs: Any) -> grpc.RpcError:
        """The RpcError a submission must raise (fails the test if it is accepted)."""
        try:
            accepted = self.submit(request, **kwargs)
        except grpc.RpcError as error:
            return error
        raise AssertionError(f"expected a refusal, got an acceptance: {accepted}")

    def post(self, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        return post_json(f"{self.url}/v1/feedback", body, headers)

    def metric_points(self, name: str) -> dict[Series, float]:
        return metric_points(self.metric_reader, name)

    def close(self) -> None:
        self.channel.close()
        self.run(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _client(config: TrimtabConfig) -> Any:
    return redis_client(config.redis)


def post_json(url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, parsed JSON body, response headers) of a POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None, error.headers


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def topic_records(config: TrimtabConfig, topic: str, timeout_s: float = 20) -> list[ConsumerRecord]:
    """Every record on `topic`, read from offset 0 to the Fetch high watermark (never end_offsets:
    Tansu gets it wrong when the last batch holds several records)."""
    servers = config.kafka.bootstrap_servers
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=50)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        found: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found += [record for records in consumer.poll(timeout_ms=200).values() for record in records]
            ends = {tp: consumer.highwater(tp) for tp in partitions}
            if all(end is not None and consumer.position(tp) >= end for tp, end in ends.items()):
                return found
        raise AssertionError(f"could not read {topic} to its end within {timeout_s} s")
    finally:
        consumer.close()


def events_for(config: TrimtabConfig, feedback_ids: set[str]) -> list[ReceivedEvent]:
    """The events on the config's feedback topic whose feedback_id is one of `feedback_ids`."""
    received = [receive(record) for record in topic_records(config, config.kafka.topics.feedback.name)]
    return [
        r for r in received if isinstance(r.event, events_pb2.FeedbackEvent) and r.event.feedback_id in feedback_ids
    ]


def fresh_topic(prefix: str = "test.feedback") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def label(**kind: Any) -> feedback_pb2.FeedbackLabel:
    return feedback_pb2.FeedbackLabel(**kind)


def attributes(**scores: int) -> common_pb2.SteerLMAttributes:
    return common_pb2.SteerLMAttributes(**scores)


@dataclass(frozen=True)
class Outcome:
    """What a submission got, over either transport: the acceptance, or the status and its message."""

    status: str  # "OK" or the gRPC status name (also carried in the HTTP error body)
    message: str = ""
    response: feedback_pb2.SubmitResponse | None = None
    retry_after: str | None = None
    http_status: int | None = None


TRANSPORTS = ("grpc", "http")


def call(
    server: InProcessServer, request: feedback_pb2.SubmitRequest, transport: str, headers: dict[str, str] | None = None
) -> Outcome:
    """Submit over `transport` ("grpc" or "http") and describe the outcome the same way for both."""
    if transport == "grpc":
        try:
            return Outcome("OK", response=server.submit(request, metadata=list((headers or {}).items())))
        except grpc.RpcError as error:
            trailers = dict(error.trailing_metadata() or ())
            return Outcome(error.code().name, error.details(), retry_after=trailers.get("retry-after"))
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    status, payload, response_headers = server.post(body, headers)
    if status == 200:
        return Outcome("OK", response=json_format.ParseDict(payload, feedback_pb2.SubmitResponse()), http_status=200)
    refusal = payload["error"]
    assert refusal["code"] == status
    retry_after = response_headers.get("Retry-After")
    return Outcome(refusal["status"], refusal["message"], retry_after=retry_after, http_status=status)
