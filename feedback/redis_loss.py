"""Redis loss: the ledger forgot what it accepted. Found, said, rebuilt from the feedback topic.

Redis holds the exactly-once ledger (every accepted feedback_id, each partition's floor and index). The
local Redis and the Kubernetes one keep an append-only file, so a killed Redis comes back with every
write it acknowledged; one that comes back *empty* (no persistence, a lost volume, a FLUSHALL) has
forgotten every acceptance, and without this a retry of an accepted feedback would find no entry, and a
later broker loss nothing to write again. The topic still holds every accepted event, so:

    detect   the ledger's epoch (`Keys.epoch`): a random id the first instance writes to an empty
             ledger and every instance remembers. Both scripts that decide a call (`look`, `reserve`)
             first compare it with the one the instance knows and answer "lost" when it is gone or
             another: a call never reads or admits into a ledger its instance has not checked
    rebuild  one instance at a time (a Redis lock; the others wait for it): wait out the lease (a write
             admitted before the loss may still be in flight; after a lease none can be), read every
             partition of the feedback topic from its start to its end, and restore for each event
             younger than `feedback.idempotency_ttl_s` its entry, accepted at its offset, in the
             partition's index, and the floor; then write a new epoch ("rebuilt:...", which the other
             instances adopt: an epoch "new:..." over a ledger an instance knew means another instance
             started on the emptied Redis, so that is rebuilt too)
    say      an ERROR line (entries restored, already there, too old) and
             trimtab.feedback.redis_loss_entries{outcome}

Calls answer UNAVAILABLE (retry after the lease) until the rebuild is done; one that fails (the broker is
down too) leaves the epoch unknown, so the next call tries again. A rebuilt entry has no fingerprint (the
request is not on the topic): any retry of its feedback_id is answered as the original acceptance. Not
rebuilt, and starting again: the response records serving wrote (feedback on a response answered before
the loss is NOT_FOUND), rate windows, training caps and agreement tallies (an event written again after a
later broker loss says only whether it was over the cap), and vote links (a changed vote after the loss
does not supersede the earlier one). Known limit: a Redis emptied while no instance ran is taken for a
new ledger: no instance remembers an epoch to miss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from feedback.abuse import UserCounts
from feedback.errors import FeedbackError, unavailable
from feedback.keys import Keys
from feedback.ledger import ACCEPTED, REBUILT, Entry, Ledger
from feedback.locks import RELEASE, RENEW
from feedback.metrics import FeedbackMetrics
from feedback.recovery import events_on, partition_count
from feedback.roundtrips import RoundTrips
from trimtab.config import TrimtabConfig
from trimtab.ids import new_id
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)

_WAVE = 256  # entries restored at once
NEW, REBUILT_EPOCH = "new:", "rebuilt:"


@dataclass(frozen=True)
class Rebuilt:
    """What one rebuild found on the topic."""

    events: int
    restored: int
    already_there: int  # written after the loss by an instance that started on the emptied Redis
    too_old: int  # older than feedback.idempotency_ttl_s: their entries would have expired anyway

    def __add__(self, other: Rebuilt) -> Rebuilt:
        return Rebuilt(
            self.events + other.events,
            self.restored + other.restored,
            self.already_there + other.already_there,
            self.too_old + other.too_old,
        )


class RedisLossGuard:
    """The feedback service's watch on its ledger (see the module docstring)."""

    def __init__(
        self, config: TrimtabConfig, redis: RoundTrips, ledger: Ledger, metrics: FeedbackMetrics, topic: str
    ) -> None:
        self._kafka, self._feedback = config.kafka, config.feedback
        self._keys = Keys(config.redis.key_prefix)
        self._redis, self._ledger, self._metrics, self._topic = redis, ledger, metrics, topic
        self._lock_ms = int((self._feedback.lease_s + 30) * 1000)
        self._release = redis.client.register_script(RELEASE)
        self._renew = redis.client.register_script(RENEW)
        self._settling: asyncio.Task[None] | None = None

    async def known(self) -> None:
        """Before this instance's first call: adopt the ledger's epoch, or start one on an empty ledger."""
        if not self._ledger.epoch:
            await self._redis.execute("SET", self._ledger.epoch_key, f"{NEW}{new_id()}", "NX")
            self._ledger.epoch = (await self._redis.execute("GET", self._ledger.epoch_key) or b"").decode()

    def lost(self) -> FeedbackError:
        """A script found another epoch: settle it in the background (once at a time); the call's answer."""
        if self._settling is None or self._settling.done():
            self._settling = asyncio.ensure_future(self._settle_logged())
        return unavailable(
            "Redis lost the feedback ledger; it is being rebuilt from the feedback topic: retry with the same"
            " feedback_id",
            retry_after_s=self._feedback.lease_s,
        )

    async def _settle_logged(self) -> None:
        try:
            await self._settle()
        except Exception:  # the epoch stays unknown: the next call finds the loss again and retries
            log.exception("rebuilding the feedback ledger after Redis lost it failed; the next call tries again")

    async def _settle(self) -> None:
        known = self._ledger.epoch
        if await self._adopted(known):
            return
        lock, owner = self._keys.rebuilding(), new_id()
        while not await self._redis.execute("SET", lock, owner, "NX", "PX", self._lock_ms):
            await self._wait_for(lock)
            if await self._adopted(known):
                return
        try:
            if await self._adopted(known):  # rebuilt by the instance whose lock this one just followed
                return
            rebuilt = await self._rebuild(lock, owner)
            epoch = f"{REBUILT_EPOCH}{new_id()}"
            await self._redis.execute("SET", self._ledger.epoch_key, epoch)
            self._ledger.epoch = epoch
        finally:
            await self._redis.script(self._release, [lock], [owner])
        self._say(known, rebuilt)

    async def _adopted(self, known: str) -> bool:
        """Whether another instance rebuilt the ledger since this one knew `known` (now this one knows it too)."""
        found = (await self._redis.execute("GET", self._ledger.epoch_key) or b"").decode()
        if found.startswith(REBUILT_EPOCH) and found != known:
            log.warning("the feedback ledger was rebuilt by another instance after Redis lost it; going on")
            self._ledger.epoch = found
            return True
        return False

    async def _rebuild(self, lock: str, owner: str) -> Rebuilt:
        log.error(
            "Redis lost the feedback ledger (its epoch %s is gone or replaced): waiting %.0f s for writes admitted"
            " before the loss, then rebuilding it from %s; submissions answer UNAVAILABLE until then",
            self._ledger.epoch or "(none)",
            self._feedback.lease_s,
            self._topic,
        )
        await asyncio.sleep(self._feedback.lease_s)
        await self._redis.script(self._renew, [lock], [owner, self._lock_ms])
        timeout_s = 10 * self._feedback.produce_timeout_s
        partitions = await asyncio.to_thread(partition_count, self._kafka, self._topic, timeout_s)
        totals = Rebuilt(0, 0, 0, 0)
        for partition in range(partitions):
            found = await asyncio.to_thread(events_on, self._kafka, self._topic, partition, 6 * timeout_s)
            totals += await self._restore(partition, found)
            await self._redis.script(self._renew, [lock], [owner, self._lock_ms])
        return totals

    async def _restore(self, partition: int, found: list[tuple[int, events_pb2.FeedbackEvent]]) -> Rebuilt:
        keys = self._keys.partition(self._topic, partition)
        floor = found[-1][0] + 1 if found else 0
        now, ttl_s = time.time(), self._feedback.idempotency_ttl_s
        found = [(offset, event) for offset, event in found if event.feedback_id]  # anything else was never accepted
        young = [(offset, event) for offset, event in found if now - event.accepted_at.seconds < ttl_s]
        restored = 0
        for start in range(0, len(young), _WAVE):
            wave = young[start : start + _WAVE]
            done = await asyncio.gather(
                *(
                    self._ledger.restore(
                        self._keys.submission(event.feedback_id),
                        keys,
                        self._entry(offset, event, partition),
                        int(ttl_s - (now - event.accepted_at.seconds)),
                        floor,
                    )
                    for offset, event in wave
                )
            )
            restored += sum(done)
        return Rebuilt(len(found), restored, len(young) - restored, len(found) - len(young))

    def _entry(self, offset: int, event: events_pb2.FeedbackEvent, partition: int) -> Entry:
        template = events_pb2.FeedbackEvent()
        template.CopyFrom(event)
        template.ClearField("supersedes")
        template.ClearField("abuse")
        over_cap = self._feedback.training_cap.max_events + 1 if event.abuse.over_training_cap else 0
        return Entry(
            state=ACCEPTED,
            feedback_id=event.feedback_id,
            fingerprint=REBUILT,
            event_id=event.event_id,
            template=template.SerializeToString(),
            partition=partition,
            floor=offset,
            lease_until_ms=0,
            owner="",
            supersedes=event.supersedes,
            counts=UserCounts(over_cap, 0, 0),
            offset=offset,
            now_ms=0,
        )

    async def _wait_for(self, lock: str) -> None:
        deadline = time.monotonic() + self._lock_ms / 1000
        while time.monotonic() < deadline and await self._redis.execute("EXISTS", lock):
            await asyncio.sleep(0.2)

    def _say(self, known: str, rebuilt: Rebuilt) -> None:
        self._metrics.redis_loss(rebuilt.restored, rebuilt.already_there, rebuilt.too_old)
        log.error(
            "Redis lost the feedback ledger (epoch %s): rebuilt from %s's %d events: %d entries restored, %d"
            " already there, %d older than feedback.idempotency_ttl_s; not rebuilt: response records (feedback"
            " on responses answered before the loss is NOT_FOUND), rate windows, training caps, vote links and"
            " agreement tallies",
            known or "(none)",
            self._topic,
            rebuilt.events,
            rebuilt.restored,
            rebuilt.already_there,
            rebuilt.too_old,
        )
