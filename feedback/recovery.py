"""Did an event reach the topic? Read its partition from the ledger's floor to the end and look.

Used only for a pending submission whose lease has expired: its owner died or gave up, and the
event may or may not have been written. By then no write of it can still be in flight (the lease
outlives the producer's delivery timeout), so the partition's end as the broker reports it now
bounds where the event can be.

"The end" is the high watermark in Fetch responses (`KafkaConsumer.highwater`), never
ListOffsets/`end_offsets` nor `seek_to_end`: Tansu answers ListOffsets wrongly when the last batch
holds several records (design.md), while its Fetch high watermark is right. A high watermark below
the floor means the broker lost the log (Tansu's memory storage after a restart): the scan then
starts from offset 0.
"""

from __future__ import annotations

import time

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
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-feedback-recovery",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,  # an empty fetch at the end of the log should come back at once
        request_timeout_ms=kafka.request_timeout_ms,
        bootstrap_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return _scan(consumer, TopicPartition(topic, partition), floor, event_id, time.monotonic() + timeout_s)
    finally:
        consumer.close()


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


def _event_id(value: bytes | None) -> str | None:
    event = events_pb2.FeedbackEvent()
    try:
        event.ParseFromString(value or b"")
    except Exception:  # a record that is not a FeedbackEvent cannot be the one we look for
        return None
    return event.event_id
