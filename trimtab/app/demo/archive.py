"""The run's feedback topic, kept in the run directory: every FeedbackEvent as its protobuf bytes, base64,
one per line (`<run>/feedback.events`), read before the demo stops its processes. A finished run can then
be replayed offline through the learner's own code (bench/loop.py retrains from it in one batch); the
local broker keeps its topics in memory only.

The read stops once every accepted feedback id has been seen, or when the topic has been quiet for
`quiet_s` (never on end offsets: the local broker's are wrong for multi-record batches).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from trimtab.config import KafkaConfig
from trimtab.errors import TrimtabError
from trimtab.events import EventDecodeError, receive
from trimtab.v1 import events_pb2

FEEDBACK_ARCHIVE = "feedback.events"
QUIET_S = 2.0  # read on this long after the last record, once every expected id has been seen
TIMEOUT_S = 60.0  # at most, in all (a missing id means a broken topic: give up, the report notes it)


@dataclass(frozen=True)
class Archived:
    events: int  # FeedbackEvents written
    missing: int  # expected feedback ids not found in the topic by the timeout


def archive_feedback(
    kafka: KafkaConfig, path: Path, expected: Set[str], quiet_s: float = QUIET_S, timeout_s: float = TIMEOUT_S
) -> Archived:
    """Write the feedback topic's events to `path`. Stops as described in the module docstring, or after
    `timeout_s` in all."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-demo-archive",
        enable_auto_commit=False,  # no group: a one-off read from the beginning
        fetch_max_wait_ms=200,
    )
    topic = kafka.topics.feedback.name
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TrimtabError(f"topic {topic} does not exist at {kafka.bootstrap_servers}")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        missing = set(expected)
        written = 0
        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        with path.open("w") as out:
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500, max_records=1000).values():
                    last_record = time.monotonic()
                    for record in records:
                        try:
                            event = receive(record).event
                        except EventDecodeError:
                            continue
                        if isinstance(event, events_pb2.FeedbackEvent):
                            out.write(base64.b64encode(record.value).decode() + "\n")
                            missing.discard(event.feedback_id)
                            written += 1
                if not missing and time.monotonic() - last_record >= quiet_s:
                    break
        return Archived(written, len(missing))
    finally:
        consumer.close()


def read_feedback(path: Path) -> Iterator[events_pb2.FeedbackEvent]:
    """The archived events, in topic order (partition by partition, as read)."""
    with path.open() as lines:
        for line in lines:
            if line.strip():
                event = events_pb2.FeedbackEvent()
                event.ParseFromString(base64.b64decode(line))
                yield event
