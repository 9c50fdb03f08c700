"""Reading the feedback topic back: did an event reach it, where does each partition end, which events does
a partition hold.

`find_event` serves a pending submission whose lease has expired: its owner died or gave up, and the
event may or may not have been written. By then no write of it can still be in flight (the lease
outlives the producer's delivery timeout), so the partition's end as the broker reports it now
bounds where the event can be. `partition_ends` and `event_ids_on` serve `feedback.broker_loss`;
`events_on` and `partition_count` serve `feedback.redis_loss`.

"The end" is the high watermark in Fetch responses (`KafkaConsumer.highwater`), never
ListOffsets/`end_offsets` nor `seek_to_end`: Tansu answers ListOffsets wrongly when the last batch
holds several records (design.md), while its Fetch high watermark is right. A high watermark below
the floor means the broker lost the log (Tansu's memory storage after a restart): the scan then
starts from offset 0.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from trimtab.config import KafkaConfig
from trimtab.errors import TrimtabError
from trimtab.v1 import events_pb2

_POLL_MS = 200


class ScanTimeout(TrimtabError):
    """The partition could not be read to its end in time (the broker is slow or down)."""


def find_event(
    kafka: KafkaConfig, topic: str, partition: int, floor: int, event_id: str, timeout_s: float
) -> int | None:
    """The offset of the FeedbackEvent `event_id` in `partition` at or after `floor`, or None if absent.

    Blocking (kafka-python): run it in a worker thread.
    """
    consumer = _consumer(kafka, timeout_s)
    try:
        return _scan(consumer, TopicPartition(topic, partition), floor, event_id, time.monotonic() + timeout_s)
    finally:
        consumer.close()


def partition_ends(kafka: KafkaConfig, topic: str, floors: dict[int, int], timeout_s: float) -> dict[int, int]:
    """Each partition's end (Fetch high watermark), read by fetching just below its floor (little data).
    Blocking."""
    # Fetching past the end is OFFSET_OUT_OF_RANGE: 'earliest' moves it to the start, which answers.
    consumer = _consumer(kafka, timeout_s, auto_offset_reset="earliest", max_partition_fetch_bytes=16 * 1024)
    try:
        partitions = {p: TopicPartition(topic, p) for p in floors}
        consumer.assign(list(partitions.values()))
        for p, tp in partitions.items():
            consumer.seek(tp, max(0, floors[p] - 1))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=_POLL_MS)
            ends = {p: consumer.highwater(tp) for p, tp in partitions.items()}
            if all(end is not None for end in ends.values()):
                return {p: int(end) for p, end in ends.items() if end is not None}
        raise ScanTimeout(f"could not read where {topic}'s partitions end in time")
    finally:
        consumer.close()


def event_ids_on(kafka: KafkaConfig, topic: str, partition: int, timeout_s: float) -> set[str]:
    """Every FeedbackEvent id the partition holds now, read from its start to its end. Blocking."""
    return {event.event_id for _, event in events_on(kafka, topic, partition, timeout_s)}


def events_on(
    kafka: KafkaConfig, topic: str, partition: int, timeout_s: float
) -> list[tuple[int, events_pb2.FeedbackEvent]]:
    """(offset, event) of every FeedbackEvent the partition holds now, from its start (the oldest its
    retention kept) to its end. Blocking."""
    consumer = _consumer(kafka, timeout_s, auto_offset_reset="earliest")
    tp = TopicPartition(topic, partition)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        found: list[tuple[int, events_pb2.FeedbackEvent]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=_POLL_MS).get(tp, []):
                if (event := _event(record.value)) is not None:
                    found.append((int(record.offset), event))
            end = consumer.highwater(tp)
            if end is not None and consumer.position(tp) >= end:
                return found
        raise ScanTimeout(f"could not read {topic}[{partition}] to its end in time")
    finally:
        consumer.close()


def partition_count(kafka: KafkaConfig, topic: str, timeout_s: float) -> int:
    """How many partitions `topic` has. Blocking."""
    consumer = _consumer(kafka, timeout_s)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ScanTimeout(f"topic {topic} has no partitions the broker will name")
        return len(partitions)
    finally:
        consumer.close()


def _consumer(kafka: KafkaConfig, timeout_s: float, **options: Any) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-feedback-recovery",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,  # an empty fetch at the end of the log should come back at once
        request_timeout_ms=kafka.request_timeout_ms,
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **options,
    )


def _scan(consumer: KafkaConsumer, tp: TopicPartition, floor: int, event_id: str, deadline: float) -> int | None:
    consumer.assign([tp])
    consumer.seek(tp, floor)
    restarted = False
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=_POLL_MS).get(tp, []):
            if _event_id(record.value) == event_id:
                return int(record.offset)
        end = consumer.highwater(tp)
        if end is None:
            continue  # no fetch response yet
        if end < floor and not restarted:
            consumer.seek(tp, 0)
            restarted = True
            continue
        if consumer.position(tp) >= end:
            return None
    raise ScanTimeout(f"could not read {tp.topic}[{tp.partition}] to its end in time")


def _event(value: bytes | None) -> events_pb2.FeedbackEvent | None:
    event = events_pb2.FeedbackEvent()
    try:
        event.ParseFromString(value or b"")
    except Exception:  # a record that is not a FeedbackEvent: nothing the ledger accepted
        return None
    return event


def _event_id(value: bytes | None) -> str | None:
    event = _event(value)
    return None if event is None else event.event_id
