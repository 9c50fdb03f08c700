"""Feedback ingestion: accepted events/s and p99 accept latency through the full service vs a bare producer.

Candidates: `python -m feedback` as its own process (as deployed), driven over gRPC, with each
submission a new thumb on a stored response record, so it goes through every step (auth, shape, key
rate limit, ledger lookup, record fetch and validation, atomic admission with user
limit/vote/cap/agreement, produce with acks=all, ack wait, acceptance):
  - Submit, one submission per call, `concurrency` calls in flight;
  - SubmitBatch, `batch_items` submissions per call, `batches_in_flight` calls in flight.
  - both again with `feedback.workers` 2 (two processes on the same ports), the calls spread over 8
    client connections (the kernel hands each connection, not each call, to one worker);
  - the Submit load and the first SubmitBatch shape against `bench.grpc_floor`, a service that does no
    work: how far the gRPC transport alone gets on the machine (the ceiling of those two rows);
  - the Submit load again with cohorts off (`feedback.cohorts.max_wait_ms` 0): what calls going on
    together under load (`feedback.cohorts`) buys, the baseline of that row.
Baseline: a bare kafka-python producer (acks=all, idempotent) sending the same FeedbackEvent payloads
with the same keys to the same broker, with as many records in flight as the candidate has
submissions in flight.
All run on a stack of their own (a broker on a free port, Redis under a fresh key prefix). The rows'
notes carry the service process's own CPU per accepted event (all its threads): steadier than events/s
on a shared machine, where the service, its client, Redis and the broker share two cores.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psutil

from bench.report import Comparison
from feedback import event as feedback_event
from trimtab.app.stack import down, up
from trimtab.config import TrimtabConfig
from trimtab.events import encode, event_producer
from trimtab.health import wait_serving
from trimtab.ids import new_id
from trimtab.ports import free_port, listening_children
from trimtab.records import ResponseStore, purge_prefix, redis_client
from trimtab.v1 import events_pb2, feedback_pb2, feedback_pb2_grpc

REPO = Path(__file__).resolve().parents[1]


# SubmitBatch shapes measured: (calls in flight, items per call). The first has as many submissions in
# flight as the Submit row; the second is a client that batches more.
BATCH_SHAPES = ((2, 16), (2, 64))
# The workers rows: processes, client connections, and the SubmitBatch shape (calls in flight, items per
# call: one call on each connection).
WORKERS, CONNECTIONS, WORKERS_BATCH = 2, 8, (8, 16)


def bench_feedback(config: TrimtabConfig, submissions: int = 3000, concurrency: int = 32) -> list[Comparison]:
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-feedback-") as run_dir:
        bench_config = _bench_config(config, Path(run_dir))
        up(bench_config)
        try:
            loads = 4 + len(BATCH_SHAPES)
            requests, payloads = asyncio.run(_stored_requests(bench_config, submissions * loads))
            # One share of new submissions per measured load: [Submit, each batch shape, Submit without
            # cohorts, 2 workers' Submit, 2 workers' batches].
            shares = [slice(i * submissions, (i + 1) * submissions) for i in range(loads)]
            with _service(bench_config) as (address, service):
                service_rate, service_latency, service_cpu = _measure(
                    address, service, requests[shares[0]], concurrency, batch_items=1
                )
                batched = [
                    _measure(address, service, requests[share], calls, items)
                    for share, (calls, items) in zip(shares[1:-3], BATCH_SHAPES, strict=True)
                ]
            with _service(_without_cohorts(bench_config)) as (address, service):
                alone = _measure(address, service, requests[shares[-3]], concurrency, batch_items=1)
            with _service(bench_config, WORKERS) as (address, service):
                workers_single = _measure(address, service, requests[shares[-2]], concurrency, 1, CONNECTIONS)
                workers_batched = _measure(address, service, requests[shares[-1]], *WORKERS_BATCH, CONNECTIONS)
            with _floor(bench_config) as (address, floor):  # stores nothing: the same requests again
                floor_single = _measure(address, floor, requests[shares[0]], concurrency, batch_items=1)
                floor_batched = _measure(address, floor, requests[shares[1]], *BATCH_SHAPES[0])
            producer_rate, producer_latency = _measure_producer(bench_config, payloads[shares[0]], concurrency)
            windows = [
                _measure_producer(bench_config, payloads[share], calls * items)[0]
                for share, (calls, items) in zip(shares[1:-3], BATCH_SHAPES, strict=True)
            ]
            workers_window = _measure_producer(bench_config, payloads[shares[-1]], WORKERS_BATCH[0] * WORKERS_BATCH[1])
        finally:
            purge_prefix(bench_config.redis.url, bench_config.redis.key_prefix)
            down(bench_config)
    setup = f"{submissions} thumbs, {concurrency} in flight, acks=all"
    floor_calls, floor_items = BATCH_SHAPES[0]
    rows = [
        Comparison(
            name=f"feedback accepted events/s, SubmitBatch ({submissions} thumbs, {calls} calls of {items} in flight)",
            unit="events/s",
            candidate="FeedbackService SubmitBatch (gRPC)",
            candidate_value=rate,
            baseline=f"bare kafka-python producer, {calls * items} in flight",
            baseline_value=window_rate,
            notes=f"p50 call {_p(latency, 50):.1f} ms, p99 {_p(latency, 99):.1f} ms; service CPU {cpu:.0f} µs/event",
        )
        for (calls, items), (rate, latency, cpu), window_rate in zip(BATCH_SHAPES, batched, windows, strict=True)
    ]
    return [
        Comparison(
            name=f"feedback accepted events/s, Submit ({setup})",
            unit="events/s",
            candidate="FeedbackService Submit (gRPC)",
            candidate_value=service_rate,
            baseline="bare kafka-python producer",
            baseline_value=producer_rate,
            notes=f"p50 accept {_p(service_latency, 50):.1f} ms vs {_p(producer_latency, 50):.1f} ms;"
            f" service CPU {service_cpu:.0f} µs/event",
        ),
        *rows,
        Comparison(
            name=f"feedback accepted events/s, Submit, {WORKERS} workers ({setup}, {CONNECTIONS} connections)",
            unit="events/s",
            candidate=f"FeedbackService Submit (gRPC), {WORKERS} processes",
            candidate_value=workers_single[0],
            baseline="bare kafka-python producer",
            baseline_value=producer_rate,
            notes=f"p50 accept {_p(workers_single[1], 50):.1f} ms; service CPU {workers_single[2]:.0f} µs/event",
        ),
        Comparison(
            name=f"feedback accepted events/s, SubmitBatch, {WORKERS} workers ({submissions} thumbs,"
            f" {WORKERS_BATCH[0]} calls of {WORKERS_BATCH[1]} in flight, {CONNECTIONS} connections)",
            unit="events/s",
            candidate=f"FeedbackService SubmitBatch (gRPC), {WORKERS} processes",
            candidate_value=workers_batched[0],
            baseline=f"bare kafka-python producer, {WORKERS_BATCH[0] * WORKERS_BATCH[1]} in flight",
            baseline_value=workers_window[0],
            notes=f"p50 call {_p(workers_batched[1], 50):.1f} ms; service CPU {workers_batched[2]:.0f} µs/event",
        ),
        Comparison(
            name=f"feedback Submit with cohorts vs without ({setup})",
            unit="events/s",
            candidate="FeedbackService Submit (gRPC), feedback.cohorts as configured",
            candidate_value=service_rate,
            baseline="the same with cohorts off (max_wait_ms 0)",
            baseline_value=alone[0],
            notes=f"service CPU {service_cpu:.0f} vs {alone[2]:.0f} µs/event; p50 accept"
            f" {_p(service_latency, 50):.1f} vs {_p(alone[1], 50):.1f} ms",
        ),
        Comparison(
            name=f"feedback transport alone, Submit ({setup})",
            unit="events/s",
            candidate="a FeedbackService that does no work (bench.grpc_floor)",
            candidate_value=floor_single[0],
            baseline="bare kafka-python producer",
            baseline_value=producer_rate,
            notes=f"the Submit row's ceiling on this machine; server CPU {floor_single[2]:.0f} µs/call",
        ),
        Comparison(
            name=f"feedback transport alone, SubmitBatch ({submissions} thumbs, {floor_calls} calls of {floor_items}"
            " in flight)",
            unit="events/s",
            candidate="a FeedbackService that does no work (bench.grpc_floor)",
            candidate_value=floor_batched[0],
            baseline=f"bare kafka-python producer, {floor_calls * floor_items} in flight",
            baseline_value=windows[0],
            notes=f"the SubmitBatch row's ceiling; server CPU {floor_batched[2]:.0f} µs/event",
        ),
        Comparison(
            name=f"feedback p99 accept latency, Submit ({setup})",
            unit="ms",
            candidate="FeedbackService Submit (gRPC)",
            candidate_value=_p(service_latency, 99),
            baseline="bare kafka-python producer",
            baseline_value=_p(producer_latency, 99),
            higher_is_better=False,
            notes="call start to acceptance vs send() to broker ack",
        ),
    ]


def _bench_config(config: TrimtabConfig, run_dir: Path) -> TrimtabConfig:
    data = config.model_dump()
    data["kafka"]["bootstrap_servers"] = f"127.0.0.1:{free_port()}"
    data["redis"]["key_prefix"] = f"{config.redis.key_prefix}bench-{uuid.uuid4().hex[:6]}:"
    data["stack"]["run_dir"] = run_dir
    data["feedback"] |= {"grpc_port": free_port(), "http_port": free_port()}
    # The bench measures validation and writing, not refusals: limits far above the load.
    data["feedback"]["user_rate"] = {"max_requests": 1_000_000, "window_s": 60}
    data["feedback"]["key_rate"] = {"max_requests": 1_000_000, "window_s": 60}
    return TrimtabConfig.model_validate(data)


def _without_cohorts(config: TrimtabConfig) -> TrimtabConfig:
    cohorts = config.feedback.cohorts.model_copy(update={"max_wait_ms": 0.0})
    return config.model_copy(update={"feedback": config.feedback.model_copy(update={"cohorts": cohorts})})


async def _stored_requests(
    config: TrimtabConfig, count: int
) -> tuple[list[feedback_pb2.SubmitRequest], list[tuple[bytes, bytes, Any]]]:
    """Response records in Redis, one thumb per record, and the equivalent events for the baseline."""
    client = redis_client(config.redis)
    store = ResponseStore(client, config.redis.key_prefix)
    requests, payloads = [], []
    for index in range(count):
        record = _record(user_id=f"bench-user-{index % 200}")
        await store.put(record, ttl_s=3600)
        request = feedback_pb2.SubmitRequest(
            feedback_id=str(uuid.uuid4()),
            user_id=record.user_id,
            response_id=record.candidates[0].reply.response_id,
            label=feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP),
        )
        requests.append(request)
        value, headers = encode(feedback_event.template(request, record, new_id("fbk_")))
        payloads.append((record.request_id.encode(), value, headers))
    await client.aclose()
    return requests, payloads


def _record(user_id: str) -> events_pb2.ResponseLogged:
    record = events_pb2.ResponseLogged(request_id=new_id("req_"), tenant="default", user_id=user_id)
    record.prompt.chat.messages.add(role="user", content="What colour is a glimberry?")
    record.prompt_token_ids.extend(range(24))
    for index in range(2):
        candidate = record.candidates.add(token_ids=range(32), token_logprobs=[-0.5] * 32)
        candidate.reply.index = index
        candidate.reply.response_id = new_id("resp_")
        candidate.reply.text = "A glimberry is teal, thank you for asking." * (index + 1)
        candidate.reply.model_version = "v0"
    record.received_at.GetCurrentTime()
    record.completed_at.GetCurrentTime()
    return record


@contextmanager
def _service(config: TrimtabConfig, workers: int = 1) -> Iterator[tuple[str, psutil.Process]]:
    """`python -m feedback` serving on the config's ports with `workers` processes; its gRPC address and its
    (parent) process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")} | _env(config)
    env["TRIMTAB_FEEDBACK__WORKERS"] = str(workers)
    with _server([sys.executable, "-m", "feedback"], env, config.feedback.grpc_port, workers) as served:
        yield served


