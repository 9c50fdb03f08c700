"""The feedback topic as the online learner reads it: every partition assigned to one reader, positions
set from the learner's checkpoint, offsets committed to the consumer group only after that checkpoint
is durable (the group's offsets are a mirror for operators' lag dashboards, never the source of truth:
a checkpoint and its offsets cannot disagree if they are one file).

A broker can lose a partition's log (the local broker keeps it in memory; a restart empties it). The
feedback service then writes every accepted event again, each marked with the offset it had and the
recovery's id (`trimtab.events.recovery_marks`). The reader notices the loss when its position lies
past the partition's end (the Fetch high watermark, or OFFSET_OUT_OF_RANGE: it never resets silently)
or when it meets a marked event of a recovery it has not seen. Then it says so (ERROR), keeps a fence
(the position it had reached in the lost log, and the recovery), and reads the partition again from its
start, skipping marked events whose old offset is below the fence: those it had read before. The
fences travel in the checkpoint with the positions. Known limit: events written to the new log before
the recovery and ahead of the reader's old position are read as new only if the reader noticed the
loss before it reached them (the high watermark check at its next poll; an end past its old position
by then means it already read from there).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata
from opentelemetry.context import Context

from trimtab.config import KafkaConfig
from trimtab.errors import TrimtabError
from trimtab.events import EventDecodeError, receive, recovery_marks
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    event: events_pb2.FeedbackEvent
    context: Context  # the producer's trace context (the feedback service's Submit span)


@dataclass
class Fence:
    """A partition whose log the broker lost: how far this reader had read it, and the recovery that wrote
    it again (None until the first marked event is read)."""

    position: int
    recovery: str | None = None


class FeedbackStream:
    """Reads trimtab.feedback from `positions` (partition -> next offset; missing: the beginning). `fences`
    (partition -> Fence, see the module docstring) is the caller's, updated in place."""

    def __init__(
        self, kafka: KafkaConfig, group_id: str, positions: Mapping[int, int], fences: dict[int, Fence]
    ) -> None:
        self.topic = kafka.topics.feedback.name
        self._consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{kafka.client_id}-learner",
            group_id=group_id,
            enable_auto_commit=False,  # committed explicitly, after the checkpoint (see module docstring)
            auto_offset_reset="none",  # a position past the end is a lost log: raise, never skip silently
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
        self.fences = fences
        self.undecodable = 0
        self.read_before_loss = 0  # marked events skipped: read before their log was lost
        self.lost: set[int] = set()  # partitions found lost since the caller last cleared this

    def poll(self, timeout_s: float, max_records: int) -> list[Consumed]:
        try:
            batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except OffsetOutOfRangeError as exc:
            for tp in exc.args[0]:
                self._lost(tp, "the broker says the position is out of range")
            return []
        consumed: list[Consumed] = []
        for tp, records in batch.items():
            for record in records:
                marks = recovery_marks(record.headers)
                if marks is not None and not self._fenced(tp.partition, marks.recovery):
                    self._lost(tp, f"an event written again by recovery {marks.recovery} is at offset {record.offset}")
                    break  # the rest of this partition's batch is read again from the start
                self.positions[tp.partition] = record.offset + 1
                if marks is not None and marks.original_offset < self.fences[tp.partition].position:
                    self.read_before_loss += 1
                    continue
                try:
                    received = receive(record)
                except EventDecodeError as exc:
                    self.undecodable += 1
                    log.error("skipping %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, exc)
                    continue
                if isinstance(received.event, events_pb2.FeedbackEvent):
                    consumed.append(Consumed(tp.partition, record.offset, received.event, received.context))
        for tp in self._partitions:  # a broker that answers a position past its end with an empty fetch
            end = self._consumer.highwater(tp)
            if end is not None and end < self.positions[tp.partition]:
                self._lost(tp, f"the partition now ends at offset {end}")
        return consumed

    def _fenced(self, partition: int, recovery: str) -> bool:
        """Whether a marked event belongs to a loss this reader already handles (binding a new fence to it)."""
        fence = self.fences.get(partition)
        if fence is None:
            return False
        if fence.recovery is None:
            fence.recovery = recovery
        return fence.recovery == recovery

    def _lost(self, tp: TopicPartition, evidence: str) -> None:
        position = self.positions[tp.partition]
        log.error(
            "the broker lost the log of %s[%d] (%s); this learner had read it up to offset %d: reading the"
            " partition again from its start, skipping events written again that it had read (old offset below"
            " %d)",
            tp.topic,
            tp.partition,
            evidence,
            position,
            position,
        )
        self.fences[tp.partition] = Fence(position)
        self._consumer.seek(tp, 0)
        self.positions[tp.partition] = 0
        self.lost.add(tp.partition)

    def commit(self, positions: Mapping[int, int]) -> None:
        """Mirror `positions` (already durable in a checkpoint) to the consumer group."""
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()}
        try:
            self._consumer.commit(offsets)
        except Exception as exc:  # the mirror lagging is harmless; the checkpoint holds the truth
            log.warning("committing offsets to group failed (the checkpoint has them): %s", exc)

    def close(self) -> None:
        self._consumer.close()
