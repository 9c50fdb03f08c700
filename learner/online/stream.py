"""The feedback topic as the online learner reads it: every partition assigned to one reader, positions
set from the learner's checkpoint, offsets committed to the consumer group only after that checkpoint
is durable (the group's offsets are a mirror for operators' lag dashboards, never the source of truth:
a checkpoint and its offsets cannot disagree if they are one file).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from opentelemetry.context import Context

from trimtab.config import KafkaConfig
from trimtab.errors import TrimtabError
from trimtab.events import EventDecodeError, receive
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    event: events_pb2.FeedbackEvent
    context: Context  # the producer's trace context (the feedback service's Submit span)


class FeedbackStream:
    """Reads trimtab.feedback from `positions` (partition -> next offset; missing: the beginning)."""

    def __init__(self, kafka: KafkaConfig, group_id: str, positions: Mapping[int, int]) -> None:
        self.topic = kafka.topics.feedback.name
        self._consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{kafka.client_id}-learner",
            group_id=group_id,
            enable_auto_commit=False,  # committed explicitly, after the checkpoint (see module docstring)
            request_timeout_ms=max(kafka.request_timeout_ms, 11_000),
            fetch_max_wait_ms=200,
        )
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise TrimtabError(f"topic {self.topic} does not exist at {kafka.bootstrap_servers}: run `trimtab up`")
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        for tp in self._partitions:
            if tp.partition in positions:
                self._consumer.seek(tp, positions[tp.partition])
            else:
                self._consumer.seek_to_beginning(tp)
        self.positions: dict[int, int] = {tp.partition: self._consumer.position(tp) for tp in self._partitions}
        self.undecodable = 0

    def poll(self, timeout_s: float, max_records: int) -> list[Consumed]:
        batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        consumed: list[Consumed] = []
        for tp, records in batch.items():
            for record in records:
                self.positions[tp.partition] = record.offset + 1
                try:
                    received = receive(record)
                except EventDecodeError as exc:
                    self.undecodable += 1
                    log.error("skipping %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, exc)
                    continue
                if isinstance(received.event, events_pb2.FeedbackEvent):
                    consumed.append(Consumed(tp.partition, record.offset, received.event, received.context))
        return consumed

    def commit(self, positions: Mapping[int, int]) -> None:
        """Mirror `positions` (already durable in a checkpoint) to the consumer group."""
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()}
        try:
            self._consumer.commit(offsets)
        except Exception as exc:  # the mirror lagging is harmless; the checkpoint holds the truth
            log.warning("committing offsets to group failed (the checkpoint has them): %s", exc)

    def close(self) -> None:
        self._consumer.close()
