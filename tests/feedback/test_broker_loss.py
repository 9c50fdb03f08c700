"""The broker restarts empty (the local broker keeps its log in memory) while the feedback service runs:
the service notices before it writes again, says what was lost, and writes every accepted event again
from its ledger, so the topic holds each accepted feedback exactly once."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import broker_of_its_own
from tests.feedback.support import (
    InProcessServer,
    fresh_topic,
    response_ids,
    response_record,
    service_config,
    thumb,
    topic_records,
)
from trimtab.app.stack import down, up
from trimtab.app.stack.process import ServiceProcess
from trimtab.config import TrimtabConfig
from trimtab.events import ORIGINAL_OFFSET_HEADER
from trimtab.v1 import events_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_broker(stack: TrimtabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrimtabConfig]:
    """A broker only this module uses (and restarts), beside the session's Redis."""
    config = broker_of_its_own(stack, tmp_path_factory.mktemp("own-broker"))
    up(config)
    yield config
    down(config)


def test_a_broker_that_comes_back_empty_gets_every_accepted_event_again(
    own_broker: TrimtabConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server = InProcessServer(service_config(own_broker, fresh_topic("test.loss")))
    try:
        records = [server.put(response_record(user_id=f"loss-user-{i % 6}")) for i in range(18)]
        before = [thumb(response_ids(r)[0], user_id=r.user_id) for r in records[:12]]
        after = [thumb(response_ids(r)[0], user_id=r.user_id) for r in records[12:]]
        first = {request.feedback_id: server.submit_until_accepted(request) for request in before}

        down(server.config)  # the broker stops: its memory log is gone
        up(server.config)  # back, empty, with the topic created again
        with caplog.at_level(logging.ERROR, logger="feedback.broker_loss"):
            later = {request.feedback_id: server.submit_until_accepted(request) for request in after}
        replay = server.submit(before[0])  # a retry of an old submission: its acceptance, where it is now

        topic = server.config.kafka.topics.feedback.name
        on_topic = topic_records(server.config, topic)
        written_again = server.metric_points("trimtab.feedback.broker_loss_events")
    finally:
        server.close()

    events = {events_pb2.FeedbackEvent.FromString(r.value).feedback_id: r for r in on_topic}
    assert Counter(events_pb2.FeedbackEvent.FromString(r.value).feedback_id for r in on_topic) == Counter(
        {feedback_id: 1 for feedback_id in first | later}
    )
    for feedback_id, accepted in first.items():  # the same event, marked with where it was
        record = events[feedback_id]
        assert events_pb2.FeedbackEvent.FromString(record.value).event_id == accepted.event_id
        assert dict(record.headers)[ORIGINAL_OFFSET_HEADER] == str(accepted.offset).encode()
    for feedback_id in later:
        assert ORIGINAL_OFFSET_HEADER not in dict(events[feedback_id].headers)
    assert replay.replayed and replay.event_id == first[before[0].feedback_id].event_id
    assert (replay.partition, replay.offset) == (
        events[before[0].feedback_id].partition,
        events[before[0].feedback_id].offset,
    )
    assert sum(v for series, v in written_again.items() if ("outcome", "written_again") in series) == len(first)
    said = [r.getMessage() for r in caplog.records if r.name == "feedback.broker_loss"]
    assert said and all("the broker lost events" in line for line in said)


def test_a_producer_left_without_an_ack_past_its_timeout_is_replaced(
    own_broker: TrimtabConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that stops answering (SIGSTOP) leaves a record neither acked nor failed: the service drops
    that producer, as one the broker refused, and the next call after the broker is back starts a fresh
    one. (After a broker restart kafka-python's idempotent producer was seen to send nothing and expire
    nothing for minutes: every call answered UNAVAILABLE until the service restarted.)"""
    server = InProcessServer(service_config(own_broker, fresh_topic("test.stuck"), produce_timeout_s=1.0))
    record = ServiceProcess("broker", own_broker.stack.run_dir).record()
    assert record is not None
    broker = int(str(record["pid"]))
    try:
        records = [server.put(response_record(user_id=f"stuck-user-{i}")) for i in range(3)]
        first, stuck, later = (thumb(response_ids(r)[0], user_id=r.user_id) for r in records)
        server.submit_until_accepted(first)
        os.kill(broker, signal.SIGSTOP)
        try:
            with caplog.at_level(logging.WARNING, logger="feedback.producer"):
                with pytest.raises(grpc.RpcError) as refused:
                    server.submit(stuck, timeout=10)
                deadline = time.monotonic() + 10
                while "starting a new one" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            os.kill(broker, signal.SIGCONT)
        accepted = {request.feedback_id: server.submit_until_accepted(request) for request in (stuck, later)}
        on_topic = topic_records(server.config, server.config.kafka.topics.feedback.name)
    finally:
        server.close()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the feedback producer" in caplog.text and "starting a new one" in caplog.text
    ids = Counter(events_pb2.FeedbackEvent.FromString(r.value).feedback_id for r in on_topic)
    assert ids == Counter({first.feedback_id: 1, **{feedback_id: 1 for feedback_id in accepted}})


def test_a_recovery_outlives_the_calls_that_wait_for_it(
    own_broker: TrimtabConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that wait less than a broker-loss recovery takes do not cut it short: it runs once, to its
    end, while their calls time out, and new feedback is accepted after it. (The recovery used to run in
    the call that found the loss and die with that call's deadline, again and again: after a restart of
    the broker the service answered UNAVAILABLE for minutes under clients with a 2 s deadline.)"""
    server = InProcessServer(service_config(own_broker, fresh_topic("test.impatient")))
    try:
        records = [server.put(response_record(user_id=f"impatient-user-{i % 6}")) for i in range(400)]
        for record in records[:40]:
            server.submit_until_accepted(thumb(response_ids(record)[0], user_id=record.user_id))
        down(server.config)
        up(server.config)
        failures: Counter[grpc.StatusCode] = Counter()
        with caplog.at_level(logging.INFO, logger="feedback"):
            for record in records[40:]:  # each call new feedback, so no lease of an earlier call is in the way
                try:
                    accepted = server.submit(thumb(response_ids(record)[0], user_id=record.user_id), timeout=0.2)
                    break
                except grpc.RpcError as error:
                    failures[error.code()] += 1
            else:
                pytest.fail(f"nothing accepted in {len(records) - 40} calls with a 0.2 s deadline: {dict(failures)}")
    finally:
        server.close()
    assert accepted.event_id and failures[grpc.StatusCode.DEADLINE_EXCEEDED] > 0  # calls gave up during it
    checks = [r.getMessage() for r in caplog.records if r.name == "feedback.producer"]
    assert not [line for line in checks if "failed its check" in line]
    lost = [r.getMessage() for r in caplog.records if r.name == "feedback.broker_loss"]
    assert lost and len(lost) == len({line.split("[")[1].split("]")[0] for line in lost})  # once a partition