@contextmanager
def _floor(config: TrimtabConfig) -> Iterator[tuple[str, psutil.Process]]:
    """`bench.grpc_floor` (the gRPC transport alone) on a free port, on the service's event loop."""
    port = free_port()
    command = [sys.executable, "-m", "bench.grpc_floor", str(port), config.feedback.event_loop]
    with _server(command, os.environ | {"PYTHONPATH": str(REPO)}, port) as served:
        yield served


@contextmanager
def _server(
    command: list[str], env: dict[str, str], port: int, workers: int = 1
) -> Iterator[tuple[str, psutil.Process]]:
    address = f"127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            _wait_serving(address, server, workers, port)
            yield address, psutil.Process(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _measure(
    address: str,
    service: psutil.Process,
    requests: list[feedback_pb2.SubmitRequest],
    concurrency: int,
    batch_items: int,
    connections: int = 1,
) -> tuple[float, list[float], float]:
    """(accepted per second, per-call latencies in ms, the service's CPU in µs per accepted event) after a
    warm-up on the first tenth of `requests` (connections, the producer, scripts: not part of the sustained
    rate). The CPU is every thread of the service's processes (the producer's sender thread included)."""
    warm = len(requests) // 10
    asyncio.run(_drive(address, requests[:warm], concurrency, batch_items, connections))
    before = _cpu_s(service)
    rate, latencies = asyncio.run(_drive(address, requests[warm:], concurrency, batch_items, connections))
    return rate, latencies, (_cpu_s(service) - before) / (len(requests) - warm) * 1e6


def _cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the process and its workers (which live as long as it does)."""
    times = [process.cpu_times(), *(child.cpu_times() for child in process.children(recursive=True))]
    return float(sum(t.user + t.system for t in times))


def _env(config: TrimtabConfig) -> dict[str, str]:
    topic = config.kafka.topics.feedback
    return {
        "PYTHONPATH": str(REPO),
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": topic.name,
        "TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS": str(topic.partitions),
        "TRIMTAB_REDIS__URL": config.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": config.redis.key_prefix,
        "TRIMTAB_FEEDBACK__GRPC_PORT": str(config.feedback.grpc_port),
        "TRIMTAB_FEEDBACK__HTTP_PORT": str(config.feedback.http_port),
        "TRIMTAB_FEEDBACK__EVENT_LOOP": config.feedback.event_loop,
        "TRIMTAB_FEEDBACK__COHORTS__MAX_WAIT_MS": str(config.feedback.cohorts.max_wait_ms),
        "TRIMTAB_FEEDBACK__USER_RATE": "{max_requests: 1000000, window_s: 60}",
        "TRIMTAB_FEEDBACK__KEY_RATE": "{max_requests: 1000000, window_s: 60}",
    }


def _wait_serving(
    address: str, server: subprocess.Popen[bytes], workers: int, port: int, timeout_s: float = 30.0
) -> None:
    """Until the service answers SERVING and, with workers, every one of them listens (the health check
    reaches only the first; connections made before the others listen would all stay with it)."""
    deadline = time.monotonic() + timeout_s
    if not wait_serving(address, server, timeout_s):
        raise RuntimeError(f"{address}'s server did not start (exit code {server.poll()})")
    while workers > 1 and len(listening_children(server.pid, port)) < workers:
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"the feedback service's {workers} workers did not all start")
        time.sleep(0.1)


async def _drive(
    address: str, requests: list[feedback_pb2.SubmitRequest], concurrency: int, batch_items: int, connections: int = 1
) -> tuple[float, list[float]]:
    """(accepted per second, per-call latencies in ms) with `concurrency` calls in flight, each a Submit
    (`batch_items` 1) or a SubmitBatch of `batch_items`, spread over `connections` TCP connections."""
    latencies: list[float] = []
    queue = deque(requests)
    # A channel of its own subchannel pool opens a connection of its own (gRPC shares them otherwise).
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(connections)]
    try:
        stubs = [feedback_pb2_grpc.FeedbackServiceStub(channel) for channel in channels]

        async def worker(stub: feedback_pb2_grpc.FeedbackServiceStub) -> None:
            while queue:
                items = [queue.popleft() for _ in range(min(batch_items, len(queue)))]
                started = time.perf_counter()
                if batch_items == 1:
                    replayed = [(await stub.Submit(items[0], timeout=30)).replayed]
                else:
                    response = await stub.SubmitBatch(feedback_pb2.SubmitBatchRequest(items=items), timeout=30)
                    refused = [r.refused.message for r in response.results if r.HasField("refused")]
                    assert not refused, refused[:3]
                    replayed = [r.accepted.replayed for r in response.results]
                latencies.append((time.perf_counter() - started) * 1000)
                assert not any(replayed)

        started = time.perf_counter()
        await asyncio.gather(*(worker(stubs[index % connections]) for index in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    return len(requests) / elapsed, latencies


def _measure_producer(
    config: TrimtabConfig, payloads: list[tuple[bytes, bytes, Any]], concurrency: int
) -> tuple[float, list[float]]:
    producer = event_producer(config.kafka, "bench", linger_ms=2)
    topic = config.kafka.topics.feedback.name
    try:
        warm = len(payloads) // 10
        _send_window(producer, topic, payloads[:warm], concurrency)
        started = time.perf_counter()
        latencies = _send_window(producer, topic, payloads[warm:], concurrency)
        return (len(payloads) - warm) / (time.perf_counter() - started), latencies
    finally:
        producer.close()


def _send_window(producer: Any, topic: str, payloads: list[tuple[bytes, bytes, Any]], window: int) -> list[float]:
    """Send with at most `window` records awaiting their ack; per-record send-to-ack latencies in ms."""
    latencies: list[float] = []
    in_flight: deque[Any] = deque()
    for key, value, headers in payloads:
        if len(in_flight) >= window:
            in_flight.popleft().get(timeout=30)
        sent = time.perf_counter()
        future = producer.send(topic, key=key, value=value, headers=headers)
        future.add_callback(lambda _, sent=sent: latencies.append((time.perf_counter() - sent) * 1000))
        in_flight.append(future)
    for future in in_flight:
        future.get(timeout=30)
    return latencies


def _p(values: list[float], percentile: int) -> float:
    return statistics.quantiles(values, n=100)[percentile - 1] if percentile < 100 else max(values)
