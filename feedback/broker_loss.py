"""Broker loss: the feedback topic lost events the ledger says were accepted. Found, said, written again.

The local broker keeps its log in memory (design.md), so a restart empties the topic while Redis still
holds the ledger; any broker can lose a partition's tail (an unclean leader election). The ledger knows
what was accepted where: each partition's floor (highest acked offset + 1) and an index of accepted
feedback_ids by offset (`Keys.accepted`). So a partition whose end (its Fetch high watermark) is below
its floor has lost events, and which ones is a matter of looking:

    detect    when the producer connects (first use and every reconnect, before any call writes on it),
              every partition with a floor; and again whenever an ack comes back below the floor its
              entry was admitted at (a broker that came back empty and took the write)
    recover   one instance per partition at a time (a Redis lock, renewed while it works; an instance
              that finds it taken waits for it, then checks the partition again): snapshot the index,
              read the partition from its start to its end collecting the event ids on it, and write
              again, in their old order, the accepted events missing from it, from their ledger entries
              (template, vote link and abuse counts: the same event, the same event_id), each marked with
              its old offset and the loss's recovery id (headers `trimtab-original-offset`,
              `trimtab-recovery`: the learner's `learner.online.stream` reads them); record the new
              offsets. Only when every one is written is the floor set to the partition's new end: a
              recovery cut short (a crash, the broker gone again) leaves the loss visible, and the next
              attempt finishes it under the same recovery id
    say       an ERROR log line per partition (lost, written again, gone for good because their ledger
              entries expired, old and new offsets) and trimtab.feedback.broker_loss_events{outcome}

Calls wait while this runs at connect time (it holds the producer); a recovery that fails leaves no
producer, so calls answer UNAVAILABLE and the next one tries again. The snapshot is taken before the
read, so an event accepted on the new log meanwhile is either on the read or not in the snapshot:
nothing is written twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from feedback import event as events
from feedback.keys import Keys, PartitionKeys
from feedback.ledger import Entry, Ledger
from feedback.locks import RELEASE, RENEW
from feedback.metrics import FeedbackMetrics
from feedback.producer import Writer
from feedback.recovery import event_ids_on, partition_ends
from feedback.roundtrips import RoundTrips
from trimtab.config import TrimtabConfig
from trimtab.ids import new_id

log = logging.getLogger(__name__)

_LOCK_MS = 30_000  # renewed after every wave; a dead owner's lock frees itself this long after its last wave
_WAVE = 256  # events written again per wave of acks


@dataclass(frozen=True)
class Loss:
    """What one partition lost and what became of it."""

    partition: int
    end: int  # where the broker's log ends
    floor: int  # where the ledger says it should end at least
    written_again: list[tuple[int, int]]  # (old offset, new offset)
    expired: int  # index members whose ledger entries are gone: lost for good


class BrokerLossGuard:
    """The `on_connect` hook of the service's producer (see the module docstring)."""

    def __init__(self, config: TrimtabConfig, redis: RoundTrips, ledger: Ledger, metrics: FeedbackMetrics) -> None:
        self._kafka = config.kafka
        self._feedback = config.feedback
        self._keys = Keys(config.redis.key_prefix)
        self._redis = redis
        self._ledger = ledger
        self._metrics = metrics
        self._release = redis.client.register_script(RELEASE)
        self._renew = redis.client.register_script(RENEW)

    async def __call__(self, writer: Writer) -> None:
        for partition, (end, floor) in sorted((await self._losses(writer, range(writer.partitions))).items()):
            await self._recover(writer, partition, end, floor)

    async def _losses(self, writer: Writer, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(end, floor) of each partition whose log ends below its floor."""
        keys = [self._keys.floor(writer.topic, p) for p in partitions]
        values = await self._redis.execute("MGET", *keys)
        floors = {p: int(v) for p, v in zip(partitions, values, strict=True) if v is not None and int(v) > 0}
        if not floors:
            return {}  # nothing accepted yet: nothing to lose
        timeout_s = self._feedback.produce_timeout_s
        ends = await asyncio.to_thread(partition_ends, self._kafka, writer.topic, floors, timeout_s)
        return {p: (end, floors[p]) for p, end in ends.items() if end < floors[p]}

    async def _recover(self, writer: Writer, partition: int, end: int, floor: int) -> None:
        lock, owner = self._keys.recovering(writer.topic, partition), new_id()
        while not await self._redis.execute("SET", lock, owner, "NX", "PX", _LOCK_MS):
            await self._wait_for(lock)  # another instance is recovering it; then look again
            lost = (await self._losses(writer, [partition])).get(partition)
            if lost is None:
                return
            end, floor = lost
        try:
            loss = await self._write_again(writer, partition, end, floor, lock, owner)
        finally:
            await self._redis.script(self._release, [lock], [owner])
        self._say(writer.topic, loss)

    async def _write_again(self, writer: Writer, partition: int, end: int, floor: int, lock: str, owner: str) -> Loss:
        keys = self._keys.partition(writer.topic, partition)
        accepted = await self._ledger.accepted_on(keys)  # before the read: see the module docstring
        timeout_s = 10 * self._feedback.produce_timeout_s
        present = await asyncio.to_thread(event_ids_on, self._kafka, writer.topic, partition, timeout_s)
        entries = await self._ledger.entries([self._keys.submission(fid) for fid, _ in accepted])
        missing: list[tuple[int, Entry]] = []
        expired: list[str] = []
        for (feedback_id, offset), entry in zip(accepted, entries, strict=True):
            if entry is None:
                expired.append(feedback_id)
            elif entry.event_id not in present:
                missing.append((offset, entry))
        recovery = await self._recovery_id(writer.topic, partition)
        written: list[tuple[int, int]] = []
        for start in range(0, len(missing), _WAVE):
            wave = missing[start : start + _WAVE]
            new_offsets = await asyncio.gather(*(self._write_one(writer, keys, o, e, recovery) for o, e in wave))
            written += [(old, new) for (old, _), new in zip(wave, new_offsets, strict=True)]
            await self._redis.script(self._renew, [lock], [owner, _LOCK_MS])
        await self._ledger.forget(keys, expired)
        # Everything is on the log again: from now on the floor counts from its new end.
        timeout_s = self._feedback.produce_timeout_s
        new_end = (await asyncio.to_thread(partition_ends, self._kafka, writer.topic, {partition: 0}, timeout_s))[
            partition
        ]
        await self._ledger.reset_floor(keys, new_end)
        await self._redis.execute("DEL", self._keys.loss(writer.topic, partition))
        return Loss(partition, end, floor, written, len(expired))

    async def _recovery_id(self, topic: str, partition: int) -> str:
        """The id of this partition's loss: the same for every attempt until one finishes."""
        key = self._keys.loss(topic, partition)
        await self._redis.execute("SET", key, new_id("rcv_"), "NX", "EX", self._feedback.idempotency_ttl_s)
        value = await self._redis.execute("GET", key)
        return str(value.decode())

    async def _write_one(self, writer: Writer, keys: PartitionKeys, old: int, entry: Entry, recovery: str) -> int:
        event = events.finish(entry.template, entry.supersedes, entry.counts, self._feedback)
        ack = await writer.write_again(event, event.served.request_id, entry.partition, old, recovery)
        await self._ledger.accept(self._keys.submission(entry.feedback_id), keys, ack.offset, moved=True)
        return ack.offset

    async def _wait_for(self, lock: str) -> None:
        deadline = time.monotonic() + _LOCK_MS / 1000
        while time.monotonic() < deadline and await self._redis.execute("EXISTS", lock):
            await asyncio.sleep(0.2)

    def _say(self, topic: str, loss: Loss) -> None:
        self._metrics.broker_loss(len(loss.written_again), loss.expired)
        olds = [old for old, _ in loss.written_again]
        news = [new for _, new in loss.written_again]
        log.error(
            "the broker lost events of %s[%d]: its log ends at offset %d, the ledger had accepted events up to %d;"
            " wrote %d again (old offsets %s, now %s); %d lost for good (their ledger entries had expired)",
            topic,
            loss.partition,
            loss.end,
            loss.floor - 1,
            len(loss.written_again),
            _span(olds),
            _span(news),
            loss.expired,
        )


def _span(offsets: list[int]) -> str:
    return f"{min(offsets)}-{max(offsets)}" if offsets else "none"
