"""The response log, written off the reply path: Redis records for feedback validation, Kafka events
(ResponseLogged on the responses topic, VersionEvent on the versions topic).

Generation never waits for Redis or the broker. Each sink has a bounded buffer and one writer task
that takes whatever has queued up (a batch: one Redis pipeline, one broker flush) and retries it until
it lands; while a sink is down its buffer fills, and records that do not fit are dropped and counted
(with a warning), never blocking a reply. The Kafka writer waits `serving.record_linger_s` after a
batch's first record for more: a produce round costs about a millisecond of the process's CPU (the
writer's thread hop, kafka-python's network thread) whatever it carries, and replies come one at a
time. The Redis writer does not wait: feedback reads the records there, often right after the reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kafka import KafkaProducer

from trimtab.config import TrimtabConfig
from trimtab.events import Event, event_producer, send_event
from trimtab.records import ResponseStore, redis_client
from trimtab.throttled import ThrottledWarning
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)
WARN_EVERY_S = 10.0  # at most one warning of each kind per sink in this interval
BATCH_MAX = 256  # records written in one go: a burst of replies costs one round trip, not one each

Item = TypeVar("Item")


@dataclass
class SinkStats:
    written: int = 0
    dropped: int = 0
    failures: int = 0


class Sink(Generic[Item]):
    """One destination: a bounded queue and a writer task that writes what has queued up as one batch,
    retrying the batch until it lands."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], Awaitable[None]],
        capacity: int,
        retry_s: float,
        on_drop: Callable[[], None] = lambda: None,
        linger_s: float = 0.0,
    ) -> None:
        self.name = name
        self._linger_s = linger_s
        self.stats = SinkStats()
        self._write = write
        self._on_drop = on_drop
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=capacity)
        self._retry_s = retry_s
        self._full = ThrottledWarning(log, WARN_EVERY_S)
        self._failing = ThrottledWarning(log, WARN_EVERY_S)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"record-sink-{self.name}")

    def offer(self, item: Item) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.stats.dropped += 1
            self._on_drop()
            self._full.warning("%s sink buffer full: dropped %d response records so far", self.name, self.stats.dropped)
            return False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger_s > 0:
                await asyncio.sleep(self._linger_s)
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self._write(batch)
                    self.stats.written += len(batch)
                    break
                except Exception as exc:  # any sink failure: keep the records, wait, retry
                    self.stats.failures += 1
                    self._failing.warning(
                        "%s sink write failed (%s); retrying every %.1fs", self.name, exc, self._retry_s
                    )
                    await asyncio.sleep(self._retry_s)
            for _ in batch:
                self._queue.task_done()

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for buffered records to land, then stop the writer."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("%s sink: %d records not written at shutdown", self.name, self.pending)
        if self._task is not None:
            self._task.cancel()


class ResponseRecorder:
    """Fans each response record out to the Redis and Kafka sinks; version events go to Kafka too."""

    def __init__(
        self,
        config: TrimtabConfig,
        on_drop: Callable[[str], None] = lambda sink: None,
        observers: Sequence[Callable[[events_pb2.ResponseLogged], None]] = (),  # also see every record
    ) -> None:
        self._config = config
        self._observers = tuple(observers)
        self._store = ResponseStore(redis_client(config.redis), config.redis.key_prefix)
        self._producer: KafkaProducer | None = None
        retry, capacity = config.serving.record_retry_s, config.serving.record_buffer
        self._redis: Sink[events_pb2.ResponseLogged] = Sink(
            "redis", self._to_redis, capacity, retry, lambda: on_drop("redis")
        )
        self._kafka: Sink[tuple[str, str, Event]] = Sink(
            "kafka", self._to_kafka, capacity, retry, lambda: on_drop("kafka"), linger_s=config.serving.record_linger_s
        )
        self.sinks: tuple[Sink[events_pb2.ResponseLogged], Sink[tuple[str, str, Event]]] = (self._redis, self._kafka)

    def start(self) -> None:
        for sink in self.sinks:
            sink.start()

    def record(self, record: events_pb2.ResponseLogged) -> None:
        self._redis.offer(record)
        self._kafka.offer((self._config.kafka.topics.responses.name, record.request_id, record))
        for observe in self._observers:
            observe(record)

    def version_event(self, event: events_pb2.VersionEvent) -> None:
        self._kafka.offer((self._config.kafka.topics.versions.name, event.version_id, event))

    async def _to_redis(self, records: list[events_pb2.ResponseLogged]) -> None:
        await asyncio.wait_for(self._store.put_many(records, self._config.serving.response_ttl_s), timeout=5.0)

    async def _to_kafka(self, items: list[tuple[str, str, Event]]) -> None:
        # kafka-python is blocking: its calls run in a worker thread, away from the event loop.
        await asyncio.to_thread(self._send_blocking, items)

    def _send_blocking(self, items: list[tuple[str, str, Event]]) -> None:
        """Send the batch, then wait for every ack (the producer batches the sends into few requests)."""
        try:
            if self._producer is None:
                self._producer = event_producer(self._config.kafka, "serving", max_block_ms=5000)
            sent = [send_event(self._producer, topic, key, event) for topic, key, event in items]
            self._producer.flush(timeout=10)
            for future in sent:
                future.get(timeout=10)
        except Exception:
            if self._producer is not None:
                self._producer.close(timeout=0)
                self._producer = None  # reconnect on the next attempt
            raise

    async def close(self, timeout_s: float) -> None:
        await asyncio.gather(*(sink.drain(timeout_s) for sink in self.sinks))
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close, 5)
        await self._store.close()
