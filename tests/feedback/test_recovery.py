"""Exactly once across the crash windows, forced deterministically in-process, and a broker that goes away.

The kill test (test_server_kill.py) covers the same with a real SIGKILL at a random moment; these
tests put the failure exactly where it hurts: after the broker's ack but before the acceptance is
recorded, and after admission but before the event reached the broker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from redis.exceptions import ConnectionError as RedisConnectionError

from feedback.producer import BrokerUnavailable
from feedback.recovery import find_event
from tests.conftest import config_with, free_port
from tests.feedback.support import (
    TRANSPORTS,
    InProcessServer,
    call,
    events_for,
    fresh_topic,
    response_ids,
    response_record,
    service_config,
    thumb,
)
from trimtab.app.stack import down, up
from trimtab.config import TrimtabConfig
from trimtab.v1 import events_pb2

pytestmark = pytest.mark.integration

LEASE_S = 4.0


@pytest.fixture(scope="module")
def crashy(stack: TrimtabConfig) -> Iterator[InProcessServer]:
    server = InProcessServer(
        service_config(stack, fresh_topic(), produce_timeout_s=1.0, lease_s=LEASE_S, in_progress_wait_s=0.2)
    )
    yield server
    server.close()


def retry_until_accepted(server: InProcessServer, request: Any, transport: str = "grpc", limit_s: float = 15) -> Any:
    """Retry like a client: on UNAVAILABLE wait for the retry-after, up to `limit_s`."""
    deadline = time.monotonic() + limit_s
    while True:
        outcome = call(server, request, transport)
        if outcome.status != "UNAVAILABLE" or time.monotonic() > deadline:
            return outcome
        time.sleep(min(float(outcome.retry_after or 1), 1.0))


def test_a_crash_between_the_ack_and_the_acceptance_does_not_write_twice(
    crashy: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = crashy.put(response_record())
    request = thumb(response_ids(record)[0])
    service = crashy.server.service

    async def lost(*args: object) -> None:  # the process "dies" right after the broker acked
        raise RedisConnectionError("simulated crash after the ack")

    monkeypatch.setattr(service._ledger, "accept", lost)
    assert call(crashy, request, "grpc").status == "UNAVAILABLE"
    monkeypatch.undo()
    [written] = events_for(crashy.config, {request.feedback_id})

    in_flight = call(crashy, request, "http")  # the lease is still live: wait, then say so
    assert (in_flight.status, in_flight.http_status) == ("UNAVAILABLE", 503)
    assert in_flight.message.startswith("a submission with this feedback_id is still being written")
    assert in_flight.retry_after is not None and 1 <= int(in_flight.retry_after) <= LEASE_S

    recovered = retry_until_accepted(crashy, request)
    assert recovered.status == "OK" and recovered.response.replayed  # found on the topic, not written again
    assert (recovered.response.event_id, recovered.response.offset) == (written.event.event_id, written.offset)
    assert call(crashy, request, "grpc").response == recovered.response
    assert len(events_for(crashy.config, {request.feedback_id})) == 1


def test_a_crash_before_the_event_reached_the_broker_writes_it_on_retry(
    crashy: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = crashy.put(response_record())
    request = thumb(response_ids(record)[0], up=False)
    service = crashy.server.service

    async def vanished(*args: object, **kwargs: object) -> None:
        raise BrokerUnavailable("simulated crash before the send", handed_over=True)

    monkeypatch.setattr(service._producer, "send", vanished)
    assert call(crashy, request, "grpc").status == "UNAVAILABLE"
    monkeypatch.undo()
    assert events_for(crashy.config, {request.feedback_id}) == []

    recovered = retry_until_accepted(crashy, request, "http")
    assert recovered.status == "OK" and not recovered.response.replayed
    [written] = events_for(crashy.config, {request.feedback_id})
    assert written.event.event_id == recovered.response.event_id  # the event admitted first, not a new one


def test_concurrent_duplicates_produce_one_event(crashy: InProcessServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    record = crashy.put(response_record())
    request = thumb(response_ids(record)[1])
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda t: call(crashy, request, t), TRANSPORTS * 3))
    accepted = [o.response for o in outcomes if o.response is not None]
    assert len(accepted) == 6, [o.message for o in outcomes if o.status != "OK"]
    assert len({a.event_id for a in accepted}) == 1 and sum(not a.replayed for a in accepted) == 1
    assert len(events_for(crashy.config, {request.feedback_id})) == 1


def test_find_event_reads_to_the_fetch_high_watermark_past_multi_record_batches(stack: TrimtabConfig) -> None:
    topic = fresh_topic("test.scan")
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers, linger_ms=100)
    ids = [f"fbk_{i}" for i in range(12)]
    sent = [producer.send(topic, events_pb2.FeedbackEvent(event_id=i).SerializeToString(), partition=0) for i in ids]
    producer.send(topic, b"\xff not an event", partition=0).get(10)
    offsets = [future.get(10).offset for future in sent]
    producer.close()

    def find(event_id: str, floor: int = 0) -> int | None:
        return find_event(stack.kafka, topic, 0, floor, event_id, timeout_s=10)

    assert find(ids[-1]) == offsets[-1]  # in the last multi-record batch, where Tansu's end_offsets stops short
    assert find(ids[3], floor=2) == offsets[3]
    assert find("fbk_absent") is None
    assert find(ids[5], floor=500) == offsets[5]  # a floor beyond the end: the log was lost; scan from 0


def test_broker_down_is_unavailable_and_a_retry_after_it_returns_is_written_once(
    stack: TrimtabConfig, tmp_path: Path
) -> None:
    own_broker = config_with(
        tmp_path,
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        redis__key_prefix=f"{stack.redis.key_prefix}{uuid.uuid4().hex[:6]}:",
        stack__stop_timeout_s="0.5",  # the broker dies: Tansu waits for its clients on SIGTERM, then SIGKILL
    )
    up(own_broker)
    server = InProcessServer(
        service_config(own_broker, "trimtab.feedback", produce_timeout_s=0.5, lease_s=3.0, in_progress_wait_s=0.2)
    )
    try:
        record = server.put(response_record())
        first, second = response_ids(record)
        assert call(server, thumb(first), "grpc").status == "OK"
        down(own_broker)
        request = thumb(second)
        for transport in TRANSPORTS:
            refused = call(server, request, transport)
            assert refused.status == "UNAVAILABLE" and refused.retry_after is not None, refused
            assert refused.http_status in (None, 503)
        up(own_broker)  # memory storage: an empty log, the topic created again
        recovered = retry_until_accepted(server, request, limit_s=30)
        assert recovered.status == "OK", recovered.message
        assert len(events_for(server.config, {request.feedback_id})) == 1
    finally:
        server.close()
        down(own_broker)


def test_a_send_too_late_for_its_lease_is_not_attempted_and_the_lease_is_released(
    crashy: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = crashy.put(response_record())
    request = thumb(response_ids(record)[0], up=False)
    producer = crashy.server.service._producer
    ready = producer._ready

    async def slow_reconnect() -> object:  # e.g. the producer was discarded and reconnecting takes long
        await asyncio.sleep(1.2)  # lease 4 s, produce timeout 1 s: a send must start within ~1 s
        return await ready()

    monkeypatch.setattr(producer, "_ready", slow_reconnect)
    refused = call(crashy, request, "grpc")
    assert refused.status == "UNAVAILABLE" and "too late to write the event within its lease" in refused.message
    assert refused.retry_after == "1"
    monkeypatch.undo()
    assert events_for(crashy.config, {request.feedback_id}) == []
    retried = call(crashy, request, "grpc")  # released: no need to wait for the lease
    assert retried.status == "OK" and not retried.response.replayed  # type: ignore[union-attr]
    assert len(events_for(crashy.config, {request.feedback_id})) == 1
