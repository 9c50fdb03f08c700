"""Writing FeedbackEvents to the topic from asyncio, with a bounded wait for the broker's ack.

kafka-python's idempotent producer (acks=all, `trimtab.events.event_producer`) runs its own sender
thread; its futures are bridged into asyncio here. Its delivery timeout is `produce_timeout_s`, so a
record that is not acked by then is never written later by this producer: the ledger's lease relies
on that bound. The producer is created on first use, so the service starts (and answers
UNAVAILABLE) while the broker is down.

The partition is chosen here, not by kafka-python, because the ledger must know it before the send
(to look for the event after a crash). It is the default partitioner's choice for the key (murmur2
of the request id), so one request's events stay in order on one partition as with any producer.

Every new connection first runs the `on_connect` hook with a `Writer` on it (the service checks there
that the broker still holds what the ledger says it accepted: `feedback.broker_loss`); calls wait for
it, and a hook that fails leaves no producer behind, so they answer UNAVAILABLE. The connection runs as
a task of its own that calls share: a call whose client gives up stops waiting, the check goes on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from opentelemetry.context import Context
from redis.exceptions import RedisError

from trimtab.config import KafkaConfig
from trimtab.errors import TrimtabError
from trimtab.events import ORIGINAL_OFFSET_HEADER, RECOVERY_HEADER, encode, event_producer
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)

_LINGER_MS = 2  # acks gate every reply: batch only what arrives within a couple of milliseconds
_QUIET_S = 10.0


class BrokerUnavailable(TrimtabError):
    """No ack in time. `handed_over`: the record reached the producer and may still be written; then
    `late_ack` settles when the producer learns its fate (metadata on success)."""

    def __init__(self, message: str, handed_over: bool, late_ack: asyncio.Future[Any] | None = None) -> None:
        super().__init__(message)
        self.handed_over = handed_over
        self.late_ack = late_ack


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int
    latency_s: float


class Writer:
    """Writes on one kafka-python producer before the service uses it (the `on_connect` hook's view)."""

    def __init__(self, owner: FeedbackProducer, producer: KafkaProducer, partitions: int) -> None:
        self._owner = owner
        self._producer = producer
        self.partitions = partitions
        self.topic = owner.topic

    async def write_again(
        self, event: events_pb2.FeedbackEvent, key: str, partition: int, original: int, recovery: str
    ) -> Ack:
        """Write an event the broker lost, marked with the offset it had and the recovery writing it (the
        learner reads the marks)."""
        extra = [(ORIGINAL_OFFSET_HEADER, str(original).encode()), (RECOVERY_HEADER, recovery.encode())]
        return await self._owner.write(self._producer, event, key, partition, None, extra)


OnConnect = Callable[[Writer], Awaitable[None]]


class FeedbackProducer:
    """One producer for the feedback topic, shared by every call."""

    def __init__(self, kafka: KafkaConfig, topic: str, timeout_s: float) -> None:
        self._kafka = kafka
        self.topic = topic
        self._timeout_s = timeout_s
        self._producer: KafkaProducer | None = None
        self._partitions = 0
        self._lock = asyncio.Lock()
        self._settler: _Settler | None = None
        self._on_connect: OnConnect | None = None
        self._discarding: set[asyncio.Task[None]] = set()  # discards started by a late verdict
        self._connecting: asyncio.Task[KafkaProducer] | None = None
        self._said_at = -_QUIET_S

    def on_connect(self, hook: OnConnect) -> None:
        """Run `hook` on every new connection before any call writes on it."""
        self._on_connect = hook

    def _acks(self, loop: asyncio.AbstractEventLoop) -> _Settler:
        if self._settler is None or self._settler.loop is not loop:
            self._settler = _Settler(loop)
        return self._settler

    async def partition_for(self, key: str) -> int:
        await self._ready()
        return (murmur2(key.encode()) & 0x7FFFFFFF) % self._partitions

    async def send(
        self, event: events_pb2.FeedbackEvent, key: str, partition: int, context: Context | None, send_by: float
    ) -> Ack:
        """Write one event and wait for the broker's ack, or raise BrokerUnavailable. The record is handed
        to the producer only before `send_by` (time.monotonic()): later, its write could outlive the lease."""
        producer = await self._ready()
        if time.monotonic() > send_by:
            raise BrokerUnavailable("too late to write the event within its lease", handed_over=False)
        return await self.write(producer, event, key, partition, context)

    async def write(
        self,
        producer: KafkaProducer,
        event: events_pb2.FeedbackEvent,
        key: str,
        partition: int,
        context: Context | None,
        extra_headers: list[tuple[str, bytes]] | None = None,
    ) -> Ack:
        """Write on `producer` and wait for the ack (see `send`)."""
        value, headers = encode(event, context)
        headers += extra_headers or []
        started = time.perf_counter()
        try:
            future = producer.send(self.topic, key=key.encode(), value=value, headers=headers, partition=partition)
        except KafkaError as exc:  # buffer full or metadata gone: nothing was queued
            await self._discard(producer)
            raise BrokerUnavailable(f"the broker did not take the event: {exc}", handed_over=False) from exc
        acked = self._acks(asyncio.get_running_loop()).bridge(future)
        self._watch(producer, acked)
        try:
            metadata = await asyncio.wait_for(asyncio.shield(acked), self._timeout_s)
        except TimeoutError as exc:
            message = f"no ack from the broker within {self._timeout_s:g} s"
            raise BrokerUnavailable(message, handed_over=True, late_ack=acked) from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"the broker did not ack the event: {exc}", handed_over=True) from exc
        return Ack(self.topic, int(metadata.partition), int(metadata.offset), time.perf_counter() - started)

    def _watch(self, producer: KafkaProducer, acked: asyncio.Future[Any]) -> None:
        """Drop the producer when a record of it fails, or is neither acked nor failed within twice the
        delivery timeout: a producer the broker refused (an idempotent producer whose id a restarted broker
        no longer knows stays failed for good; kafka-python's sender neither drains nor expires batches
        while it has no producer id) is replaced by a fresh one, which checks the broker against the ledger
        first. Watched from the record's future, not from the call that wrote it: that call may have been
        cancelled (its client's deadline), and every later call would then go on writing on a dead producer."""
        loop = asyncio.get_running_loop()

        def discard(why: str) -> None:
            if self._producer is producer:  # once per producer: the next call no longer gets it
                self._producer = None
                log.warning("the feedback producer %s; starting a new one", why)
                task = loop.create_task(self._discard(producer))
                self._discarding.add(task)
                task.add_done_callback(self._discarding.discard)

        def expired() -> None:
            if not acked.done():
                discard(f"neither acked nor failed a record for {2 * self._timeout_s:g} s")

        timer = loop.call_later(2 * self._timeout_s, expired)

        def settled(done: asyncio.Future[Any]) -> None:
            timer.cancel()
            if done.cancelled() or done.exception() is not None:
                discard(f"failed a record ({'cancelled' if done.cancelled() else done.exception()})")

        acked.add_done_callback(settled)

    async def audit(self) -> None:
        """Run the `on_connect` hook again on the producer in use (an ack came back below its floor)."""
        async with self._lock:
            if self._producer is not None and self._on_connect is not None:
                await self._hook(self._producer, self._partitions)

    async def _ready(self) -> KafkaProducer:
        """The producer in use, or a new one once it is connected and checked. The connection is one task
        that callers share and only wait for: a caller's deadline cancels its wait, never the check (a
        broker-loss recovery takes longer than some clients wait; cancelled each time, it never ended)."""
        if self._producer is not None and not self._lock.locked():
            return self._producer
        loop = asyncio.get_running_loop()
        task = self._connecting
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._connecting = loop.create_task(self._connect_and_check())
            task.add_done_callback(_retrieve)  # every waiter may have gone: its failure is logged below
        return await asyncio.shield(task)

    async def _connect_and_check(self) -> KafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            started = time.perf_counter()
            try:
                producer, partitions = await asyncio.to_thread(self._connect)
            except (KafkaError, BrokerUnavailable) as exc:
                self._say("no feedback producer: %s", exc)
                if isinstance(exc, BrokerUnavailable):
                    raise
                message = f"cannot reach the broker at {self._kafka.bootstrap_servers}: {exc}"
                raise BrokerUnavailable(message, handed_over=False) from exc
            connected = time.perf_counter()
            try:
                await self._hook(producer, partitions)
            except BaseException as exc:
                self._say(
                    "a new feedback producer failed its check after %.1f s: %r", time.perf_counter() - connected, exc
                )
                await asyncio.to_thread(producer.close, 0)
                raise
            log.info(
                "a new feedback producer is ready (connected in %.1f s, checked in %.1f s)",
                connected - started,
                time.perf_counter() - connected,
            )
            self._producer, self._partitions = producer, partitions
            return producer

    def _say(self, message: str, *args: Any) -> None:
        """A warning about connecting, at most one every _QUIET_S: calls retry while the broker is away."""
        now = time.monotonic()
        if now - self._said_at >= _QUIET_S:
            self._said_at = now
            log.warning(message, *args)

    async def _hook(self, producer: KafkaProducer, partitions: int) -> None:
        if self._on_connect is None:
            return
        try:
            await self._on_connect(Writer(self, producer, partitions))
        except (KafkaError, RedisError, TrimtabError) as exc:
            if isinstance(exc, BrokerUnavailable):
                raise
            raise BrokerUnavailable(f"checking the broker against the ledger failed: {exc}", False) from exc

    async def _discard(self, producer: KafkaProducer) -> None:
        """Drop a producer the broker refused: an idempotent producer whose id the broker no longer knows
        (a restarted broker) stays failed for good; the next call starts a fresh one. Its unsent records
        fail, which is safe: their calls answered UNAVAILABLE and their leases stand."""
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        try:
            await asyncio.to_thread(producer.close, 0)
        except KafkaError as exc:  # close(0) reports records it could not flush: expected here
            log.info("discarded the feedback producer: %s", exc)

    def _connect(self) -> tuple[KafkaProducer, int]:
        timeout_ms = int(self._timeout_s * 1000)
        producer = event_producer(
            self._kafka,
            "feedback",
            linger_ms=_LINGER_MS,
            delivery_timeout_ms=timeout_ms,
            request_timeout_ms=max(1, min(self._kafka.request_timeout_ms, timeout_ms - _LINGER_MS)),
            max_block_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        try:
            partitions = producer.partitions_for(self.topic)
        except KafkaError:
            producer.close(timeout=0)
            raise
        if not partitions:
            producer.close(timeout=0)
            raise BrokerUnavailable(f"topic {self.topic} does not exist on the broker (run `trimtab up`)", False)
        return producer, len(partitions)

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._producer is not None:
            self._producer.close(timeout=self._timeout_s)
            self._producer = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Settler:
    """Settles asyncio futures from kafka-python's sender thread. The thread finishes a whole produce
    response's records at once; they wake the event loop once (one self-pipe write), not once each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._lock = threading.Lock()

    def bridge(self, future: Any) -> asyncio.Future[Any]:
        """An asyncio future settled like kafka-python's `future`."""
        acked: asyncio.Future[Any] = self.loop.create_future()
        future.add_callback(lambda metadata: self._settle(acked, metadata, None))
        future.add_errback(lambda exc: self._settle(acked, None, exc))
        return acked

    def _settle(self, acked: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """On the sender thread."""
        with self._lock:
            self._due.append((acked, result, error))
            if len(self._due) > 1:  # a wake-up is already on its way and will take this one too
                return
        self.loop.call_soon_threadsafe(self._settle_due)

    def _settle_due(self) -> None:
        """On the event loop."""
        with self._lock:
            due, self._due = self._due, []
        for acked, result, error in due:
            if acked.done():
                continue
            if error is not None:
                acked.set_exception(error)
            else:
                acked.set_result(result)
