"""The `current` and `canary` pointers in Redis, changed atomically and announced on pub/sub.

    <prefix>registry:pointers   hash: current, canary, canary_share
    <prefix>registry:history    list: earlier currents, newest first (what Rollback returns to)

Each change is one Lua script (atomic against concurrent admins) that also PUBLISHes on the
channel; followers re-read the hash on a message and on a timer, so a missed message is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trimtab.errors import TrimtabError

log = logging.getLogger(__name__)

PROMOTE = """
local current = redis.call('HGET', KEYS[1], 'current')
if current == ARGV[1] then return 0 end
if current then redis.call('LPUSH', KEYS[2], current) end
redis.call('HSET', KEYS[1], 'current', ARGV[1])
if redis.call('HGET', KEYS[1], 'canary') == ARGV[1] then redis.call('HDEL', KEYS[1], 'canary', 'canary_share') end
redis.call('PUBLISH', ARGV[2], 'current')
return 1
"""
ROLLBACK_CURRENT = """
local previous = redis.call('LPOP', KEYS[2])
if not previous then return redis.error_reply('no earlier current version to roll back to') end
redis.call('HSET', KEYS[1], 'current', previous)
redis.call('PUBLISH', ARGV[1], 'current')
return previous
"""
SET_CANARY = """
redis.call('HSET', KEYS[1], 'canary', ARGV[1], 'canary_share', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'canary')
return 1
"""
CLEAR_CANARY = """
local canary = redis.call('HGET', KEYS[1], 'canary')
if ARGV[2] ~= '' and canary ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], 'canary', 'canary_share')
redis.call('PUBLISH', ARGV[1], 'canary')
return canary
"""


class PointerError(TrimtabError):
    """A pointer change that cannot be made (e.g. nothing to roll back to)."""


@dataclass(frozen=True)
class Pointers:
    current: str | None
    canary: str | None = None
    canary_share: float = 0.0


@dataclass(frozen=True)
class RolledBack:
    version: str
    role: str  # "canary" or "current"
    after: Pointers


class PointerStore:
    def __init__(self, client: aioredis.Redis, key_prefix: str, channel: str) -> None:
        self._client = client
        self._hash = f"{key_prefix}registry:pointers"
        self._history = f"{key_prefix}registry:history"
        self.channel = f"{key_prefix}{channel}"

    async def read(self) -> Pointers:
        raw = await self._client.hgetall(self._hash)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        canary = fields.get("canary")
        return Pointers(fields.get("current"), canary, float(fields.get("canary_share", 0.0)) if canary else 0.0)

    async def promote(self, version_id: str) -> Pointers:
        """Make `version_id` current (the old current goes on the rollback history)."""
        await self._client.eval(PROMOTE, 2, self._hash, self._history, version_id, self.channel)
        return await self.read()

    async def set_canary(self, version_id: str, share: float) -> Pointers:
        if not 0.0 < share <= 1.0:
            raise PointerError(f"canary share must be in (0, 1], got {share:g}")
        await self._client.eval(SET_CANARY, 1, self._hash, version_id, repr(share), self.channel)
        return await self.read()

    async def clear_canary(self, only: str | None = None) -> str | None:
        """Remove the canary; returns the version that was canary, if any. With `only`, the canary is removed
        only while it is that version (checked in the same script: another admin's newer canary stays)."""
        canary = await self._client.eval(CLEAR_CANARY, 1, self._hash, self.channel, only or "")
        return _text(canary) if canary else None

    async def rollback_current(self) -> Pointers:
        """Point current back at the version it replaced."""
        try:
            await self._client.eval(ROLLBACK_CURRENT, 2, self._hash, self._history, self.channel)
        except ResponseError as exc:
            raise PointerError(str(exc)) from None
        return await self.read()

    async def rollback(self, version_id: str | None) -> RolledBack:
        """Take `version_id` out of service: remove it as canary, or point current back at the version it
        replaced. No id means the canary if there is one, else current."""
        pointers = await self.read()
        target = version_id or pointers.canary or pointers.current
        if target is not None and target == pointers.canary and await self.clear_canary(only=target):
            return RolledBack(target, "canary", await self.read())
        if target is not None and target == pointers.current:
            return RolledBack(target, "current", await self.rollback_current())
        raise PointerError(f"version_id: {target!r} is neither current nor canary")

    async def changes(self) -> AsyncIterator[str]:
        """Yields 'current' or 'canary' for every announced change (until the caller stops iterating)."""
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self.channel)
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield _text(message["data"])
        finally:
            await pubsub.aclose()


async def follow(store: PointerStore, on_change: Callable[[], Awaitable[None]], poll_s: float) -> None:
    """Call `on_change` now, on every announced change, and every `poll_s` in case a message was missed
    (until cancelled). Neither a lost subscription nor a failing `on_change` stops it: the timer goes on."""
    changed = asyncio.Event()

    async def listen() -> None:
        while True:
            try:
                async for _ in store.changes():
                    changed.set()
            except Exception as exc:  # Redis went away: the timer keeps the follower in step meanwhile
                log.warning("pointer subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(poll_s)

    listener = asyncio.create_task(listen())
    try:
        while True:
            changed.clear()
            try:
                await on_change()
            except Exception:  # a Redis hiccup must not stop following; the next round retries
                log.exception("following the registry pointers failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), poll_s)
    finally:
        listener.cancel()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
