"""Wire events round-trip through the real broker with their headers and the producer's trace context."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from trimtab.config import TrimtabConfig
from trimtab.events import (
    EVENT_TYPE_HEADER,
    SCHEMA_VERSION_HEADER,
    EventDecodeError,
    decode,
    encode,
    event_producer,
    receive,
    send_event,
)
from trimtab.v1 import events_pb2, feedback_pb2


def feedback_event(feedback_id: str) -> events_pb2.FeedbackEvent:
    event = events_pb2.FeedbackEvent(event_id=f"ev-{feedback_id}", feedback_id=feedback_id, user_id="u1")
    event.served.request_id = "req-1"
    event.served.prompt.text = "What is 3 plus 5?"
    event.label.thumb = feedback_pb2.THUMB_UP
    event.accepted_at.GetCurrentTime()
    return event


@pytest.mark.integration
def test_event_round_trips_through_the_broker_with_headers_and_trace_context(stack: TrimtabConfig) -> None:
    topic = f"test.events.{uuid.uuid4().hex[:8]}"  # a fresh topic: read from offset 0, never from "the end"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    tracer = TracerProvider().get_tracer("test")
    sent = [feedback_event(f"fb-{i}") for i in range(3)]
    producer = event_producer(stack.kafka, "test")
    with tracer.start_as_current_span("submit") as span:
        for event in sent:
            send_event(producer, topic, "req-1", event).get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=stack.kafka.bootstrap_servers, enable_auto_commit=False)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek(partition, 0)
    received = []
    while len(received) < len(sent):
        batch = consumer.poll(timeout_ms=5000)
        assert batch, "the broker returned no records within 5 s"
        received += [receive(record) for records in batch.values() for record in records]
    consumer.close()

    assert [r.event for r in received] == sent
    assert [r.offset for r in received] == [0, 1, 2]
    assert all(r.key == b"req-1" for r in received)
    carried = trace.get_current_span(received[0].context).get_span_context()
    assert carried.trace_id == span.get_span_context().trace_id
    assert carried.span_id == span.get_span_context().span_id


def test_headers_name_the_schema_version_and_event_type() -> None:
    _, headers = encode(events_pb2.VersionEvent(version_id="v1"))
    fields = dict(headers)
    assert fields[SCHEMA_VERSION_HEADER] == b"1"
    assert fields[EVENT_TYPE_HEADER] == b"trimtab.v1.VersionEvent"


def test_consumers_refuse_records_they_cannot_read() -> None:
    value, headers = encode(feedback_event("fb"))
    newer = [(k, b"99" if k == SCHEMA_VERSION_HEADER else v) for k, v in headers]
    with pytest.raises(EventDecodeError, match="reads up to 1"):
        decode(value, newer)
    unknown = [(k, b"trimtab.v1.Nope" if k == EVENT_TYPE_HEADER else v) for k, v in headers]
    with pytest.raises(EventDecodeError, match="unknown trimtab-event-type"):
        decode(value, unknown)
    with pytest.raises(EventDecodeError, match="does not parse"):
        decode(b"\xff\xff\xff", headers)
