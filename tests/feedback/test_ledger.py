"""The exactly-once ledger's scripts on the real Redis: admission, leases, takeover, acceptance, floors."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from feedback.abuse import UserCounts
from feedback.keys import PartitionKeys
from feedback.ledger import ACCEPTED, PENDING, REBUILT, Admission, Entry, Existing, Ledger, Limited, Lost, Reserved
from feedback.roundtrips import RoundTrips
from trimtab.config import TrimtabConfig
from trimtab.config.feedback import RateLimit
from trimtab.records import redis_client

pytestmark = pytest.mark.integration


def admission(prefix: str, feedback_id: str, user_limit: int = 10) -> Admission:
    return Admission(
        feedback_id=feedback_id,
        fingerprint="digest",
        event_id=f"fbk_{feedback_id}",
        template=b"\x0a\x03abc",
        partition=1,
        floor_key=f"{prefix}floor",
        user_rate_key=f"{prefix}rate",
        user_rate=RateLimit(max_requests=user_limit, window_s=60),
        vote_key=f"{prefix}vote",
        training_key=f"{prefix}train",
        training_window_s=60,
        population_key=None,
        polarity=0,
        user_field="t\x00u",
        agreement_key=f"{prefix}agree",
        min_population_votes=3,
        agreement_ttl_s=60,
    )


def run(stack: TrimtabConfig, scenario: object) -> None:
    async def wrapped() -> None:
        client = redis_client(stack.redis)
        prefix = f"{stack.redis.key_prefix}ledger-{uuid.uuid4().hex[:6]}:"
        ledger = Ledger(RoundTrips(client), lease_s=0.3, ttl_s=60, epoch_key=f"{prefix}epoch")
        ledger.epoch = "new:test"
        await client.set(ledger.epoch_key, ledger.epoch)
        try:
            await scenario(ledger, prefix)  # type: ignore[operator]
        finally:
            await client.aclose()

    asyncio.run(wrapped())


def test_admission_is_once_per_feedback_id_and_links_votes(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        first = await ledger.reserve(f"{prefix}id:a", admission(prefix, "a"))
        again = await ledger.reserve(f"{prefix}id:a", admission(prefix, "a"))
        second_vote = await ledger.reserve(f"{prefix}id:b", admission(prefix, "b"))
        assert isinstance(first, Reserved) and isinstance(again, Existing) and isinstance(second_vote, Reserved)
        assert again.entry.event_id == first.entry.event_id and again.entry.state == PENDING
        assert (first.entry.supersedes, second_vote.entry.supersedes) == ("", "a")
        assert (first.entry.counts.trainable_in_window, second_vote.entry.counts.trainable_in_window) == (1, 2)
        assert first.entry.lease_left_s > 0

    run(stack, scenario)


def test_the_user_limit_refuses_without_side_effects(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        assert isinstance(await ledger.reserve(f"{prefix}id:a", admission(prefix, "a", user_limit=1)), Reserved)
        limited = await ledger.reserve(f"{prefix}id:b", admission(prefix, "b", user_limit=1))
        assert isinstance(limited, Limited) and 59 < limited.retry_after_s <= 60
        assert await ledger.get(f"{prefix}id:b") is None

    run(stack, scenario)


def test_one_taker_wins_an_expired_lease_and_none_a_live_one(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        key = f"{prefix}id:a"
        reserved = await ledger.reserve(key, admission(prefix, "a"))
        assert isinstance(reserved, Reserved)
        assert (await ledger.take_over(key))[0] is False  # the owner's lease is live
        await asyncio.sleep(0.35)
        wins = [won for won, _ in await asyncio.gather(*(ledger.take_over(key) for _ in range(5)))]
        assert wins.count(True) == 1
        await ledger.release(key, reserved.entry.owner)  # not the owner any more: no effect
        assert (await ledger.take_over(key))[0] is False
        _, entry = await ledger.take_over(key)
        assert entry is not None
        await ledger.release(key, entry.owner)  # the owner gives up: takeable at once
        assert (await ledger.take_over(key))[0] is True

    run(stack, scenario)


def test_acceptance_is_final_and_raises_the_floor_monotonically(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        key, partition = f"{prefix}id:a", PartitionKeys(f"{prefix}floor", f"{prefix}accepted")
        await ledger.reserve(key, admission(prefix, "a"))
        await ledger.accept(key, partition, offset=41)
        await ledger.accept(key, partition, offset=7)  # an older ack must not lower the floor
        entry = await ledger.get(key)
        assert entry is not None and (entry.state, entry.offset) == (ACCEPTED, 41)
        assert await ledger.accepted_on(partition) == [("a", 41)]  # the index holds the entry's offset
        later = await ledger.reserve(f"{prefix}id:b", admission(prefix, "b"))
        assert isinstance(later, Reserved) and later.entry.floor == 42
        await asyncio.sleep(0.35)
        assert (await ledger.take_over(key))[0] is False  # accepted entries are never taken over

    run(stack, scenario)


def test_an_event_written_again_after_a_broker_loss_moves_in_the_index(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        partition = PartitionKeys(f"{prefix}floor", f"{prefix}accepted")
        for name, offset in (("a", 5), ("b", 6)):
            await ledger.reserve(f"{prefix}id:{name}", admission(prefix, name))
            await ledger.accept(f"{prefix}id:{name}", partition, offset=offset)
        assert await ledger.accepted_on(partition) == [("a", 5), ("b", 6)]
        await ledger.reset_floor(partition, 0)  # the broker's log now ends at 0
        await ledger.accept(f"{prefix}id:b", partition, offset=0, moved=True)
        await ledger.accept(f"{prefix}id:a", partition, offset=1, moved=True)
        entries = await ledger.entries([f"{prefix}id:a", f"{prefix}id:b", f"{prefix}id:gone"])
        assert [e.offset if e else None for e in entries] == [1, 0, None]
        assert await ledger.accepted_on(partition) == [("b", 0), ("a", 1)]
        later = await ledger.reserve(f"{prefix}id:c", admission(prefix, "c"))
        assert isinstance(later, Reserved) and later.entry.floor == 2
        await ledger.forget(partition, ["a"])
        assert await ledger.accepted_on(partition) == [("b", 0)]

    run(stack, scenario)


def test_a_ledger_whose_epoch_is_gone_or_another_decides_nothing(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        rate = RateLimit(max_requests=10, window_s=60)
        redis = redis_client(stack.redis)
        for epoch in (None, "rebuilt:other"):  # Redis came back empty; another instance rebuilt it
            await (redis.delete(ledger.epoch_key) if epoch is None else redis.set(ledger.epoch_key, epoch))
            assert isinstance(await ledger.reserve(f"{prefix}id:a", admission(prefix, "a")), Lost)
            assert isinstance(await ledger.look(f"{prefix}id:a", f"{prefix}keyrate", rate, [f"{prefix}r"]), Lost)
            assert await ledger.get(f"{prefix}id:a") is None  # nothing admitted, no limit counted
        ledger.epoch = "rebuilt:other"  # once the instance knows the ledger again, calls go on
        assert isinstance(await ledger.reserve(f"{prefix}id:a", admission(prefix, "a")), Reserved)
        await redis.aclose()

    run(stack, scenario)


def test_a_restored_entry_is_accepted_indexed_and_raises_the_floor_once(stack: TrimtabConfig) -> None:
    async def scenario(ledger: Ledger, prefix: str) -> None:
        partition = PartitionKeys(f"{prefix}floor", f"{prefix}accepted")
        rebuilt = Entry(state=ACCEPTED, feedback_id="a", fingerprint=REBUILT, event_id="fbk_a", template=b"\x0a\x01x",
                        partition=1, floor=3, lease_until_ms=0, owner="", supersedes="z",
                        counts=UserCounts(0, 0, 0), offset=3, now_ms=0)  # fmt: skip
        assert await ledger.restore(f"{prefix}id:a", partition, rebuilt, ttl_s=60, floor=9) is True
        assert await ledger.restore(f"{prefix}id:a", partition, rebuilt, ttl_s=60, floor=9) is False  # once
        entry = await ledger.get(f"{prefix}id:a")
        assert entry is not None
        assert (entry.state, entry.offset, entry.event_id, entry.supersedes, entry.fingerprint, entry.template) == (
            ACCEPTED, 3, "fbk_a", "z", REBUILT, b"\x0a\x01x"
        )  # fmt: skip
        assert await ledger.accepted_on(partition) == [("a", 3)]
        later = await ledger.reserve(f"{prefix}id:b", admission(prefix, "b"))
        assert isinstance(later, Reserved) and later.entry.floor == 9  # the partition's end, not the entry's

    run(stack, scenario)
